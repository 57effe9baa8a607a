package nbdattach

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// leftovers lists what is left under dir: loop devices backed by a file
// there, mounts there, and processes naming it (nbdfuse).
func leftovers(dir string) []string {
	var left []string
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range loops {
		if b, _ := os.ReadFile(f); strings.HasPrefix(strings.TrimSpace(string(b)), dir) {
			left = append(left, "loop device "+filepath.Base(filepath.Dir(filepath.Dir(f)))+" on "+strings.TrimSpace(string(b)))
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(unescapeMount(f[4]), dir) {
				left = append(left, "mount "+f[4])
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), dir) {
			left = append(left, "process "+strings.ReplaceAll(strings.TrimSpace(string(b)), "\x00", " "))
		}
	}
	return left
}

// killLeftovers ends the processes a failed test left under dir.
func killLeftovers(dir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), dir) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// noLeftovers fails t if anything is left under dir (leftovers) once
// a detach has had time to end: its loop devices detach and nbdfuse
// exits after the unmount, asynchronously.
func noLeftovers(t *testing.T, dir, after string) {
	t.Helper()
	var left []string
	for i := 0; i < 200; i++ {
		if left = leftovers(dir); len(left) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("%s: %s", after, strings.Join(left, "; "))
}

// startNBDKit runs nbdkit serving args on the unix socket sock until the
// test ends, and waits until it accepts.
func startNBDKit(t *testing.T, sock string, args ...string) *exec.Cmd {
	t.Helper()
	os.Remove(sock)
	srv := exec.Command("nbdkit", append([]string{"-f", "-U", sock}, args...)...)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return srv
		}
		if i == 1000 {
			t.Fatal("nbdkit did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFuseLoopFailedAttachLeavesNothing: an attach that fails because
// nbdfuse never serves (a server that accepts and never answers) or
// exits (no server) leaves no nbdfuse process, mount or directory.
func TestFuseLoopFailedAttachLeavesNothing(t *testing.T) {
	needTools(t, "nbdfuse", "losetup", "fusermount3")
	dir := t.TempDir()
	t.Cleanup(func() { killLeftovers(dir) })
	sock := filepath.Join(dir, "mute.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	ctx := context.Background()
	run := filepath.Join(dir, "run")
	f := &FuseLoop{RunDir: run, Ready: 300 * time.Millisecond}
	if _, err := f.Attach(ctx, "mute", "nbd+unix:///?socket="+sock, false); err == nil {
		t.Fatal("attach to a server that never answers succeeded")
	}
	noLeftovers(t, run, "a timed-out attach")
	if _, err := f.Attach(ctx, "gone", "nbd+unix:///?socket="+filepath.Join(dir, "nosuch.sock"), false); err == nil {
		t.Fatal("attach with no server succeeded")
	}
	noLeftovers(t, run, "a failed attach")
	for _, name := range []string{"mute", "gone"} {
		if _, err := os.Stat(filepath.Join(run, name)); err == nil {
			t.Errorf("a failed attach left its directory %s", name)
		}
	}
}

// TestFuseLoopConcurrentAttach: attaches of one volume at once (a CO's
// retries, Ganeti's attach while another runs) end with one loop device
// and one nbdfuse, which detach removes.
func TestFuseLoopConcurrentAttach(t *testing.T) {
	needTools(t, "nbdkit", "nbdfuse", "losetup", "fusermount3")
	dir := t.TempDir()
	t.Cleanup(func() { killLeftovers(filepath.Join(dir, "run")) })
	sock := filepath.Join(dir, "nbd.sock")
	startNBDKit(t, sock, "memory", "16M")
	uri := "nbd+unix:///?socket=" + sock
	ctx := context.Background()
	run := filepath.Join(dir, "run")
	const n = 4
	devs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			f := &FuseLoop{RunDir: run} // as separate processes would
			devs[i], errs[i] = f.Attach(ctx, "vol", uri, false)
		}(i)
	}
	wg.Wait()
	f := &FuseLoop{RunDir: run}
	t.Cleanup(func() { f.Detach(ctx, "vol") })
	for i := 0; i < n; i++ {
		if errs[i] != nil || devs[i] != devs[0] {
			t.Errorf("attach %d: %s, %v; attach 0: %s, %v", i, devs[i], errs[i], devs[0], errs[0])
		}
	}
	if err := f.Detach(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	noLeftovers(t, run, "after concurrent attaches and a detach")
}

// TestFuseLoopRefresh: after the export grows, Refresh makes the
// attached device as large, unless a process holds the device open
// (ErrBusy; the device stays as it was).
func TestFuseLoopRefresh(t *testing.T) {
	needTools(t, "nbdkit", "nbdfuse", "losetup", "fusermount3", "blockdev")
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	t.Cleanup(func() { killLeftovers(run) })
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 4<<20)
	sock := filepath.Join(dir, "nbd.sock")
	startNBDKit(t, sock, "file", img)
	uri := "nbd+unix:///?socket=" + sock
	ctx := context.Background()
	f := &FuseLoop{RunDir: run}
	size := func(dev string) string {
		t.Helper()
		out, err := Command(ctx, "blockdev", "--getsize64", dev)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	dev, err := f.Attach(ctx, "vol", uri, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Detach(ctx, "vol") })
	if err := f.Refresh(ctx, "nosuch", uri, false); err != nil {
		t.Errorf("refresh of what is not attached: %v", err)
	}
	os.Truncate(img, 8<<20)
	held, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Refresh(ctx, "vol", uri, false); !errors.Is(err, ErrBusy) {
		t.Errorf("refresh of a device held open: %v, want ErrBusy", err)
	}
	held.Close()
	if again, err := f.Attach(ctx, "vol", uri, false); err != nil || again != dev || size(dev) != "4194304" {
		t.Fatalf("after a refused refresh: %s, %v, want %s as it was", again, err, dev)
	}
	if err := f.Refresh(ctx, "vol", uri, false); err != nil {
		t.Fatal(err)
	}
	dev, err = f.Attach(ctx, "vol", uri, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := size(dev); got != "8388608" {
		t.Errorf("after refresh the device has %s bytes, want 8388608", got)
	}
	if err := f.Detach(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	noLeftovers(t, run, "after detach")
}

// TestFuseLoopAttachAfterServerRestart: when the daemon serving the
// export restarts, nbdfuse stays but its file fails every read; attach
// then makes the attachment anew instead of returning a dead device.
func TestFuseLoopAttachAfterServerRestart(t *testing.T) {
	needTools(t, "nbdkit", "nbdfuse", "losetup", "fusermount3")
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	t.Cleanup(func() { killLeftovers(run) })
	sock := filepath.Join(dir, "nbd.sock")
	srv := startNBDKit(t, sock, "memory", "16M")
	uri := "nbd+unix:///?socket=" + sock
	ctx := context.Background()
	f := &FuseLoop{RunDir: run}
	if _, err := f.Attach(ctx, "vol", uri, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Detach(ctx, "vol") })
	srv.Process.Kill()
	srv.Wait()
	startNBDKit(t, sock, "memory", "16M")
	dev, err := f.Attach(ctx, "vol", uri, false)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if _, err := fd.ReadAt(make([]byte, 4096), 8<<20); err != nil {
		t.Errorf("attach after the server restarted returned %s, which fails: %v", dev, err)
	}
	fd.Close()
	if err := f.Detach(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	noLeftovers(t, run, "after detach")
}
