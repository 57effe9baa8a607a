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
	e := &env{t: t, dir: t.TempDir()}
	data := s3.TestStoreURL(t, s3.TestServer(t, "versitygw"), fmt.Sprintf("e2eswitch%d", os.Getpid()))
	conf := filepath.Join(e.dir, "store.toml")
	body := fmt.Sprintf("metadata = %q\ndefault = \"local\"\n[pools]\nlocal = %q\ns3 = %q\n",
		"file://"+filepath.Join(e.dir, "meta"), "file://"+filepath.Join(e.dir, "local"), data)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	e.store = "pools://" + conf
	const nops = 100000
	seed := seedMoveVolume(e, nops, "")
	ctl := e.path("ctl")
	a := e.serve("--node-id", "a", "--flush-interval", "0")
	b := e.serve("--node-id", "b", "--flush-interval", "0")
	w := exec.Command("/usr/bin/python3", "-c", switchWriter, a.uri("v"), b.uri("v"), "w", seed.ops, ctl)
	out, _ := w.StdoutPipe()
	var stderr bytes.Buffer
	w.Stderr = &stderr
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		lat      latencies
		switched atomic.Int64
		last     atomic.Int64
	)
	switched.Store(-1)
	last.Store(-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 2 {
				continue
			}
			switch fs[0] {
			case "S":
				i, _ := strconv.ParseInt(fs[1], 10, 64)
				switched.Store(i)
			case "W":
				if i, ok := lat.parse(sc.Text()); ok {
					last.Store(i)
				}
			}
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-done:
				w.Wait()
				t.Fatalf("the writer stopped (waiting for %s) after %d acknowledged writes: %s", what, last.Load()+1, stderr.String())
			case <-time.After(time.Millisecond):
			}
		}
	}
	waitWrites := func(n int64) {
		t.Helper()
		target := last.Load() + n
		waitFor(fmt.Sprintf("write %d", target), func() bool { return last.Load() >= target })
	}
	waitWrites(300)
	sw := time.Now()
	os.WriteFile(ctl+".switch", nil, 0o644)
	waitFor("the switch", func() bool { return switched.Load() >= 0 })
	waitWrites(30)
	lat.window(t, "switch from daemon a to b", sw, time.Now())
	if b.logged("lease taken") == 0 || a.logged("handed over") == 0 {
		t.Fatalf("no handoff from daemon a to b: a handed over %d times, b took the lease %d times", a.logged("handed over"), b.logged("lease taken"))
	}
	w.Process.Kill()
	<-done
	w.Wait()
	acked := int(last.Load())
	lat.rest(t)
	seed.check(t, b, acked)
}
