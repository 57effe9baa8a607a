package gc_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/move"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
)

// moveFixture: pools a (default) and b; volume v with a snapshot, a
// clone c of the snapshot (in a), and a block written to v after the
// snapshot (only v references it).
func moveFixture(t *testing.T) (m *manage.Manager, r *pools.Router, a, b objstore.Store, want map[string][]byte) {
	meta, ma, mb := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	s, err := pools.New(meta, []pools.Named{{Name: "a", Store: ma}, {Name: "b", Store: mb}})
	if err != nil {
		t.Fatal(err)
	}
	m = manage.New(s)
	r, _ = pools.Of(s)
	const bs = 1 << blockmap.MinBlockShift
	if _, err := m.CreateVolume(ctx, "v", 8*bs, blockmap.MinBlockShift); err != nil {
		t.Fatal(err)
	}
	manage.WriteT(t, m, "v", 0, bytes.Repeat([]byte("s"), 2*bs))
	if _, err := m.Snapshot(ctx, "v", "v@1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Clone(ctx, "v@1", "c", 0); err != nil {
		t.Fatal(err)
	}
	manage.WriteT(t, m, "v", 4*bs, bytes.Repeat([]byte("v"), bs))
	manage.WriteT(t, m, "c", 6*bs, bytes.Repeat([]byte("c"), bs))
	want = map[string][]byte{}
	for _, n := range []string{"v", "v@1", "c"} {
		want[n] = manage.ReadT(t, m, n, 0, -1)
	}
	return m, r, ma, mb, want
}

