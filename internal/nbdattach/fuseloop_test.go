package nbdattach

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// needTools skips without the tools (or fails under CI=true) and
// without root.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (scripts/install-test-deps.sh installs it)", tool)
			}
			t.Skipf("%s is missing (scripts/install-test-deps.sh installs it)", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("loop devices and FUSE mounts need root")
	}
}

// readDirect reads 4 KiB at off of dev, bypassing dev's own cache.
func readDirect(t *testing.T, dev string, off int64) []byte {
	t.Helper()
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // aligned
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	if _, err := unix.Pread(fd, buf, off); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf)
}

// TestFuseLoopSeesOtherWriters: what another client of the export writes
// (QEMU on the kvm: URI, the daemon of another node) is what the loop
// device reads next, not a copy cached on the way; and attach is
// idempotent, detach undoes it.
func TestFuseLoopSeesOtherWriters(t *testing.T) {
	needTools(t, "nbdkit", "nbdfuse", "losetup", "fusermount3", "qemu-io")
	dir := t.TempDir()
	sock := filepath.Join(dir, "nbd.sock")
	startNBDKit(t, sock, "memory", "16M")
	uri := "nbd+unix:///?socket=" + sock
	ctx := context.Background()
	f := &FuseLoop{RunDir: filepath.Join(dir, "run")}
	dev, err := f.Attach(ctx, "vol", uri, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Detach(ctx, "vol") })
	if again, err := f.Attach(ctx, "vol", uri, false); err != nil || again != dev {
		t.Fatalf("attach again: %s, %v; first %s", again, err, dev)
	}

	write := func(b byte) {
		t.Helper()
		if out, err := exec.Command("qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -P 0x%02x 0 4096", b), uri).CombinedOutput(); err != nil {
			t.Fatalf("qemu-io: %v: %s", err, out)
		}
	}
	for _, b := range []byte{0x11, 0x22, 0x33} {
		write(b)
		if got := readDirect(t, dev, 0); !bytes.Equal(got, bytes.Repeat([]byte{b}, 4096)) {
			t.Fatalf("after another client wrote %#x, the loop device reads %#x", b, got[0])
		}
	}

	if err := f.Detach(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	noLeftovers(t, filepath.Join(dir, "run"), "after detach")
	if err := f.Detach(ctx, "vol"); err != nil {
		t.Fatalf("detach twice: %v", err)
	}
}
