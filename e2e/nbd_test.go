package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// qemuIO runs qemu-io commands on an NBD URI and fails on any pattern
// mismatch.
func qemuIO(t *testing.T, uri string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "raw"}
	if strings.Contains(uri, "@") { // snapshots are read-only exports
		args = append(args, "-r")
	}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, "qemu-io", append(args, uri)...)
	if strings.Contains(out, "fail") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io %v: %s", cmds, out)
	}
}

// TestQemuIOThroughClone writes patterns at many offsets through a clone
// with qemu-io, snapshots, writes again: the snapshot and the image keep
// their data.
func TestQemuIOThroughClone(t *testing.T) {
	need(t, "qemu-io", "qemu-img")
	e := newEnv(t)
	img := e.randomFile("base.raw", 6<<20, 16<<20, 1)
	e.archip("image", "import", img, "base")
	e.archip("volume", "clone", "base", "vm", "--size", "32M")
	d := e.serve()

	offsets := []string{"0", "12287", "1M", "4194300", "8M", "31M"} // crossing blocks, unaligned
	var writes, reads []string
	for i, off := range offsets {
		writes = append(writes, fmt.Sprintf("write -P 0x%02x %s 8192", 0x11*(i+1)&0xff, off))
		reads = append(reads, fmt.Sprintf("read -P 0x%02x %s 8192", 0x11*(i+1)&0xff, off))
	}
	qemuIO(t, d.uri("vm"), writes...)
	qemuIO(t, d.uri("vm"), reads...) // a new connection reads them back

	e.archip("volume", "snapshot", "vm", "vm@1")
	var overwrite []string
	for _, off := range offsets {
		overwrite = append(overwrite, "write -P 0xee "+off+" 8192")
	}
	qemuIO(t, d.uri("vm"), overwrite...)
	qemuIO(t, d.uri("vm@1"), reads...)                                          // the snapshot still has the old data
	qemuIO(t, d.uri("vm"), "read -P 0xee 8M 8192")                              // the volume the new
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, d.uri("base")) // the image is intact
	// The read-only exports refuse writes.
	cmd := exec.Command("qemu-io", "-f", "raw", "-c", "write 0 512", d.uri("vm@1"))
	if out, _ := cmd.CombinedOutput(); !bytes.Contains(out, []byte("ermission")) && !bytes.Contains(out, []byte("read-only")) && !bytes.Contains(out, []byte("read only")) {
		t.Fatalf("write to a snapshot export: %s", out)
	}
}

// TestQemuImgConvert converts a raw and a qcow2 image into volumes over
// NBD and out again; holes stay holes.
func TestQemuImgConvert(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "nbdinfo")
	e := newEnv(t)
	raw := e.randomFile("src.raw", 5<<20, 64<<20, 2)
	qcow := e.path("src.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow, "64M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 3M", "-c", "write -P 0x33 40M 64k", qcow)
	d := e.serve()
	for _, src := range []struct{ name, file, format string }{{"fromraw", raw, "raw"}, {"fromqcow2", qcow, "qcow2"}} {
		e.archip("volume", "create", src.name, "--size", "64M")
		run(t, "qemu-img", "convert", "-n", "-f", src.format, "-O", "raw", src.file, d.uri(src.name))
		run(t, "qemu-img", "compare", "-f", src.format, "-F", "raw", src.file, d.uri(src.name))
		out := e.path(src.name + ".out")
		run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", d.uri(src.name), out)
		run(t, "qemu-img", "compare", "-f", src.format, "-F", "raw", src.file, out)

		var extents []struct {
			Start, Length int64
			Data          bool
		}
		json.Unmarshal([]byte(run(t, "qemu-img", "map", "--output=json", "-f", "raw", d.uri(src.name))), &extents)
		holes := int64(0)
		for _, x := range extents {
			if !x.Data {
				holes += x.Length
			}
		}
		if holes < 48<<20 {
			t.Errorf("%s: qemu-img map shows %d bytes of holes, want most of the 64 MiB: %+v", src.name, holes, extents)
		}
		if m := run(t, "nbdinfo", "--map", d.uri(src.name)); !strings.Contains(m, "hole,zero") {
			t.Errorf("%s: nbdinfo --map shows no hole:\n%s", src.name, m)
		}
	}
}

