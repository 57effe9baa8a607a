package pools

import (
	"bytes"
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// twoProcesses returns two routers on the same backends (two processes
// sharing a store), with pools a (default) and b.
func twoProcesses(t *testing.T) (*Router, *Router, objstore.Store, objstore.Store) {
	meta, a, b := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	open := func() *Router {
		s, err := New(meta, []Named{{"a", a}, {"b", b}})
		if err != nil {
			t.Fatal(err)
		}
		r, _ := Of(s)
		return r
	}
	return open(), open(), a, b
}

// TestPlacementRereadAtNewEpoch: a process that cached a volume's
// placement sees a move's new record for the volume's next epoch, not
// before (the writer reopens in a new epoch after the record changed).
func TestPlacementRereadAtNewEpoch(t *testing.T) {
	w, mover, a, b := twoProcesses(t)
	id := blockmap.NewID()
	blk := func(epoch, seq uint64) string { return blockmap.PrivateEntry(id, epoch, seq).ObjectName() }
	if _, err := w.Create(ctx, blk(1, 1), []byte("x")); err != nil {
		t.Fatal(err)
	}
	rec, v, err := mover.Record(ctx, id)
	if err != nil || v != 0 || rec != (Record{}) {
		t.Fatalf("no record: %+v %v %v", rec, v, err)
	}
	if _, err := mover.SwapRecord(ctx, id, Record{Pool: "b", From: "a"}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := mover.SwapRecord(ctx, id, Record{Pool: "b"}, 0); !errors.Is(err, objstore.ErrConflict) {
		t.Fatalf("swap of a stale version: %v", err)
	}
	if _, err := w.Create(ctx, blk(1, 2), []byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Create(ctx, blk(2, 1), []byte("z")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]objstore.Store{blk(1, 1): a, blk(1, 2): a, blk(2, 1): b} {
		if _, err := want.Stat(ctx, name); err != nil {
			t.Errorf("%s not in its pool: %v", name, err)
		}
	}
	if p, rec, err := w.Placement(ctx, id); p != "b" || !rec || err != nil {
		t.Errorf("placement %q %v %v", p, rec, err)
	}
	if _, err := mover.SwapRecord(ctx, id, Record{Pool: "c"}, 0); !errors.Is(err, ErrNoPool) {
		t.Errorf("unknown pool: %v", err)
	}
}

// TestCopyTo copies a block once, from whichever pool holds it.
func TestCopyTo(t *testing.T) {
	r, _, a, b := twoProcesses(t)
	sum := [32]byte{1}
	name := blockmap.ContentName(sum)
	if _, err := r.CopyTo(ctx, name, "b"); !objstore.IsNotExist(err) {
		t.Fatalf("copy of nothing: %v", err)
	}
	a.Put(ctx, name, []byte("data"))
	n, err := r.CopyTo(ctx, name, "b")
	if err != nil || n != 4 {
		t.Fatalf("copy: %d %v", n, err)
	}
	if got, _, _ := b.Get(ctx, name); !bytes.Equal(got, []byte("data")) {
		t.Fatalf("copied %q", got)
	}
	if n, err := r.CopyTo(ctx, name, "b"); err != nil || n != 0 {
		t.Fatalf("second copy: %d %v", n, err)
	}
	if ok, err := r.Holds(ctx, "a", name); !ok || err != nil {
		t.Fatalf("holds: %v %v", ok, err)
	}
}
