package move

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
)

var ctx = context.Background()

const (
	shift = blockmap.MinBlockShift
	bs    = 1 << shift
	size  = 16 * bs
)

// fixture is a store of two pools, a (the default) and b, holding an
// image, a volume cloned from it with a snapshot, and a clone of that
// snapshot: content blocks shared by the image and both volumes, private
// blocks of v shared by its snapshot and the clone.
type fixture struct {
	m          *manage.Manager
	r          *pools.Router
	meta, a, b objstore.Store
	want       map[string][]byte // name → contents
}

func stores(t *testing.T, kind string) (meta, a, b objstore.Store) {
	switch kind {
	case "mem":
		return objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	case "file":
		open := func() objstore.Store {
			s, err := objstore.OpenFile(t.TempDir(), true)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		return open(), open(), open()
	}
	t.Fatalf("no store kind %s", kind)
	return
}

func newKind(t *testing.T, kind string) *fixture {
	meta, a, b := stores(t, kind)
	return newFixture(t, meta, a, b)
}

func newFixture(t *testing.T, meta, a, b objstore.Store) *fixture {
	t.Helper()
	s, err := pools.New(meta, []pools.Named{{Name: "a", Store: a}, {Name: "b", Store: b}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	r, _ := pools.Of(s)
	f := &fixture{m: manage.New(s), r: r, meta: meta, a: a, b: b, want: map[string][]byte{}}
	rnd := rand.New(rand.NewSource(1))
	img := make([]byte, size)
	rnd.Read(img[:size/2])
	if _, _, err := f.m.Import(ctx, bytes.NewReader(img), size, "img", image.Options{BlockShift: shift}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Clone(ctx, "img", "v", 0); err != nil {
		t.Fatal(err)
	}
	f.write(t, "v", 3*bs+100, rnd, 2*bs)
	if _, err := f.m.Snapshot(ctx, "v", "v@1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Clone(ctx, "v@1", "c", 0); err != nil {
		t.Fatal(err)
	}
	f.write(t, "v", 9*bs, rnd, bs)
	f.write(t, "c", 12*bs, rnd, bs)
	for _, n := range []string{"img", "v", "v@1", "c"} {
		f.want[n] = manage.ReadT(t, f.m, n, 0, -1)
	}
	return f
}

func (f *fixture) write(t *testing.T, name string, off int64, rnd *rand.Rand, n int) {
	t.Helper()
	p := make([]byte, n)
	rnd.Read(p)
	manage.WriteT(t, f.m, name, off, p)
}

// check reads everything back through a fresh manager (another process).
func (f *fixture) check(t *testing.T) {
	t.Helper()
	s, err := pools.New(f.meta, []pools.Named{{Name: "a", Store: f.a}, {Name: "b", Store: f.b}})
	if err != nil {
		t.Fatal(err)
	}
	m := manage.New(s)
	for n, want := range f.want {
		if got := manage.ReadT(t, m, n, 0, -1); !bytes.Equal(got, want) {
			t.Errorf("%s differs after the move", n)
		}
	}
}

// inPool checks that pool holds every block that name and its
// snapshots reference, and that name's placement is pool.
func (f *fixture) inPool(t *testing.T, name, pool string) {
	t.Helper()
	rec, err := f.m.Lookup(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	names, err := referenced(ctx, f.m, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatalf("%s references nothing", name)
	}
	for _, n := range names {
		if ok, err := f.r.Holds(ctx, pool, n); !ok || err != nil {
			t.Errorf("%s of %s not in pool %s (%v)", n, name, pool, err)
		}
	}
	p, _, err := f.r.Record(ctx, rec.ID)
	if err != nil || p != (pools.Record{Pool: pool}) {
		t.Errorf("placement of %s: %+v %v", name, p, err)
	}
}

func TestMoveOffline(t *testing.T) {
	for _, kind := range []string{"mem", "file"} {
		t.Run(kind, func(t *testing.T) {
			f := newKind(t, kind)
			var steps []string
			res, err := Move(ctx, f.m, "v", "b", Options{Progress: func(p Progress) {
				if len(steps) == 0 || steps[len(steps)-1] != p.Step {
					steps = append(steps, p.Step)
				}
			}})
			if err != nil {
				t.Fatal(err)
			}
			if res.From != "a" || res.To != "b" || res.Copied == 0 || res.Copied != res.Blocks || res.Bytes == 0 {
				t.Errorf("result %+v", res)
			}
			if fmt.Sprint(steps) != "[reopen copy switch done]" {
				t.Errorf("steps %v", steps)
			}
			f.inPool(t, "v", "b")
			f.check(t)
			// Content blocks shared with the image and the clone were
			// copied once: a move of the image copies only those v
			// overwrote.
			res, err = Move(ctx, f.m, "img", "b", Options{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Copied == 0 || res.Copied >= res.Blocks {
				t.Errorf("the image's blocks that v references were copied again: %+v", res)
			}
			f.inPool(t, "img", "b")
			// And back.
			if _, err := Move(ctx, f.m, "v", "a", Options{}); err != nil {
				t.Fatal(err)
			}
			f.inPool(t, "v", "a")
			f.check(t)
		})
	}
}

func TestMoveErrors(t *testing.T) {
	f := newKind(t, "mem")
	if _, err := Move(ctx, f.m, "v", "z", Options{}); !errors.Is(err, pools.ErrNoPool) {
		t.Errorf("unknown pool: %v", err)
	}
	if _, err := Move(ctx, f.m, "v", "a", Options{}); !errors.Is(err, ErrThere) {
		t.Errorf("already there: %v", err)
	}
	if _, err := Move(ctx, f.m, "v@1", "b", Options{}); !errors.Is(err, ErrSnapshot) {
		t.Errorf("a snapshot: %v", err)
	}
	if _, err := Cancel(ctx, f.m, "v", Options{}); !errors.Is(err, ErrNotMoving) {
		t.Errorf("cancel of nothing: %v", err)
	}
	single := manage.New(objstore.NewMem())
	if _, err := Move(ctx, single, "v", "b", Options{}); !errors.Is(err, ErrNotPools) {
		t.Errorf("one backend: %v", err)
	}
}

var errCrash = errors.New("crash")

// crashAt returns a hook that fails at the nth call of step.
func crashAt(step string, n int) func(string) error {
	return func(s string) error {
		if s == step {
			if n--; n == 0 {
				return errCrash
			}
		}
		return nil
	}
}

// TestMoveCrashThenRerun: a mover that dies at any step leaves a state
// in which everything reads right, and a rerun finishes the move; and one
// moving to elsewhere is refused while it is unfinished.
func TestMoveCrashThenRerun(t *testing.T) {
	for _, c := range []struct {
		step string
		n    int
	}{{StepStart, 1}, {StepReopen, 1}, {StepCopy, 1}, {StepCopied, 1}, {StepCopied, 5}, {StepCopy, 2}, {StepSwitch, 1}, {StepDone, 1}} {
		t.Run(fmt.Sprintf("%s-%d", c.step, c.n), func(t *testing.T) {
			f := newKind(t, "mem")
			if _, err := Move(ctx, f.m, "v", "b", Options{Hook: crashAt(c.step, c.n)}); !errors.Is(err, errCrash) {
				t.Fatalf("crash: %v", err)
			}
			f.check(t)
			if c.step != StepStart && c.step != StepDone {
				if _, err := Move(ctx, f.m, "v", "a", Options{}); !errors.Is(err, ErrMoving) {
					t.Errorf("another move while one is unfinished: %v", err)
				}
			}
			// Writes between the crash and the rerun land somewhere the
			// rerun finds.
			rnd := rand.New(rand.NewSource(2))
			f.write(t, "v", 5*bs, rnd, bs)
			f.want["v"] = manage.ReadT(t, f.m, "v", 0, -1)
			res, err := Move(ctx, f.m, "v", "b", Options{})
			if c.step == StepDone {
				if !errors.Is(err, ErrThere) {
					t.Fatalf("rerun after the switch: %v", err)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if res.Resumed != (c.step != StepStart) {
				t.Errorf("resumed %v", res.Resumed)
			}
			f.inPool(t, "v", "b")
			f.check(t)
		})
	}
}

// TestCancel: a cancelled move leaves the volume in its source, with
// what was written to the target meanwhile copied back.
func TestCancel(t *testing.T) {
	f := newKind(t, "file")
	if _, err := Move(ctx, f.m, "v", "b", Options{Hook: crashAt(StepCopied, 3)}); !errors.Is(err, errCrash) {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewSource(3))
	f.write(t, "v", 7*bs, rnd, bs) // a new epoch: into b
	f.want["v"] = manage.ReadT(t, f.m, "v", 0, -1)
	rec, _ := f.m.Lookup(ctx, "v")
	onlyB := 0
	names, _ := referenced(ctx, f.m, rec.ID)
	for _, n := range names {
		if ok, _ := f.r.Holds(ctx, "a", n); !ok {
			onlyB++
		}
	}
	if onlyB == 0 {
		t.Fatal("the write during the move did not land in the target")
	}
	res, err := Cancel(ctx, f.m, "v", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.To != "a" || res.Copied < int64(onlyB) {
		t.Errorf("cancel %+v, %d blocks only in b", res, onlyB)
	}
	f.inPool(t, "v", "a")
	f.check(t)
}

// TestMoveStoreFaults: the store fails under the mover (the target's
// creates and the metadata's swaps, some after taking effect), at several
// points; each time everything reads right, and a rerun finishes.
func TestMoveStoreFaults(t *testing.T) {
	errFault := errors.New("injected fault")
	for _, c := range []struct {
		meta  bool // the fault is on the metadata backend
		op    objstore.Op
		skip  int
		after bool
	}{
		{false, objstore.OpCreate, 0, false}, {false, objstore.OpCreate, 3, true}, {false, objstore.OpCreate, 10, false},
		{false, objstore.OpStat, 5, false}, {false, objstore.OpGet, 2, false}, {false, objstore.OpReadAt, 2, false},
		{true, objstore.OpSwap, 0, true}, {true, objstore.OpSwap, 1, false}, {true, objstore.OpSwap, 3, true}, {true, objstore.OpGet, 8, false},
	} {
		t.Run(fmt.Sprintf("%v-%s-%d-%v", c.meta, c.op, c.skip, c.after), func(t *testing.T) {
			meta, a, b := stores(t, "mem")
			fm, fa, fb := objstore.NewFaulty(meta), objstore.NewFaulty(a), objstore.NewFaulty(b)
			f := newFixture(t, fm, fa, fb)
			rule := objstore.Rule{Op: c.op, Skip: c.skip, Count: 1, Err: errFault}
			if c.after {
				rule.ErrAfter = true
			}
			faulty := fb
			if c.meta {
				faulty = fm
			} else if c.op == objstore.OpGet || c.op == objstore.OpReadAt {
				faulty = fa // the source's reads
			}
			faulty.Add(rule)
			_, err := Move(ctx, f.m, "v", "b", Options{})
			faulty.Reset()
			if err != nil && !errors.Is(err, errFault) {
				t.Logf("move: %v", err)
			}
			f.check(t)
			if err == nil {
				f.inPool(t, "v", "b")
				return
			}
			if _, err := Move(ctx, f.m, "v", "b", Options{}); err != nil && !errors.Is(err, ErrThere) {
				t.Fatalf("rerun: %v", err)
			}
			f.inPool(t, "v", "b")
			f.check(t)
		})
	}
}
