// Package e2e tests archip as a user runs it: the built binary, a store on
// disk, and real clients (qemu-img, qemu-io, nbdinfo, nbdcopy, nbdfuse,
// fio, libnbd; the aws CLI, s3cmd and curl for the S3 API). Outside CI a test whose tools are missing skips; under
// CI=true it fails (scripts/install-test-deps.sh installs them).
package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var archipBin string

// buildTags are the tags archip is built with for these tests (files
// with build tags add theirs).
var buildTags = ""

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "archip-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	archipBin = filepath.Join(dir, "archip")
	if out, err := exec.Command("go", "build", "-tags", buildTags, "-o", archipBin, "../cmd/archip").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build archip: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need skips the test if a tool is missing, or fails it under CI=true.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (scripts/install-test-deps.sh installs it)", tool)
			}
			t.Skipf("%s is missing (scripts/install-test-deps.sh installs it)", tool)
		}
	}
}

// needLibnbd skips (or under CI fails) without python3-libnbd.
func needLibnbd(t *testing.T) {
	t.Helper()
	need(t, "/usr/bin/python3")
	if err := exec.Command("/usr/bin/python3", "-c", "import nbd").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3-libnbd is missing")
		}
		t.Skip("python3-libnbd is missing")
	}
}

// run runs a command and returns its stdout; it fails the test with the
// command's output if the command fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// env is one store in a temporary directory.
type env struct {
	t     *testing.T
	dir   string
	store string
}

func newEnv(t *testing.T) *env {
	dir := t.TempDir()
	e := &env{t: t, dir: dir, store: "file://" + filepath.Join(dir, "store")}
	e.archip("store", "init")
	return e
}

func (e *env) archip(args ...string) string {
	e.t.Helper()
	return run(e.t, archipBin, append([]string{"--store", e.store}, args...)...)
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

// randomFile writes size bytes: data in the first dataLen, a hole after.
func (e *env) randomFile(name string, dataLen, size int64, seed uint64) string {
	e.t.Helper()
	p := e.path(name)
	f, err := os.Create(p)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{byte(seed)})
	buf := make([]byte, 1<<20)
	for n := int64(0); n < dataLen; n += int64(len(buf)) {
		rng.Read(buf)
		f.Write(buf[:min(int64(len(buf)), dataLen-n)])
	}
	if err := f.Truncate(size); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// daemon is a running 'archip serve'.
type daemon struct {
	cmd   *exec.Cmd
	sock  string
	tcp   string
	admin string // the admin API's address
	done  chan struct{}

	mu  sync.Mutex
	log []string // what it printed on stderr
}

var (
	// The records of archip serve's text log (older builds: prose).
	servingRE = regexp.MustCompile(`(?:frontend=NBD addr=|over NBD on )(\S+)`)
	adminRE   = regexp.MustCompile(`(?:msg="admin API" node=\S+ addr=|admin API on )(\S+)`)
	daemons   atomic.Int32
)

// logged counts the lines of the daemon's stderr that contain s.
func (d *daemon) logged(s string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, l := range d.log {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// tail is the last n lines of the daemon's stderr.
func (d *daemon) tail(n int) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.log[max(0, len(d.log)-n):], "\n")
}

// exited reports whether the daemon's process has ended.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// serve starts 'archip serve' on a unix socket and a TCP port chosen by
// the system; extra flags are passed on. It is stopped with SIGTERM when
// the test ends, and if the test failed, the end of its log is printed
// (unless it had ended before).
func (e *env) serve(extra ...string) *daemon {
	e.t.Helper()
	sock := e.path(fmt.Sprintf("nbd%d.sock", daemons.Add(1)))
	args := append([]string{"--store", e.store, "serve", "--nbd-listen", "unix:" + sock, "--nbd-listen", "127.0.0.1:0"}, extra...)
	d := &daemon{cmd: exec.Command(archipBin, args...), sock: sock, done: make(chan struct{})}
	stderr, _ := d.cmd.StderrPipe()
	if err := d.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		// A daemon that ended before the test did (a test that kills
		// daemons) is not printed: such tests print what they need.
		running := !d.exited()
		d.stop(e.t)
		if e.t.Failed() && running {
			e.t.Logf("archip serve on %s, the last lines of its log:\n%s", sock, d.tail(60))
		}
	})
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.mu.Lock()
			d.log = append(d.log, sc.Text())
			d.mu.Unlock()
			select {
			case lines <- sc.Text():
			default:
			}
		}
		d.cmd.Wait()
		close(d.done)
	}()
	deadline := time.After(10 * time.Second)
	for d.tcp == "" {
		select {
		case l := <-lines:
			if m := servingRE.FindStringSubmatch(l); m != nil && !strings.HasPrefix(m[1], "/") {
				d.tcp = m[1]
			}
			if m := adminRE.FindStringSubmatch(l); m != nil {
				d.admin = m[1]
			}
		case <-d.done:
			e.t.Fatal("archip serve exited at start")
		case <-deadline:
			e.t.Fatal("archip serve did not start in 10 s")
		}
	}
	return d
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop(t *testing.T) {
	if d.exited() {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		if code := d.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("archip serve exited with %d after SIGTERM", code)
		}
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		t.Error("archip serve did not stop within 30 s of SIGTERM")
	}
}

// kill sends SIGKILL and waits.
func (d *daemon) kill() {
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

func (d *daemon) uri(name string) string {
	return "nbd+unix:///" + name + "?socket=" + d.sock
}

func (d *daemon) tcpURI(name string) string { return "nbd://" + d.tcp + "/" + name }
