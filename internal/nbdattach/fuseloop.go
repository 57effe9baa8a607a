// Package nbdattach maps an NBD export to a block device of this host,
// for the integrations that must hand a cloud manager a device path
// (Ganeti's attach, a CSI node's stage). The kernel NBD client is absent
// on many hosts (and in containers), so FuseLoop serves the export as a
// file with nbdfuse and puts a loop device over it: that needs only FUSE
// and loop devices, which every Linux host has.
package nbdattach

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FuseLoop attaches a volume as a loop device over a file that nbdfuse
// serves from the volume's NBD export: a block device on any Linux with
// FUSE and loop devices, kernel NBD client or not. Each attached volume
// has a directory RunDir/NAME holding the mount point (mnt/, the file
// mnt/disk), nbdfuse's pid file and log, and the loop device's name.
//
// The loop device does direct I/O on the file, so it reads what any
// other client of the export wrote and its writes reach the export at
// once. The nbdfuse process outlives the command that starts it (it serves
// the file until detach unmounts it); its output goes to its log, never
// to the command's stdout, which Ganeti reads until it closes. Its
// size is the export's when it connected: Refresh attaches anew after a
// grow.
//
// Attach, Refresh and Detach of one name take a lock file in
// RunDir/.lock, so they may run in several processes at once.
type FuseLoop struct {
	RunDir string
	// Ready is how long Attach waits for nbdfuse to serve; 0 means 30s.
	Ready time.Duration
}

// ErrAttach: the block device could not be set up.
var ErrAttach = errors.New("nbdattach: attach")

type fuseDirs struct{ dir, mnt, file, pid, log, dev string }

func (f *FuseLoop) dirs(name string) fuseDirs {
	dir := filepath.Join(f.RunDir, name)
	mnt := filepath.Join(dir, "mnt")
	return fuseDirs{dir: dir, mnt: mnt, file: filepath.Join(mnt, "disk"), pid: filepath.Join(dir, "nbdfuse.pid"),
		log: filepath.Join(dir, "nbdfuse.log"), dev: filepath.Join(dir, "device")}
}

// Attach starts nbdfuse on uri and a loop device over its file, or
// returns the loop device of an attachment that is still whole.
func (f *FuseLoop) Attach(ctx context.Context, name, uri string, readOnly bool) (string, error) {
	unlock, err := f.lock(name)
	if err != nil {
		return "", err
	}
	defer unlock()
	return f.attach(ctx, name, uri, readOnly)
}

// ErrBusy: Refresh found the device held open.
var ErrBusy = errors.New("nbdattach: the device is in use")

// Refresh makes name's device, if attached, show the export's size now
// (after a grow): nbdfuse keeps the size it found when it connected, so
// the attachment is made anew, which needs a device no process holds
// open or mounted (ErrBusy, and the device stays as it was). The new
// device may have another name: Attach returns it.
func (f *FuseLoop) Refresh(ctx context.Context, name, uri string, readOnly bool) error {
	unlock, err := f.lock(name)
	if err != nil {
		return err
	}
	defer unlock()
	d := f.dirs(name)
	dev, ok := d.attached()
	if !ok {
		return nil
	}
	if who := users(dev); who != "" {
		return fmt.Errorf("%w: %s is held by %s", ErrBusy, dev, who)
	}
	if err := d.teardown(ctx); err != nil {
		return err
	}
	_, err = f.attach(ctx, name, uri, readOnly)
	return err
}

// ReadOnlyView returns another loop device over name's attachment, this
// one read-only, for a read-only publication of a volume attached
// writable (a read-only bind mount of a device node does not stop
// writes to the device). DropView, or Detach, detaches it.
func (f *FuseLoop) ReadOnlyView(ctx context.Context, name string) (string, error) {
	unlock, err := f.lock(name)
	if err != nil {
		return "", err
	}
	defer unlock()
	d := f.dirs(name)
	if _, ok := d.loop(); !ok {
		return "", fmt.Errorf("%w: %s is not attached", ErrAttach, name)
	}
	out, err := Command(ctx, "losetup", "--find", "--show", "--read-only", "--direct-io=on", d.file)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrAttach, err)
	}
	dev := strings.TrimSpace(out)
	if err := os.WriteFile(d.view(dev), nil, 0o600); err != nil {
		Command(context.WithoutCancel(ctx), "losetup", "-d", dev)
		return "", fmt.Errorf("%w: %v", ErrAttach, err)
	}
	return dev, nil
}

