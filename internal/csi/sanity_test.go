package csi

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	"google.golang.org/grpc"

	"github.com/archipelago-go/archip/internal/daemon"
	"github.com/archipelago-go/archip/internal/frontend/nbdfe"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/nbdattach"
	"github.com/archipelago-go/archip/internal/objstore"
)

// needTools skips the test without the tools the node service runs (or
// fails it under CI=true).
func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"nbdfuse", "losetup", "fusermount3", "mount", "umount", "mkfs.ext4", "blkid"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (scripts/install-test-deps.sh installs it)", tool)
			}
			t.Skipf("%s is missing (scripts/install-test-deps.sh installs it)", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("the node service mounts and sets up loop devices: run as root")
	}
}

// serveNBD runs an NBD daemon (what 'archip serve' runs) on store with
// a unix socket in dir, until the test ends, and returns the socket.
func serveNBD(t *testing.T, store objstore.Store, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "nbd.sock")
	fe, err := nbdfe.Config{Listen: []string{"unix:" + sock}, MaxConns: 64}.Frontend()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Config{Manager: manage.New(store), Store: "mem", Node: "node-1",
			AdminListen: "127.0.0.1:0", LeaseTTL: 5 * time.Second, MaxClockDrift: 500 * time.Millisecond,
			Frontends: []daemon.FrontendConfig{fe}})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	for {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		select {
		case err := <-done:
			t.Fatalf("daemon exited: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// startDriver serves a driver on a unix socket in dir until the test
// ends, and returns the socket's address.
func startDriver(t *testing.T, d *Driver, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "csi.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	d.Register(srv)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return "unix:" + sock
}

// TestSanity runs csi-sanity (csi-test's pkg/sanity, in process) against
// the driver for a raw block volume and for a filesystem volume, with a
// real NBD daemon on the same store and the node service attaching
// through nbdfuse and a loop device (this kernel has no NBD client).
func TestSanity(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	store := objstore.NewMem()
	sock := serveNBD(t, store, dir)
	d := New(Config{Manager: manage.New(store), Controller: true, NodeID: "node-1", NBD: "unix:" + sock,
		Attacher: &nbdattach.FuseLoop{RunDir: filepath.Join(dir, "run")}})
	addr := startDriver(t, d, dir)

	var contexts []*sanity.TestContext
	for _, access := range []string{"block", "mount"} {
		cfg := sanity.NewTestConfig()
		cfg.Address = addr
		cfg.TargetPath = filepath.Join(dir, access+"-target")
		cfg.StagingPath = filepath.Join(dir, access+"-staging")
		cfg.TestVolumeSize = 64 << 20
		cfg.TestVolumeExpandSize = 96 << 20
		cfg.TestVolumeAccessType = access
		cfg.IdempotentCount = 2
		contexts = append(contexts, sanity.GinkgoTest(&cfg))
	}
	gomega.RegisterFailHandler(ginkgo.Fail)
	ginkgo.RunSpecs(t, "archip CSI driver")
	for _, sc := range contexts {
		sc.Finalize()
	}
}
