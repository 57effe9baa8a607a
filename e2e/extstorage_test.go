package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ganeti runs the provider's script action in dir the way Ganeti's node
// daemon does: a clean environment holding only PATH, VOL_* and EXTP_*,
// the provider's directory as working directory, no arguments. It returns
// stdout, stderr and the exit code.
func ganeti(t *testing.T, dir, action string, vars ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(dir, action))
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, vars...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", action, err)
	}
	return out.String(), errb.String(), code
}

// ganetiOK is ganeti for an action that must succeed.
func ganetiOK(t *testing.T, dir, action string, vars ...string) string {
	t.Helper()
	out, errs, code := ganeti(t, dir, action, vars...)
	if code != 0 {
		t.Fatalf("%s %v: exit %d\nstdout: %s\nstderr: %s", action, vars, code, out, errs)
	}
	return out
}

// TestGanetiExtStorage drives the provider as Ganeti does: create a disk
// from an image, attach it (a block device and a kvm: URI that qemu-io
// reads against a running 'archip serve'), grow, snapshot, setinfo,
// verify with bad parameters, open/close, detach, remove. Without a kernel
// NBD client the block device is a loop device over nbdfuse.
func TestGanetiExtStorage(t *testing.T) {
	need(t, "qemu-io", "nbdfuse", "losetup", "fusermount3")
	e := newEnv(t)
	img := e.randomFile("base.raw", 3<<20, 8<<20, 7)
	e.archip("image", "import", img, "debian")
	d := e.serve()

	prov := e.path("es/archip")
	run(t, archipBin, "--store", e.store, "extstorage", "install", prov,
		"--nbd", "unix:"+d.sock, "--admin", d.admin, "--run-dir", e.path("run"))
	params, err := os.ReadFile(filepath.Join(prov, "parameters.list"))
	if err != nil || !bytes.Contains(params, []byte("origin")) || !bytes.Contains(params, []byte("store")) {
		t.Fatalf("parameters.list: %q, %v", params, err)
	}
	for _, a := range []string{"create", "attach", "detach", "remove", "grow", "setinfo", "verify", "snapshot", "open", "close"} {
		if st, err := os.Stat(filepath.Join(prov, a)); err != nil || !st.Mode().IsRegular() || st.Mode()&0o100 == 0 {
			t.Fatalf("%s: not an executable regular file (%v)", a, err)
		}
	}

	vol := "3f1c2a9e-7b1d-4c55-9a0e-5d2f8e6b1a22.ext.disk0"
	common := []string{"VOL_NAME=" + vol, "VOL_CNAME=disk0", "VOL_UUID=3f1c2a9e-7b1d-4c55-9a0e-5d2f8e6b1a22", "EXTP_ORIGIN=debian"}

	// create: a clone of the image, at VOL_SIZE MiB.
	ganetiOK(t, prov, "create", append(common, "VOL_SIZE=16")...)
	if out := e.archip("volume", "info", vol); !strings.Contains(out, "16 MiB") {
		t.Fatalf("after create: %s", out)
	}
	// A second create of the same name fails.
	if _, errs, code := ganeti(t, prov, "create", append(common, "VOL_SIZE=16")...); code == 0 || !strings.Contains(errs, "already in use") {
		t.Fatalf("create twice: exit %d, %s", code, errs)
	}

	// attach: line 1 a block device, line 2 the kvm: URI; idempotent.
	out := ganetiOK(t, prov, "attach", common...)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "kvm:") {
		t.Fatalf("attach printed %q", out)
	}
	dev, uri := lines[0], strings.TrimPrefix(lines[1], "kvm:")
	t.Cleanup(func() { ganeti(t, prov, "detach", common...) })
	var st syscall.Stat_t
	if err := syscall.Stat(dev, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		t.Fatalf("attach printed %s, not a block device (%v)", dev, err)
	}
	if again := ganetiOK(t, prov, "attach", common...); again != out {
		t.Fatalf("attach again printed %q, first %q", again, out)
	}
	// The guest sees the image through the URI and through the device.
	want, _ := os.ReadFile(img)
	qemuIO(t, uri, "read -P 0 8M 8M")
	compareFile(t, dev, want[:1<<20])
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, uri)
	qemuIO(t, uri, "write -P 0x5c 1M 64k")

	// open (exclusive, then shared as during a migration) and close.
	ganetiOK(t, prov, "open", append(common, "VOL_OPEN_EXCLUSIVE=True")...)
	ganetiOK(t, prov, "open", append(common, "VOL_OPEN_EXCLUSIVE=False")...)
	ganetiOK(t, prov, "close", common...)
	qemuIO(t, uri, "read -P 0x5c 1M 64k")

	// grow reads VOL_NEW_SIZE (VOL_SIZE is the current size).
	ganetiOK(t, prov, "grow", append(common, "VOL_SIZE=16", "VOL_NEW_SIZE=24")...)
	if out := e.archip("volume", "info", vol); !strings.Contains(out, "24 MiB") {
		t.Fatalf("after grow: %s", out)
	}

	// snapshot as gnt-backup export asks for it.
	ganetiOK(t, prov, "snapshot", append(common, "VOL_SNAPSHOT_NAME="+vol+".snap", "VOL_SNAPSHOT_SIZE=24")...)
	if out := run(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x5c 1M 64k", d.uri(vol+".snap")); strings.Contains(out, "fail") {
		t.Fatalf("the snapshot: %s", out)
	}

	// setinfo keeps the metadata; remove drops it with the volume.
	ganetiOK(t, prov, "setinfo", append(common, "VOL_METADATA=originstname+web1")...)
	if out := run(t, archipBin, "--store", e.store, "extstorage", "info", vol); !strings.Contains(out, "originstname+web1") {
		t.Fatalf("extstorage info: %s", out)
	}

	// verify: good parameters pass, bad ones fail with a clear message.
	ganetiOK(t, prov, "verify", "EXTP_ORIGIN=debian")
	for _, bad := range []struct{ env, says string }{
		{"EXTP_ORIGIN=nosuchimage", "nosuchimage"},
		{"EXTP_COLOUR=blue", "colour"},
		{"EXTP_ORIGIN=" + vol, "writable volume"},
		{"EXTP_STORE=nosuch://x", "nosuch"},
	} {
		out, errs, code := ganeti(t, prov, "verify", bad.env)
		if code == 0 || !strings.Contains(strings.ToLower(errs), bad.says) {
			t.Errorf("verify %s: exit %d, stdout %q, stderr %q", bad.env, code, out, errs)
		}
	}
	// A size Ganeti would never send is refused before anything is done.
	if _, errs, code := ganeti(t, prov, "grow", append(common, "VOL_SIZE=24")...); code == 0 || !strings.Contains(errs, "VOL_NEW_SIZE") {
		t.Errorf("grow without VOL_NEW_SIZE: exit %d, %s", code, errs)
	}

	// detach undoes attach (twice is fine); remove deletes the volume.
	ganetiOK(t, prov, "detach", common...)
	ganetiOK(t, prov, "detach", common...)
	if _, err := os.Stat(dev); err == nil {
		if b, _ := os.ReadFile("/sys/block/" + filepath.Base(dev) + "/loop/backing_file"); len(b) > 0 {
			t.Fatalf("%s still backed by %s after detach", dev, b)
		}
	}
	ganetiOK(t, prov, "remove", common...)
	if out := e.archip("volume", "list"); strings.Contains(out, vol+" ") || strings.Contains(out, vol+"\n") {
		t.Fatalf("after remove: %s", out)
	}
	if out := e.archip("volume", "list"); !strings.Contains(out, vol+".snap") {
		t.Fatalf("the snapshot went with the volume: %s", out)
	}
}