// DropView detaches dev if it is a view ReadOnlyView made of name's
// attachment; any other device is left as it is.
func (f *FuseLoop) DropView(ctx context.Context, name, dev string) error {
	unlock, err := f.lock(name)
	if err != nil {
		return err
	}
	defer unlock()
	return f.dirs(name).dropView(ctx, dev)
}

// view is the file recording that loop device dev is a view.
func (d fuseDirs) view(dev string) string { return filepath.Join(d.dir, "view-"+filepath.Base(dev)) }

func (d fuseDirs) dropView(ctx context.Context, dev string) error {
	rec := d.view(dev)
	if _, err := os.Stat(rec); err != nil {
		return nil
	}
	backing, _ := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	if strings.TrimSpace(string(backing)) == d.file {
		if _, err := Command(ctx, "losetup", "-d", dev); err != nil {
			return fmt.Errorf("nbdattach: detach %s: %v", dev, err)
		}
	}
	if err := os.Remove(rec); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("nbdattach: detach: %v", err)
	}
	return nil
}

// users names what holds dev open or mounted, "" if nothing.
func users(dev string) string {
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if _, after, ok := strings.Cut(line, " - "); ok {
				if f := strings.Fields(after); len(f) > 1 && f[1] == dev {
					return "a mount"
				}
			}
		}
	}
	if h, _ := os.ReadDir(filepath.Join("/sys/block", filepath.Base(dev), "holders")); len(h) > 0 {
		return h[0].Name()
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && l == dev {
			pid := filepath.Base(filepath.Dir(filepath.Dir(fd)))
			comm, _ := os.ReadFile(filepath.Join("/proc", pid, "comm"))
			return fmt.Sprintf("process %s (%s)", pid, strings.TrimSpace(string(comm)))
		}
	}
	return ""
}

func (f *FuseLoop) attach(ctx context.Context, name, uri string, readOnly bool) (string, error) {
	d := f.dirs(name)
	if dev, ok := d.attached(); ok {
		return dev, nil
	}
	if err := d.teardown(ctx); err != nil { // what a crash or a dead nbdfuse left
		return "", err
	}
	if err := os.MkdirAll(d.mnt, 0o700); err != nil {
		return "", fmt.Errorf("%w: %v", ErrAttach, err)
	}
	logf, err := os.Create(d.log)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrAttach, err)
	}
	defer logf.Close()
	args := []string{"-P", d.pid}
	if readOnly {
		args = append(args, "-r")
	}
	cmd := exec.Command("nbdfuse", append(args, d.file, uri)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%w: starting nbdfuse (is it installed? Debian: libnbd-bin): %v", ErrAttach, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// stop ends an nbdfuse that did not get to serve (it may hang on a
	// server that never answers) before teardown removes its directory.
	stop := func() {
		cmd.Process.Kill()
		<-exited
		d.teardown(context.WithoutCancel(ctx))
	}
	wait := f.Ready
	if wait == 0 {
		wait = 30 * time.Second
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ready := false; !ready; {
		select {
		case err := <-exited:
			out, _ := os.ReadFile(d.log)
			d.teardown(context.WithoutCancel(ctx))
			return "", fmt.Errorf("%w: nbdfuse %s exited (%v): %s; is 'archip serve' running and listening there?", ErrAttach, uri, err, strings.TrimSpace(string(out)))
		case <-deadline.C:
			stop()
			return "", fmt.Errorf("%w: nbdfuse did not serve %s within %s", ErrAttach, uri, wait)
		case <-ctx.Done():
			stop()
			return "", ctx.Err()
		case <-tick.C:
			b, _ := os.ReadFile(d.pid)
			ready = len(bytes.TrimSpace(b)) > 0
		}
	}
	// Direct I/O: without it the loop device reads through the page cache
	// of nbdfuse's file, which keeps what it read before another client
	// of the export (QEMU on the export's URI, another node's daemon)
	// wrote, and holds back its own writes until writeback.
	loArgs := []string{"--find", "--show", "--direct-io=on"}
	if readOnly {
		loArgs = append(loArgs, "--read-only")
	}
	out, err := Command(ctx, "losetup", append(loArgs, d.file)...)
	if err != nil {
		d.teardown(context.WithoutCancel(ctx))
		return "", fmt.Errorf("%w: %v", ErrAttach, err)
	}
	dev := strings.TrimSpace(out)
	if b, _ := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "dio")); strings.TrimSpace(string(b)) != "1" {
		Command(context.WithoutCancel(ctx), "losetup", "-d", dev)
		d.teardown(context.WithoutCancel(ctx))
		return "", fmt.Errorf("%w: the loop device %s cannot do direct I/O on nbdfuse's file, and would read stale data (a kernel older than 4.10?)", ErrAttach, dev)
	}
	if err := os.WriteFile(d.dev, []byte(dev+"\n"), 0o600); err != nil {
		d.teardown(context.WithoutCancel(ctx))
		return "", fmt.Errorf("%w: %v", ErrAttach, err)
	}
	return dev, nil
}

