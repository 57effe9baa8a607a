package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore/s3"
)

// The writer of TestRadosPoolsMoveLive and TestPoolsSwitchDaemons: for
// each line OFF of its ops file, one 4 KiB write of record(TAG, i) at
// OFF to export VOL, then a FLUSH (libnbd has no cache: what is
// acknowledged is on the daemon, as a guest's O_DIRECT write followed
// by fdatasync), then "W i START END"
// (wall clock, ns). Before each write it looks at two files: while
// CTL.pause exists it waits (once having said "P i"); once CTL.switch
// exists it connects to the second daemon and goes on through it ("S
// i"), closing its connection to the first only after its first write
// and flush there, as a VM migrated between hosts does: the destination
// writes while the source still has the volume open, so the second
// daemon must ask the first to hand it over.
const switchWriter = `
import nbd, os, sys, time
uri_a, uri_b, tag, opsfile, ctl = sys.argv[1:6]
h = nbd.NBD()
h.connect_uri(uri_a)
on_b = False
old = None
for i, line in enumerate(open(opsfile)):
    if os.path.exists(ctl + ".pause"):
        print("P", i, flush=True)
        while os.path.exists(ctl + ".pause"):
            time.sleep(0.005)
    if not on_b and os.path.exists(ctl + ".switch"):
        old = h
        h = nbd.NBD()
        h.connect_uri(uri_b)
        on_b = True
        print("S", i, flush=True)
    rec = b"%s %08d\n" % (tag.encode(), i)
    t0 = time.time_ns()
    h.pwrite((rec * (4096 // len(rec) + 1))[:4096], int(line))
    h.flush()
    print("W", i, t0, time.time_ns(), flush=True)
    if old is not None:
        old.shutdown()
        old = None
`

// TestPoolsSwitchDaemons: the switch of TestRadosPoolsMoveLive without
// Ceph. A libnbd client writes 4 KiB records, each followed by a flush,
// through daemon a, then connects to daemon b and goes on through it,
// closing its connection to a only after its first write+flush through
// b (as a VM migrated between hosts does): b asks a to hand the volume
// over. The store has an S3 pool (versitygw), so writers log in
// segments, one per flush, and a's log holds a few hundred when b takes
// it over. The client never sees an error, every acknowledged write
// reads back, and the latency of the write+flush around the switch is
// logged (docs/benchmarks.md, "The pause at a move's cut-over").
func TestPoolsSwitchDaemons(t *testing.T) {
	needLibnbd(t)
	e := poolsEnv(t, "s3", s3.TestStoreURL(t, s3.TestServer(t, "versitygw"), fmt.Sprintf("e2eswitch%d", os.Getpid())))
	const nops = 100000
	seed := seedMoveVolume(e, nops, "")
	ctl := e.path("ctl")
	a := e.serve("--node-id", "a", "--flush-interval", "0")
	b := e.serve("--node-id", "b", "--flush-interval", "0")
	r := startSwitchWriter(t, a, b, seed.ops, ctl)
	r.waitWrites(300)
	r.switchDaemons()
	acked := r.stop()
	r.lat.rest(t)
	seed.check(t, b, acked)
}

// poolsEnv returns an env on a pools:// store: metadata and the default
// pool "local" on files, and the named pools (name, URL, in order).
func poolsEnv(t *testing.T, pools ...string) *env {
	e := &env{t: t, dir: t.TempDir()}
	conf := filepath.Join(e.dir, "store.toml")
	body := fmt.Sprintf("metadata = %q\ndefault = \"local\"\n[pools]\nlocal = %q\n",
		"file://"+filepath.Join(e.dir, "meta"), "file://"+filepath.Join(e.dir, "local"))
	for i := 0; i+1 < len(pools); i += 2 {
		body += fmt.Sprintf("%s = %q\n", pools[i], pools[i+1])
	}
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	e.store = "pools://" + conf
	return e
}

// switchRun is a running switchWriter and what it has said: the last
// write acknowledged, the write it paused before and the one it switched
// daemons at (-1 until it has), and the latencies of its writes.
type switchRun struct {
	t        *testing.T
	a, b     *daemon
	ctl      string
	w        *exec.Cmd
	stderr   bytes.Buffer
	done     chan struct{}
	lat      latencies
	paused   atomic.Int64
	switched atomic.Int64
	last     atomic.Int64
}

// startSwitchWriter starts switchWriter on volume v, through daemon a,
// then b; ops is its ops file, ctl its control files' prefix.
func startSwitchWriter(t *testing.T, a, b *daemon, ops, ctl string) *switchRun {
	r := &switchRun{t: t, a: a, b: b, ctl: ctl, done: make(chan struct{})}
	r.w = exec.Command("/usr/bin/python3", "-c", switchWriter, a.uri("v"), b.uri("v"), "w", ops, ctl)
	out, _ := r.w.StdoutPipe()
	r.w.Stderr = &r.stderr
	if err := r.w.Start(); err != nil {
		t.Fatal(err)
	}
	r.paused.Store(-1)
	r.switched.Store(-1)
	r.last.Store(-1)
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 2 {
				continue
			}
			i, _ := strconv.ParseInt(fs[1], 10, 64)
			switch fs[0] {
			case "P":
				r.paused.Store(i)
			case "S":
				r.switched.Store(i)
			case "W":
				if i, ok := r.lat.parse(sc.Text()); ok {
					r.last.Store(i)
				}
			}
		}
	}()
	return r
}

// waitFor waits until cond holds; the test fails if the writer stops
// first.
func (r *switchRun) waitFor(what string, cond func() bool) {
	r.t.Helper()
	for !cond() {
		select {
		case <-r.done:
			r.w.Wait()
			r.t.Fatalf("the writer stopped (waiting for %s) after %d acknowledged writes: %s", what, r.last.Load()+1, r.stderr.String())
		case <-time.After(time.Millisecond):
		}
	}
}

// waitWrites waits for n more acknowledged writes.
func (r *switchRun) waitWrites(n int64) {
	r.t.Helper()
	target := r.last.Load() + n
	r.waitFor(fmt.Sprintf("write %d", target), func() bool { return r.last.Load() >= target })
}

// switchDaemons moves the writer from daemon a to b, which asks a to hand
// the volume over, and checks that the handoff happened and what the
// writes' latencies were meanwhile.
func (r *switchRun) switchDaemons() {
	r.t.Helper()
	sw := time.Now()
	os.WriteFile(r.ctl+".switch", nil, 0o644)
	r.waitFor("the switch", func() bool { return r.switched.Load() >= 0 })
	r.waitWrites(30)
	r.lat.window(r.t, "switch from daemon a to b", sw, time.Now())
	if r.b.logged("lease taken") == 0 || r.a.logged("handed over") == 0 {
		r.t.Fatalf("no handoff from daemon a to b: a handed over %d times, b took the lease %d times", r.a.logged("handed over"), r.b.logged("lease taken"))
	}
}

// stop kills the writer and returns the index of its last acknowledged
// write.
func (r *switchRun) stop() int {
	r.w.Process.Kill()
	<-r.done
	r.w.Wait()
	return int(r.last.Load())
}
