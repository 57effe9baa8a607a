package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// guestModules are the modules the tiny guest loads, in this order, to
// see its virtio-blk disk.
var guestModules = []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk"}

const guestInit = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in %s; do /bin/busybox insmod /lib/$m.ko || echo "FAIL insmod $m"; done
n=0
while [ ! -b /dev/vda ]; do
  n=$((n+1)); if [ $n -gt 200 ]; then echo "FAIL no /dev/vda"; /bin/busybox poweroff -f; fi
  /bin/busybox sleep 0.1
done
exec /recwriter /dev/vda
`

// buildGuest makes the tiny guest: a Debian cloud kernel and an initramfs
// with busybox, the virtio modules and recwriter (testdata/recwriter) as
// its workload. The .debs come from apt-get download and are kept in the
// user's cache directory between runs. It returns the kernel and the
// initramfs.
func buildGuest(t *testing.T) (kernel, initrd string) {
	t.Helper()
	need(t, "apt-get", "apt-cache", "dpkg-deb")
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	cache = filepath.Join(cache, "archip-test-guest")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	deps := run(t, "apt-cache", "depends", "linux-image-cloud-amd64")
	m := regexp.MustCompile(`Depends: (linux-image-\S+-cloud-amd64)`).FindStringSubmatch(deps)
	if m == nil {
		t.Fatalf("no cloud kernel package in apt-cache depends linux-image-cloud-amd64:\n%s", deps)
	}
	dir := t.TempDir()
	for _, pkg := range []string{m[1], "busybox-static"} {
		debs, _ := filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
		if len(debs) == 0 {
			cmd := exec.Command("apt-get", "download", "-q", pkg)
			cmd.Dir = cache
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("apt-get download %s: %v\n%s", pkg, err, out)
			}
			debs, _ = filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
		}
		if len(debs) == 0 {
			t.Fatalf("apt-get download %s left no .deb in %s", pkg, cache)
		}
		run(t, "dpkg-deb", "-x", debs[len(debs)-1], dir)
	}
	kernels, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("kernels in the package: %v", kernels)
	}
	recwriter := filepath.Join(dir, "recwriter")
	cmd := exec.Command("go", "build", "-o", recwriter, "./testdata/recwriter")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build recwriter: %v\n%s", err, out)
	}

	var cpio newc
	for _, d := range []string{"bin", "lib", "dev", "proc", "sys"} {
		cpio.dir(d)
	}
	cpio.node("dev/console", 0o020600, 5, 1)
	cpio.file(t, "bin/busybox", filepath.Join(dir, "bin", "busybox"), 0o755)
	cpio.file(t, "recwriter", recwriter, 0o755)
	for _, mod := range guestModules {
		found, _ := filepath.Glob(filepath.Join(dir, "lib", "modules", "*", "kernel", "drivers", "*", mod+".ko"))
		if len(found) != 1 {
			t.Fatalf("module %s: found %v", mod, found)
		}
		cpio.file(t, "lib/"+mod+".ko", found[0], 0o644)
	}
	cpio.data("init", []byte(fmt.Sprintf(guestInit, strings.Join(guestModules, " "))), 0o100755)
	initrd = filepath.Join(dir, "initrd.cpio")
	if err := os.WriteFile(initrd, cpio.close(), 0o644); err != nil {
		t.Fatal(err)
	}
	return kernels[0], initrd
}

// newc writes a cpio archive in the "new ASCII" format the kernel
// unpacks as an initramfs.
type newc struct {
	buf bytes.Buffer
	ino int
}

func (c *newc) entry(name string, mode uint32, rdevMajor, rdevMinor int, data []byte) {
	c.ino++
	fmt.Fprintf(&c.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.buf.WriteString(name)
	c.buf.WriteByte(0)
	c.pad()
	c.buf.Write(data)
	c.pad()
}

func (c *newc) pad() {
	for c.buf.Len()%4 != 0 {
		c.buf.WriteByte(0)
	}
}

func (c *newc) dir(name string)                             { c.entry(name, 0o040755, 0, 0, nil) }
func (c *newc) node(name string, mode uint32, maj, min int) { c.entry(name, mode, maj, min, nil) }
func (c *newc) data(name string, b []byte, mode uint32)     { c.entry(name, mode, 0, 0, b) }

func (c *newc) file(t *testing.T, name, src string, perm uint32) {
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	c.data(name, b, 0o100000|perm)
}

func (c *newc) close() []byte {
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	return c.buf.Bytes()
}
