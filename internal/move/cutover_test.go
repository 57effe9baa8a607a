package move

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

var errKilled = errors.New("killed")

// opLog records the store operations that pass Faulty stores while on.
type opLog struct {
	mu  sync.Mutex
	on  bool
	ops []string
}

func (l *opLog) watch(where string, f *objstore.Faulty) {
	f.Add(objstore.Rule{Hook: func(_ context.Context, op objstore.Op, name string) {
		l.mu.Lock()
		if l.on {
			l.ops = append(l.ops, where+" "+string(op)+" "+name)
		}
		l.mu.Unlock()
	}})
}

func (l *opLog) set(on bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on = on
	ops := l.ops
	if on {
		l.ops = nil
	}
	return ops
}

// cutover writes a small write into each of blocks of v (shared with the
// image: the writer logs them), flushes and hands the volume over (Discard
// releases the lease cleanly, as a daemon's handoff does); then it moves v
// to pool b and returns the store operations of the move's reopen, the
// moments the mover holds the lease (the cut-over pause: the writer's
// next write waits for them).
//
// With crash, the mover is killed once right after the reopen (the volume
// then has the kept log in its head, and the move record says b) and run
// again.
func cutover(t *testing.T, blocks []int, crash bool) (*fixture, []string) {
	t.Helper()
	meta, a, b := objstore.NewFaulty(objstore.NewMem()), objstore.NewFaulty(objstore.NewMem()), objstore.NewFaulty(objstore.NewMem())
	f := newFixture(t, meta, a, b)
	ops := &opLog{}
	ops.watch("meta", meta)
	ops.watch("a", a)
	ops.watch("b", b)
	rec, err := f.m.Lookup(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	w, _, err := f.m.OpenWriter(ctx, rec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, blk := range blocks {
		if err := w.WriteAt(ctx, []byte(strings.Repeat(fmt.Sprint(i), 100)), int64(blk*bs+5), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(w.Head().Logs) == 0 {
		t.Fatal("the writer logged nothing")
	}
	if err := w.Discard(ctx); err != nil {
		t.Fatal(err)
	}
	f.want["v"] = manage.ReadT(t, f.m, "v", 0, -1)
	var reopen []string
	_, err = Move(ctx, f.m, "v", "b", Options{Hook: func(step string) error {
		switch step {
		case StepReopen:
			ops.set(true)
		case StepCopy:
			if reopen == nil {
				reopen = ops.set(false)
				if crash {
					return errKilled
				}
			}
		}
		return nil
	}})
	if crash {
		if !errors.Is(err, errKilled) {
			t.Fatalf("the killed move: %v", err)
		}
		f.check(t)
		_, err = Move(ctx, f.m, "v", "b", Options{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return f, reopen
}

func blockOps(ops []string) []string {
	var out []string
	for _, o := range ops {
		f := strings.Fields(o)
		k := blockmap.ParseName(f[2]).Kind
		if f[1] != "readat" && f[1] != "get" && f[1] != "stat" && (k == blockmap.ContentObject || k == blockmap.PrivateObject) {
			out = append(out, o)
		}
	}
	return out
}

// TestMoveCutoverAfterHandoff: the writer of a volume handed it over with
// records in its write log; the move's reopen (the cut-over pause, while
// the mover holds the lease) writes no block, and its store operations do
// not grow with the blocks the log touched: it keeps the log rather than
// checkpointing it. After the move (also one whose mover was killed after
// the reopen, and run again) the volume reads what was written; a writer
// that comes back and closes (which checkpoints the log) leaves every
// block it references in the target pool.
func TestMoveCutoverAfterHandoff(t *testing.T) {
	f, one := cutover(t, []int{0}, false)
	if w := blockOps(one); len(w) != 0 {
		t.Errorf("the reopen after a handoff wrote blocks: %q", w)
	}
	f5, five := cutover(t, []int{0, 1, 2, 6, 7}, false)
	if w := blockOps(five); len(w) != 0 {
		t.Errorf("the reopen after a handoff wrote blocks: %q", w)
	}
	if len(five) > len(one) {
		sort.Strings(five)
		t.Errorf("the reopen took %d store operations with 5 logged blocks, %d with 1: the pause grows with the log (%q)", len(five), len(one), five)
	}
	killed, _ := cutover(t, []int{0, 2, 7}, true)
	for _, f := range []*fixture{f, f5, killed} {
		f.check(t)
		rec, err := f.m.Lookup(ctx, "v")
		if err != nil {
			t.Fatal(err)
		}
		w, _, err := f.m.OpenWriter(ctx, rec.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(w.Head().Logs) < 2 {
			t.Errorf("the writer that came back checkpointed the handed-over log at open (%d logs)", len(w.Head().Logs))
		}
		if err := w.Close(ctx); err != nil {
			t.Fatal(err)
		}
		f.check(t)
		f.inPool(t, "v", "b")
	}
}
