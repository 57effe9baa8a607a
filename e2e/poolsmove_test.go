package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
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

// TestPoolsMoveLive: a volume moves file → s3 → file → s3 (versitygw)
// while a libnbd client writes 4 KiB records through archip serve, each
// followed by a flush, the first move's mover killed with SIGKILL part
// way and run again; the client never sees an error, and every write
// acknowledged reads back at the end (the one in flight when the writer
// is stopped, old or new).
func TestPoolsMoveLive(t *testing.T) {
	needLibnbd(t)
	e := &env{t: t, dir: t.TempDir()}
	data := s3.TestStoreURL(t, s3.TestServer(t, "versitygw"), fmt.Sprintf("e2emove%d", os.Getpid()))
	conf := filepath.Join(e.dir, "store.toml")
	body := fmt.Sprintf("metadata = %q\ndefault = \"local\"\n[pools]\nlocal = %q\ns3 = %q\n",
		"file://"+filepath.Join(e.dir, "meta"), "file://"+filepath.Join(e.dir, "local"), data)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	e.store = "pools://" + conf
	const nops = 100000
	seed := seedMoveVolume(e, nops, "v ")
	ops := seed.ops

	d := e.serve("--flush-interval", "0")
	w := exec.Command("/usr/bin/python3", "-c", flushEachWriter, d.sock, "w", ops)
	out, _ := w.StdoutPipe()
	var stderr bytes.Buffer
	w.Stderr = &stderr
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	var last atomic.Int64
	last.Store(-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, err := strconv.Atoi(sc.Text()); err == nil {
				last.Store(int64(n))
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
	waitWrites(20)
	for _, to := range []string{"local", "s3"} {
		before := last.Load()
		res := e.archip("volume", "move", "v", "--to", to)
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
	seed.check(t, d, acked)
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