// Detach detaches the loop device and unmounts nbdfuse's file, which
// ends nbdfuse.
func (f *FuseLoop) Detach(ctx context.Context, name string) error {
	unlock, err := f.lock(name)
	if err != nil {
		return err
	}
	defer unlock()
	return f.dirs(name).teardown(ctx)
}

// lock takes the lock of name's attachment, held across processes (each
// Ganeti action is one): attaches and detaches of one volume run one at
// a time, or two would start two nbdfuse on one mount point and leave
// loop devices no detach knows of. The lock files are in RunDir/.lock,
// which no volume's directory can be (a name starts with a letter or
// digit).
func (f *FuseLoop) lock(name string) (unlock func(), err error) {
	dir := filepath.Join(f.RunDir, ".lock")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAttach, err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAttach, err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		lf.Close()
		return nil, fmt.Errorf("%w: lock %s: %v", ErrAttach, lf.Name(), err)
	}
	return func() { lf.Close() }, nil
}

// attached returns the loop device if the attachment is whole: the loop
// device still reads the file, nbdfuse still runs and its file reads.
func (d fuseDirs) attached() (string, bool) {
	dev, ok := d.loop()
	if !ok {
		return "", false
	}
	b, err := os.ReadFile(d.pid)
	if err != nil {
		return "", false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return "", false
	}
	if _, err := os.Stat(d.file); err != nil {
		return "", false
	}
	if err := probe(d.file); err != nil {
		return "", false
	}
	return dev, true
}

// probeWait is how long probe waits for a read.
const probeWait = 15 * time.Second

// probe reads the start of nbdfuse's file past any cache: when the daemon
// behind it has restarted, nbdfuse runs on but every read fails, and the
// attachment must be made anew. A read that hangs counts as failed.
func probe(file string) error {
	done := make(chan error, 1)
	go func() {
		fd, err := unix.Open(file, unix.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // aligned
		if err != nil {
			done <- err
			return
		}
		defer unix.Munmap(buf)
		_, err = unix.Pread(fd, buf, 0)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(probeWait):
		return fmt.Errorf("nbdattach: no answer from %s within %s", file, probeWait)
	}
}

// loop returns the loop device recorded for the attachment if it is
// still backed by the attachment's file.
func (d fuseDirs) loop() (string, bool) {
	b, err := os.ReadFile(d.dev)
	if err != nil {
		return "", false
	}
	dev := strings.TrimSpace(string(b))
	backing, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	if err != nil || strings.TrimSpace(string(backing)) != d.file {
		return "", false
	}
	return dev, true
}

// teardown undoes what an attach did, as far as it got; nothing to undo
// is no error.
func (d fuseDirs) teardown(ctx context.Context) error {
	views, _ := filepath.Glob(filepath.Join(d.dir, "view-loop*"))
	for _, v := range views {
		if err := d.dropView(ctx, "/dev/"+strings.TrimPrefix(filepath.Base(v), "view-")); err != nil {
			return err
		}
	}
	if dev, ok := d.loop(); ok {
		// A device still open (a VM that did not stop) is detached when
		// it is closed (autoclear).
		if _, err := Command(ctx, "losetup", "-d", dev); err != nil {
			return fmt.Errorf("nbdattach: detach %s: %v", dev, err)
		}
	}
	if Mounted(d.mnt) {
		// Lazy: a loop device being closed may still hold the file.
		if _, err := Command(ctx, "fusermount3", "-u", "-z", d.mnt); err != nil {
			return fmt.Errorf("nbdattach: unmount %s: %v", d.mnt, err)
		}
	}
	for _, p := range []string{d.dev, d.pid, d.log, d.mnt, d.dir} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("nbdattach: detach: %v", err)
		}
	}
	return nil
}

// Mounted reports whether path is a mount point of this mount namespace.
func Mounted(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == path {
			return true
		}
	}
	return false
}

// unescapeMount undoes the octal escapes of /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Command runs a tool and returns its stdout; its error names the
// command and carries its stderr.
func Command(ctx context.Context, name string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
