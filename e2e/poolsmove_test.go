package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore/s3"
)

// TestPoolsMoveLive: a volume moves file → s3 → file → s3 (versitygw)
// while a libnbd client writes 4 KiB records through archip serve, each
// followed by a flush, the first move's mover killed with SIGKILL part
// way and run again; the client never sees an error, and every write
// acknowledged reads back at the end (the one in flight when the writer
// is stopped, old or new). The latency of the client's write+flush
// during each move (the longest is the cut-over) is logged.
func TestPoolsMoveLive(t *testing.T) {
	needLibnbd(t)
	e := poolsEnv(t, "s3", s3.TestStoreURL(t, s3.TestServer(t, "versitygw"), fmt.Sprintf("e2emove%d", os.Getpid())))
	const nops = 100000
	seed := seedMoveVolume(e, nops, "")
	ops := seed.ops

	d := e.serve("--flush-interval", "0")
	w := exec.Command("/usr/bin/python3", "-c", timedWriter, d.uri("v"), "w", ops)
	out, _ := w.StdoutPipe()
	var stderr bytes.Buffer
	w.Stderr = &stderr
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		last atomic.Int64
		lat  latencies
	)
	last.Store(-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if i, ok := lat.parse(sc.Text()); ok {
				last.Store(i)
			}
		}
	}()
	waitWrites := func(n int64) {
		t.Helper()
		for target := last.Load() + n; last.Load() < target; {
			select {
			case <-done:
				w.Wait()
				t.Fatalf("the writer stopped after %d acknowledged writes: %s", last.Load()+1, stderr.String())
			case <-time.After(time.Millisecond):
			}
		}
	}
	waitWrites(50)
	// A mover killed with SIGKILL part way (its copy slowed by --rate),
	// then run again.
	from := time.Now()
	mv := exec.Command(archipBin, "--store", e.store, "volume", "move", "v", "--to", "s3", "--rate", "1M")
	if err := mv.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Duration(200+rand.IntN(1000)) * time.Millisecond)
	mv.Process.Kill()
	mv.Wait()
	waitWrites(20)
	// Killed before its start, part way, or after it finished: a rerun
	// starts, finishes, or finds nothing to do.
	if info := e.archip("volume", "info", "v"); strings.Contains(info, "moving from") || !strings.Contains(info, " s3 (") {
		t.Logf("mover killed before it finished; run again: %s", e.archip("volume", "move", "v", "--to", "s3"))
	} else {
		t.Log("mover killed after it finished")
	}
	lat.window(t, "move to s3 (killed, rerun)", from, time.Now())
	waitWrites(20)
	for _, to := range []string{"local", "s3"} {
		before := last.Load()
		from := time.Now()
		res := e.archip("volume", "move", "v", "--to", to)
		lat.window(t, "move to "+to, from, time.Now())
		t.Logf("%s(%d writes during the move)", res, last.Load()-before)
		waitWrites(30)
		if info := e.archip("volume", "info", "v"); !strings.Contains(info, " "+to+" (") || strings.Contains(info, "moving from") {
			t.Fatalf("volume info after the move to %s:\n%s", to, info)
		}
	}
	w.Process.Kill()
	<-done
	w.Wait()
	acked := int(last.Load())
	if acked >= nops-1 {
		t.Fatal("the writer ran out of writes")
	}
	lat.rest(t)
	seed.check(t, d, acked)
}

// The writer of TestPoolsMoveLive: for each line OFF of its ops file,
// one 4 KiB write of record(TAG, i) at OFF to export URI, then a FLUSH
// (libnbd has no cache: what is acknowledged is on the daemon, as a
// guest's O_DIRECT write followed by fdatasync), then "W i START END"
// (wall clock, ns).
const timedWriter = `
import nbd, sys, time
uri, tag, opsfile = sys.argv[1:4]
h = nbd.NBD()
h.connect_uri(uri)
for i, line in enumerate(open(opsfile)):
    rec = b"%s %08d\n" % (tag.encode(), i)
    t0 = time.time_ns()
    h.pwrite((rec * (4096 // len(rec) + 1))[:4096], int(line))
    h.flush()
    print("W", i, t0, time.time_ns(), flush=True)
`

// latencies collects the write+flush times a timed writer prints ("W i
// START END") and logs them by window: a move (its cut-over), a switch
// between daemons, and the rest.
type latencies struct {
	mu      sync.Mutex
	ops     [][2]int64 // start, end (ns), by write
	windows [][2]int64
}