// compareFile checks that the file (a block device) starts with want.
func compareFile(t *testing.T, path string, want []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s does not hold the image's data", path)
	}
}

// TestGanetiMigrationLeases: two nodes, each with its daemon and the
// provider installed for it, attach one disk as Ganeti does for a live
// migration. Writes on either node's device reach the other's (the lease
// follows them); close makes the node's daemon release the lease; an
// exclusive open takes it from the node that holds it.
func TestGanetiMigrationLeases(t *testing.T) {
	need(t, "qemu-io", "nbdfuse", "losetup", "fusermount3")
	e := newEnv(t)
	nodes := map[string]*daemon{"a": e.serve("--node-id", "a"), "b": e.serve("--node-id", "b")}
	prov := map[string]string{}
	for n, d := range nodes {
		prov[n] = e.path("es-" + n + "/archip")
		run(t, archipBin, "--store", e.store, "extstorage", "install", prov[n],
			"--nbd", "unix:"+d.sock, "--admin", d.admin, "--run-dir", e.path("run-"+n))
	}
	vol := "9b2e.ext.disk0"
	disk := []string{"VOL_NAME=" + vol}
	ganetiOK(t, prov["a"], "create", append(disk, "VOL_SIZE=8")...)
	devs := map[string]string{}
	for _, n := range []string{"a", "b"} {
		ganetiOK(t, prov[n], "open", append(disk, "VOL_OPEN_EXCLUSIVE=False")...)
		devs[n] = strings.SplitN(ganetiOK(t, prov[n], "attach", disk...), "\n", 2)[0]
		t.Cleanup(func() { ganeti(t, prov[n], "detach", disk...) })
	}
	holder := func() string {
		t.Helper()
		var st leaseShow
		json.Unmarshal([]byte(e.archip("lease", "show", vol, "--json")), &st)
		if st.State != "held" {
			return st.State
		}
		return st.Record.Owner
	}
	devIO := func(n, cmd string) {
		t.Helper()
		out := run(t, "qemu-io", "-n", "-f", "raw", "-c", cmd, devs[n]) // -n: O_DIRECT
		if strings.Contains(out, "fail") {
			t.Fatalf("%s on node %s: %s", cmd, n, out)
		}
	}

	devIO("a", "write -P 0xa1 0 64k")
	if h := holder(); h != "a" {
		t.Fatalf("after a write on node a the lease is %q", h)
	}
	devIO("b", "read -P 0xa1 0 64k") // the destination reads what the source wrote
	devIO("b", "write -P 0xb2 0 64k")
	if h := holder(); h != "b" {
		t.Fatalf("after a write on node b the lease is %q", h)
	}
	devIO("a", "read -P 0xb2 0 64k")

	ganetiOK(t, prov["b"], "close", disk...) // b stops using the disk
	if h := holder(); h != "released" {
		t.Fatalf("after close on node b the lease is %q", h)
	}
	devIO("a", "write -P 0xa3 0 64k")
	ganetiOK(t, prov["b"], "open", append(disk, "VOL_OPEN_EXCLUSIVE=True")...)
	if h := holder(); h == "a" {
		t.Fatal("after an exclusive open on node b, node a still holds the lease")
	}
	devIO("b", "read -P 0xa3 0 64k")
	devIO("b", "write -P 0xb4 0 64k")
	if h := holder(); h != "b" {
		t.Fatalf("after a write on node b the lease is %q", h)
	}
}