func collect(t *testing.T, m *manage.Manager) gc.Report {
	t.Helper()
	time.Sleep(time.Millisecond) // every object older than the cutoff
	rep, err := m.GC(ctx, gc.WithShortGrace(gc.Options{Grace: time.Nanosecond}))
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func readAll(t *testing.T, m *manage.Manager, want map[string][]byte) {
	t.Helper()
	for n, w := range want {
		if got := manage.ReadT(t, m, n, 0, -1); !bytes.Equal(got, w) {
			t.Errorf("%s changed", n)
		}
	}
}

func countIn(t *testing.T, s objstore.Store) (n int) {
	s.List(ctx, "", func(objstore.Info) error { n++; return nil })
	return n
}

// TestPoolsMoveGarbage: after a move, gc deletes the source's copies that
// no volume placed in the source references, and keeps those that one
// does (the clone c shares v's snapshotted blocks); during a move it
// deletes no copy in either pool.
func TestPoolsMoveGarbage(t *testing.T) {
	m, _, a, b, want := moveFixture(t)
	collect(t, m)
	inA := countIn(t, a)
	crash := errors.New("crash")
	_, err := move.Move(ctx, m, "v", "b", move.Options{Hook: func(s string) error {
		if s == move.StepSwitch {
			return crash
		}
		return nil
	}})
	if !errors.Is(err, crash) {
		t.Fatal(err)
	}
	inB := countIn(t, b)
	if rep := collect(t, m); rep.Deleted.Content+rep.Deleted.Private != 0 || countIn(t, a) != inA || countIn(t, b) != inB {
		t.Fatalf("a collection during a move deleted blocks: %+v", rep.Deleted)
	}
	readAll(t, m, want)
	if _, err := move.Move(ctx, m, "v", "b", move.Options{}); err != nil {
		t.Fatal(err)
	}
	rep := collect(t, m)
	if rep.Deleted.Redundant == 0 || countIn(t, a) >= inA {
		t.Errorf("no source copy was collected after the move: %+v", rep.Deleted)
	}
	if countIn(t, b) != inB {
		t.Errorf("target copies deleted: %d → %d", inB, countIn(t, b))
	}
	readAll(t, m, want)
	// c, in a, still reads v's snapshotted blocks from a; moving it
	// frees a of everything.
	if _, err := move.Move(ctx, m, "c", "b", move.Options{}); err != nil {
		t.Fatal(err)
	}
	collect(t, m)
	if n := countIn(t, a); n != 0 {
		t.Errorf("%d copies left in a", n)
	}
	readAll(t, m, want)
	// A volume that moves back reads its blocks from the copies it
	// brings back.
	if _, err := move.Move(ctx, m, "v", "a", move.Options{}); err != nil {
		t.Fatal(err)
	}
	collect(t, m)
	readAll(t, m, want)
}

// TestPoolsGCDuringMoves: a collection runs at every step of moves of
// volumes between the pools, back and forth; nothing any volume reads is
// ever deleted.
func TestPoolsGCDuringMoves(t *testing.T) {
	m, _, _, _, want := moveFixture(t)
	steps := 0
	hook := func(step string) error {
		switch step {
		case move.StepReopen, move.StepCopy, move.StepSwitch, move.StepDone:
			steps++
			collect(t, m)
			readAll(t, m, want)
		}
		return nil
	}
	for i, mv := range []struct{ name, to string }{{"v", "b"}, {"c", "b"}, {"v", "a"}, {"c", "a"}, {"v", "b"}} {
		if _, err := move.Move(ctx, m, mv.name, mv.to, move.Options{Hook: hook}); err != nil {
			t.Fatalf("move %d: %v", i, err)
		}
		readAll(t, m, want)
	}
	if steps < 20 {
		t.Fatalf("only %d collections", steps)
	}
}

// TestPoolsMigrate: a migration from a to b, then a collection, leaves
// nothing in a, though a volume placed in b shared blocks with one placed
// in a by reference; everything reads the same.
func TestPoolsMigrate(t *testing.T) {
	m, _, a, _, want := moveFixture(t)
	if _, err := m.Clone(ctx, "v@1", "w", 0); err != nil {
		t.Fatal(err)
	}
	// w is placed in b: it reads v's blocks from a by reference.
	r, _ := pools.Of(m.Store)
	rec, _ := m.Lookup(ctx, "w")
	if err := r.Place(ctx, rec.ID, "b"); err != nil {
		t.Fatal(err)
	}
	want["w"] = manage.ReadT(t, m, "w", 0, -1)
	res, err := move.Migrate(ctx, m, "a", "b", move.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Moved) != 2 || res.Shared != 0 {
		t.Errorf("migrate: %+v", res)
	}
	collect(t, m)
	if n := countIn(t, a); n != 0 {
		t.Errorf("%d copies left in a", n)
	}
	readAll(t, m, want)
	// Rerun: nothing to do.
	res, err = move.Migrate(ctx, m, "a", "b", move.Options{}, nil)
	if err != nil || len(res.Moved) != 0 || res.Bytes != 0 {
		t.Errorf("rerun: %+v %v", res, err)
	}
}

// TestPoolsMigrateShared: blocks that a volume of another pool reads by
// reference from the pool being emptied are copied into its own pool.
func TestPoolsMigrateShared(t *testing.T) {
	m, r, a, _, want := moveFixture(t)
	// v and c move to b by hand; an image in a has a clone in b.
	for _, n := range []string{"v", "c"} {
		if _, err := move.Move(ctx, m, n, "b", move.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	const bs = 1 << blockmap.MinBlockShift
	if _, _, err := m.Import(ctx, bytes.NewReader(bytes.Repeat([]byte("i"), 4*bs)), 4*bs, "img", image.Options{BlockShift: blockmap.MinBlockShift}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Clone(ctx, "img", "ci", 0); err != nil {
		t.Fatal(err)
	}
	rec, _ := m.Lookup(ctx, "ci")
	if err := r.Place(ctx, rec.ID, "b"); err != nil {
		t.Fatal(err)
	}
	want["ci"] = manage.ReadT(t, m, "ci", 0, -1)
	// The image goes: ci, in b, is the only one reading its blocks, in a.
	if err := m.Remove(ctx, "img"); err != nil {
		t.Fatal(err)
	}
	res, err := move.Migrate(ctx, m, "a", "b", move.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Moved) != 0 || res.Shared != 1 { // four equal blocks: one content block
		t.Errorf("migrate: %+v", res)
	}
	collect(t, m)
	if n := countIn(t, a); n != 0 {
		t.Errorf("%d copies left in a", n)
	}
	readAll(t, m, want)
}
