package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestCSICommand: 'archip csi --controller' serves on its unix socket
// until its context ends; without a service to serve it is a usage error.
func TestCSICommand(t *testing.T) {
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	mustCLI(t, store, nil, "store", "init")
	if _, errs, code := cli(t, store, nil, "csi"); code != 2 || !strings.Contains(errs, "--controller") {
		t.Fatalf("csi with no service: exit %d, %s", code, errs)
	}
	sock := filepath.Join(dir, "csi.sock")
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--store", store, "csi", "--controller", "--endpoint", "unix://" + sock},
			&globals{stdout: &out, stderr: &errb})
	}()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	info, err := csipb.NewIdentityClient(conn).GetPluginInfo(cctx, &csipb.GetPluginInfoRequest{}, grpc.WaitForReady(true))
	if err != nil || info.Name != "archip.csi.archipelago" {
		t.Fatalf("GetPluginInfo: %v, %v", info, err)
	}
	if _, err := csipb.NewControllerClient(conn).CreateVolume(cctx, &csipb.CreateVolumeRequest{Name: "pvc-1",
		VolumeCapabilities: []*csipb.VolumeCapability{{AccessType: &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}},
			AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}}}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if got := mustCLI(t, store, nil, "volume", "list"); !strings.Contains(got, "pvc-1") {
		t.Fatalf("volume list: %s", got)
	}
}