// TestGanetiGuest: a guest runs on a disk made by the provider, through
// the kvm: URI attach printed, passed to QEMU as Ganeti's KVM hypervisor
// does with userspace disk access (-drive file=URI); what the guest
// wrote is in the volume.
func TestGanetiGuest(t *testing.T) {
	need(t, "qemu-system-x86_64", "nbdfuse", "losetup", "fusermount3")
	kernel, initrd := buildGuest(t)
	e := newEnv(t)
	d := e.serve()
	prov := e.path("es/archip")
	run(t, archipBin, "--store", e.store, "extstorage", "install", prov, "--nbd", "unix:"+d.sock, "--admin", d.admin, "--run-dir", e.path("run"))
	disk := []string{"VOL_NAME=5d1e.ext.disk0"}
	ganetiOK(t, prov, "create", append(disk, "VOL_SIZE=64")...)
	ganetiOK(t, prov, "open", append(disk, "VOL_OPEN_EXCLUSIVE=True")...)
	lines := strings.Split(strings.TrimSpace(ganetiOK(t, prov, "attach", disk...)), "\n")
	t.Cleanup(func() { ganeti(t, prov, "detach", disk...) })
	uri, ok := strings.CutPrefix(lines[len(lines)-1], "kvm:")
	if !ok {
		t.Fatalf("attach printed %q", lines)
	}
	v := startVMDisk(t, e, "g", kernel, initrd, "",
		"-drive", "file="+uri+",format=raw,if=none,id=d0,cache=none,aio=threads",
		"-device", "virtio-blk-pci,drive=d0")
	v.waitAcks(20, 2*time.Minute)
	v.qmp.do("quit", nil)
	v.cmd.Wait()
	ganetiOK(t, prov, "close", disk...)
	// The guest wrote record i to sector i (testdata/recwriter).
	data := e.archip("volume", "read", "5d1e.ext.disk0", "--length", "10240")
	for i := 0; i < 20; i++ {
		if rec := fmt.Sprintf("REC %08d\n", i); !strings.HasPrefix(data[i*512:], rec) {
			t.Fatalf("sector %d holds %q, not the guest's record", i, data[i*512:i*512+13])
		}
	}
}