// parse records one line of the writer's; it returns the write's index
// if the line is a write's.
func (l *latencies) parse(line string) (int64, bool) {
	fs := strings.Fields(line)
	if len(fs) != 4 || fs[0] != "W" {
		return 0, false
	}
	i, err := strconv.ParseInt(fs[1], 10, 64)
	s, err1 := strconv.ParseInt(fs[2], 10, 64)
	en, err2 := strconv.ParseInt(fs[3], 10, 64)
	if err != nil || err1 != nil || err2 != nil {
		return 0, false
	}
	l.mu.Lock()
	l.ops = append(l.ops, [2]int64{s, en})
	l.mu.Unlock()
	return i, true
}

// window logs the latency of the writes that started between from and
// to: p50, p99, max (the longest is the one that waited through the
// cut-over).
func (l *latencies) window(t *testing.T, what string, from, to time.Time) {
	t.Helper()
	l.mu.Lock()
	l.windows = append(l.windows, [2]int64{from.UnixNano(), to.UnixNano()})
	var ds []time.Duration
	for _, o := range l.ops {
		if o[0] >= from.UnixNano() && o[0] <= to.UnixNano() {
			ds = append(ds, time.Duration(o[1]-o[0]))
		}
	}
	l.mu.Unlock()
	logLatency(t, what, ds)
}

// rest logs the latency of the writes outside every window, for
// comparison.
func (l *latencies) rest(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	var ds []time.Duration
	for _, o := range l.ops {
		if !slices.ContainsFunc(l.windows, func(w [2]int64) bool { return o[0] >= w[0] && o[0] <= w[1] }) {
			ds = append(ds, time.Duration(o[1]-o[0]))
		}
	}
	l.mu.Unlock()
	logLatency(t, "outside the moves and the switch", ds)
}

func logLatency(t *testing.T, what string, ds []time.Duration) {
	t.Helper()
	if len(ds) == 0 {
		t.Logf("%s: no write started during it", what)
		return
	}
	slices.Sort(ds)
	q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
	t.Logf("%s: %d writes+flushes: latency p50 %v, p99 %v, max %v", what, len(ds), q(0.50), q(0.99), ds[len(ds)-1])
}

// moveVolume is the volume "v" the live-move tests write: slots of
// moveSlot bytes, the first half written with "init" records and
// snapshotted as v@1 before the writer starts, which then writes record
// "w" i at offs[i], in order; ops is the file of those offsets.
type moveVolume struct {
	init []byte
	offs []int
	ops  string
}

const moveSlot, moveSize = 4096, 2 << 20

// seedMoveVolume creates and seeds the volume, and writes nops random
// slot offsets to the ops file, a line each: prefix and the offset.
func seedMoveVolume(e *env, nops int, prefix string) moveVolume {
	t := e.t
	t.Helper()
	e.archip("volume", "create", "v", "--size", "2M", "--block-size", "64K")
	mv := moveVolume{init: make([]byte, moveSize), offs: make([]int, nops), ops: e.path("ops")}
	for i := range moveSize / moveSlot / 2 {
		copy(mv.init[i*moveSlot:], flushEachRecord("init", i))
	}
	cmd := exec.Command(archipBin, "--store", e.store, "-q", "volume", "write", "v")
	cmd.Stdin = bytes.NewReader(mv.init[:moveSize/2])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("volume write: %v\n%s", err, out)
	}
	e.archip("volume", "snapshot", "v", "v@1")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var f strings.Builder
	for i := range mv.offs {
		mv.offs[i] = rng.IntN(moveSize/moveSlot) * moveSlot
		fmt.Fprintf(&f, "%s%d\n", prefix, mv.offs[i])
	}
	if err := os.WriteFile(mv.ops, []byte(f.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return mv
}

// check reads the volume through d: every write up to acked is there,
// the one after it (in flight) may be, and the snapshot reads as seeded.
func (mv moveVolume) check(t *testing.T, d *daemon, acked int) {
	t.Helper()
	got := []byte(run(t, "/usr/bin/python3", "-c", exportReader, d.uri("v")))
	if len(got) != moveSize {
		t.Fatalf("read %d bytes", len(got))
	}
	want := bytes.Clone(mv.init)
	for i := 0; i <= acked; i++ {
		copy(want[mv.offs[i]:], flushEachRecord("w", i))
	}
	inflight := acked + 1
	for s := range moveSize / moveSlot {
		off := s * moveSlot
		if bytes.Equal(got[off:off+moveSlot], want[off:off+moveSlot]) {
			continue
		}
		if mv.offs[inflight] == off && bytes.Equal(got[off:off+moveSlot], flushEachRecord("w", inflight)) {
			continue
		}
		t.Fatalf("slot %d reads %q, want %q (%d writes acknowledged)", s, got[off:off+40], want[off:off+40], acked+1)
	}
	if snap := []byte(run(t, "/usr/bin/python3", "-c", exportReader, d.uri("v@1"))); !bytes.Equal(snap, mv.init) {
		t.Fatal("the snapshot reads different after the moves")
	}
	t.Logf("%d writes acknowledged, all read back", acked+1)
}