// TestNbdcopyAndList copies both ways with nbdcopy and lists exports.
func TestNbdcopyAndList(t *testing.T) {
	need(t, "nbdcopy", "nbdinfo")
	e := newEnv(t)
	src := e.randomFile("src.raw", 20<<20, 48<<20, 3)
	e.archip("volume", "create", "v", "--size", "48M")
	e.archip("volume", "snapshot", "v", "v@empty")
	d := e.serve()
	run(t, "nbdcopy", "--flush", src, d.uri("v"))
	out := e.path("out.raw")
	run(t, "nbdcopy", "--flush", d.tcpURI("v"), out)
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(out)
	if !bytes.Equal(a, b) {
		t.Fatal("nbdcopy round trip differs")
	}
	var list struct {
		Exports []struct {
			Name     string `json:"export-name"`
			ReadOnly bool   `json:"is_read_only"`
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(run(t, "nbdinfo", "--list", "--json", d.uri(""))), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Exports) != 2 || list.Exports[0].Name != "v" || list.Exports[1].Name != "v@empty" || !list.Exports[1].ReadOnly {
		t.Fatalf("nbdinfo --list: %+v", list.Exports)
	}
}

// TestFioVerify writes with fio's NBD engine, sequentially and at random
// on several connections, and verifies every block with crc32c.
func TestFioVerify(t *testing.T) {
	need(t, "fio")
	e := newEnv(t)
	e.archip("volume", "create", "f", "--size", "128M")
	d := e.serve()
	for _, args := range [][]string{
		{"--rw=write", "--bs=1M", "--size=64M", "--iodepth=8"},
		{"--rw=randwrite", "--bs=4k", "--size=16M", "--iodepth=16", "--numjobs=3", "--offset_increment=32M"},
		{"--rw=randrw", "--bs=64k", "--size=32M", "--iodepth=8", "--numjobs=2", "--offset_increment=64M"},
	} {
		all := append([]string{"--name=verify", "--ioengine=nbd", "--uri=" + d.uri("f"), "--verify=crc32c",
			"--do_verify=1", "--verify_state_save=0", "--group_reporting"}, args...)
		out := run(t, "fio", all...)
		if !strings.Contains(out, "err= 0") {
			t.Fatalf("fio %v:\n%s", args, out)
		}
	}
}

// TestExt4OnVolume makes a real file system on a volume through nbdfuse
// and a loop device, snapshots it, clones the snapshot and mounts the
// clone: the files are there, and writes to the clone leave the
// snapshot alone.
func TestExt4OnVolume(t *testing.T) {
	need(t, "nbdfuse", "losetup", "mkfs.ext4", "mount", "umount", "fusermount3")
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs root and /dev/fuse: %v", err)
		}
		t.Skip("needs root and /dev/fuse")
	}
	e := newEnv(t)
	e.archip("volume", "create", "fs", "--size", "256M")
	d := e.serve()

	mountVol := func(name string, readOnly bool) (string, func()) {
		t.Helper()
		fuseDir, mnt := e.path("fuse-"+name), e.path("mnt-"+name)
		os.Mkdir(fuseDir, 0o755)
		os.Mkdir(mnt, 0o755)
		args := []string{fuseDir, d.uri(name)}
		if readOnly {
			args = append([]string{"-r"}, args...)
		}
		fuse := exec.Command("nbdfuse", args...)
		if err := fuse.Start(); err != nil {
			t.Fatal(err)
		}
		dev := filepath.Join(fuseDir, "nbd")
		for i := 0; ; i++ {
			if st, err := os.Stat(dev); err == nil && st.Size() > 0 {
				break
			}
			if i > 100 {
				t.Fatal("nbdfuse did not expose the export")
			}
			time.Sleep(50 * time.Millisecond)
		}
		loArgs := []string{"-f", "--show", dev}
		if readOnly {
			loArgs = append([]string{"-r"}, loArgs...)
		}
		loop := strings.TrimSpace(run(t, "losetup", loArgs...))
		return loop, func() {
			run(t, "losetup", "-d", loop)
			run(t, "fusermount3", "-u", fuseDir)
			fuse.Wait()
		}
	}
	files := map[string][]byte{"a.txt": []byte("archipelago\n"), "dir/b.bin": bytes.Repeat([]byte{0xab}, 3<<20)}
	writeFiles := func(mnt string, fs map[string][]byte) {
		for name, data := range fs {
			p := filepath.Join(mnt, name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkFiles := func(mnt string, fs map[string][]byte) {
		for name, data := range fs {
			got, err := os.ReadFile(filepath.Join(mnt, name))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s in %s: %v (%d bytes, want %d)", name, mnt, err, len(got), len(data))
			}
		}
	}

	loop, detach := mountVol("fs", false)
	run(t, "mkfs.ext4", "-q", loop)
	mnt := e.path("mnt-fs")
	run(t, "mount", loop, mnt)
	writeFiles(mnt, files)
	run(t, "umount", mnt)
	detach()

	e.archip("volume", "snapshot", "fs", "fs@1")
	e.archip("volume", "clone", "fs@1", "fsclone")
	loop, detach = mountVol("fsclone", false)
	mnt = e.path("mnt-fsclone")
	run(t, "mount", loop, mnt)
	checkFiles(mnt, files)
	writeFiles(mnt, map[string][]byte{"new.txt": []byte("only in the clone")})
	run(t, "umount", mnt)
	detach()

	loop, detach = mountVol("fs@1", true)
	mnt = e.path("mnt-fs@1")
	run(t, "mount", "-o", "ro,noload", loop, mnt)
	checkFiles(mnt, files)
	if _, err := os.Stat(filepath.Join(mnt, "new.txt")); err == nil {
		t.Fatal("the clone's new file shows in the snapshot")
	}
	run(t, "umount", mnt)
	detach()
}