// TestGanetiGrowAttachedAndExport: Ganeti grows a disk while it is
// attached (Grow attaches first) and then reads the block device's size
// (gnt-cluster repair-disk-sizes, the wipe of the grown part); a backup
// export snapshots the disk, attaches the snapshot read-only, reads it,
// and removes it.
func TestGanetiGrowAttachedAndExport(t *testing.T) {
	need(t, "qemu-io", "nbdfuse", "losetup", "fusermount3", "blockdev")
	e := newEnv(t)
	d := e.serve()
	prov := e.path("es/archip")
	run(t, archipBin, "--store", e.store, "extstorage", "install", prov,
		"--nbd", "unix:"+d.sock, "--admin", d.admin, "--run-dir", e.path("run"))
	vol := "0b7d4c1e-2f3a-4e5b-8c6d-7e8f9a0b1c2d.ext.disk1"
	common := []string{"VOL_NAME=" + vol}
	ganetiOK(t, prov, "create", append(common, "VOL_SIZE=8")...)
	attach := func(name string) string {
		t.Helper()
		out := ganetiOK(t, prov, "attach", "VOL_NAME="+name)
		t.Cleanup(func() { ganeti(t, prov, "detach", "VOL_NAME="+name) })
		return strings.SplitN(out, "\n", 2)[0]
	}
	size := func(dev string) string {
		t.Helper()
		return strings.TrimSpace(run(t, "blockdev", "--getsize64", dev))
	}
	dev := attach(vol)
	if got := size(dev); got != fmt.Sprint(8<<20) {
		t.Fatalf("attached: %s bytes", got)
	}
	// A running instance with userspace access keeps its own connection.
	vmMnt := e.path("vm")
	os.Mkdir(vmMnt, 0o700)
	vm := exec.Command("nbdfuse", "-P", e.path("vm.pid"), filepath.Join(vmMnt, "disk"), d.uri(vol))
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("fusermount3", "-u", vmMnt).Run(); vm.Wait() })
	for i := 0; ; i++ {
		if b, _ := os.ReadFile(e.path("vm.pid")); len(b) > 0 {
			break
		}
		if i == 1000 {
			t.Fatal("nbdfuse did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ganetiOK(t, prov, "grow", append(common, "VOL_SIZE=8", "VOL_NEW_SIZE=12")...)
	dev = attach(vol)
	if got := size(dev); got != fmt.Sprint(12<<20) {
		t.Errorf("after grow, the attached device has %s bytes, want %d", got, 12<<20)
	}
	qemuIO(t, d.uri(vol), "write -P 0x7e 10M 64k")

	snap := vol + ".snap"
	ganetiOK(t, prov, "snapshot", append(common, "VOL_SNAPSHOT_NAME="+snap, "VOL_SNAPSHOT_SIZE=12")...)
	sdev := attach(snap)
	if got := size(sdev); got != fmt.Sprint(12<<20) {
		t.Errorf("the snapshot's device has %s bytes", got)
	}
	f, err := os.Open(sdev)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64<<10)
	_, err = f.ReadAt(got, 10<<20)
	f.Close()
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0x7e}, 64<<10)) {
		t.Errorf("the snapshot's device does not read what the disk had (%v)", err)
	}
	if ro, _ := os.ReadFile("/sys/block/" + filepath.Base(sdev) + "/ro"); strings.TrimSpace(string(ro)) != "1" {
		t.Errorf("the snapshot's device %s is not read-only", sdev)
	}
	for _, name := range []string{snap, vol} {
		ganetiOK(t, prov, "detach", "VOL_NAME="+name)
		ganetiOK(t, prov, "remove", "VOL_NAME="+name)
	}
	// remove of a disk already removed (Ganeti retries a failed removal).
	ganetiOK(t, prov, "remove", common...)
	if out := e.archip("volume", "list"); strings.Contains(out, vol) {
		t.Errorf("after remove: %s", out)
	}
}

