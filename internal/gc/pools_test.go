package gc_test

import (
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
)

// TestPoolsSweepEachCopy: on a store of several pools, an old
// unreferenced copy of a block in one pool is garbage, and a young copy
// of the same block in another (an import in flight wrote it, its map is
// not stored yet) is not: the sweep deletes each copy on its own age.
func TestPoolsSweepEachCopy(t *testing.T) {
	clk := &clock{t: time.Unix(1_000_000, 0)}
	meta, young, old := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	for _, m := range []*objstore.Mem{meta, young, old} {
		m.Now = clk.now
	}
	s, err := pools.New(meta, []pools.Named{{Name: "new", Store: young}, {Name: "old", Store: old}})
	if err != nil {
		t.Fatal(err)
	}
	m := manage.New(s)
	m.Now = clk.now
	blk := blockmap.ContentName([32]byte{1})
	old.Put(ctx, blk, []byte("block"))
	clk.advance(gc.DefaultGrace + time.Hour)
	young.Put(ctx, blk, []byte("block"))
	rep, err := m.GC(ctx, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := young.Stat(ctx, blk); err != nil {
		t.Fatalf("the young copy was deleted with the old one: %v (%+v)", err, rep)
	}
	if _, err := old.Stat(ctx, blk); !objstore.IsNotExist(err) {
		t.Fatalf("the old unreferenced copy was kept: %v (%+v)", err, rep)
	}
	if rep.Deleted.Content != 1 || rep.Young != 1 {
		t.Fatalf("report %+v: want 1 content block deleted, 1 young", rep)
	}
}

// TestPoolsPlacementGarbage: a placement record outlives its volume only
// when a removal was interrupted; gc deletes it then, and keeps a live
// volume's.
func TestPoolsPlacementGarbage(t *testing.T) {
	clk := &clock{t: time.Unix(1_000_000, 0)}
	meta, a, b := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	for _, m := range []*objstore.Mem{meta, a, b} {
		m.Now = clk.now
	}
	s, err := pools.New(meta, []pools.Named{{Name: "a", Store: a}, {Name: "b", Store: b}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := pools.Of(s)
	m := manage.New(s)
	m.Now = clk.now
	live, err := m.CreateVolume(ctx, "live", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	gone := blockmap.NewID()
	for _, id := range []blockmap.ID{live.ID, gone} {
		if err := r.Place(ctx, id, "b"); err != nil {
			t.Fatal(err)
		}
	}
	clk.advance(gc.DefaultGrace + time.Hour)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := meta.Stat(ctx, pools.PlacementName(live.ID)); err != nil {
		t.Fatalf("a live volume's placement was deleted: %v", err)
	}
	if _, err := meta.Stat(ctx, pools.PlacementName(gone)); !objstore.IsNotExist(err) {
		t.Fatalf("the placement of a volume that is gone was kept: %v", err)
	}
}