// TestGanetiShimsCleanEnvironment: the installed actions run with no
// PATH (Ganeti cleans the environment of the scripts it runs) and with a
// store URL and run directory holding shell syntax, which they pass on
// as they are and never run.
func TestGanetiShimsCleanEnvironment(t *testing.T) {
	need(t, "qemu-io", "nbdfuse", "losetup", "fusermount3")
	e := newEnv(t)
	marker := e.path("ran")
	odd := e.path(`st 'x' $(touch ` + marker + `) "y"`)
	store := "file://" + odd
	run(t, archipBin, "--store", store, "store", "init")
	e.store = store
	d := e.serve()
	prov := e.path("es/archip")
	run(t, archipBin, "--store", store, "extstorage", "install", prov,
		"--nbd", "unix:"+d.sock, "--run-dir", e.path("run $(touch "+marker+")"))
	noPath := func(action string, vars ...string) (string, string, int) {
		cmd := exec.Command(filepath.Join(prov, action))
		cmd.Dir = prov
		cmd.Env = vars
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), errb.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), 0
	}
	if out, errs, code := noPath("create", "VOL_NAME=d", "VOL_SIZE=4"); code != 0 {
		t.Fatalf("create: exit %d: %s%s", code, out, errs)
	}
	out, errs, code := noPath("attach", "VOL_NAME=d")
	t.Cleanup(func() { noPath("detach", "VOL_NAME=d") })
	if code != 0 {
		t.Fatalf("attach without PATH: exit %d: %s%s", code, out, errs)
	}
	qemuIO(t, strings.TrimPrefix(strings.Split(out, "\n")[1], "kvm:"), "read -P 0 0 4M")
	if _, errs, code := noPath("detach", "VOL_NAME=d"); code != 0 {
		t.Fatalf("detach without PATH: exit %d: %s", code, errs)
	}
	if _, errs, code := noPath("create", "VOL_NAME=e"); code != 2 || !strings.Contains(errs, "VOL_SIZE") {
		t.Errorf("create without VOL_SIZE: exit %d, %s; want 2", code, errs)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("an action ran shell syntax from the store URL or run directory")
	}
}
