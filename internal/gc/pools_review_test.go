package gc_test

import (
	"bytes"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
)

// TestReviewPoolsSweepKeepsReferenced: on a store of two pools, old
// copies that a map references are kept where a volume reading them is
// placed, or where the only copy is (a redundant copy goes): a
// block whose only copy is in the pool that is not first in lookup
// order, an image's block shared with an old copy in another pool (an
// import into "cold" shares what "fast" holds), a block with a copy in
// each pool, and the private blocks of a volume placed in "cold"; the
// placements of live volumes stay, that of a removed one goes.
func TestReviewPoolsSweepKeepsReferenced(t *testing.T) {
	clk := &clock{t: time.Unix(1_000_000, 0)}
	meta, fast, cold := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	for _, m := range []*objstore.Mem{meta, fast, cold} {
		m.Now = clk.now
	}
	s, err := pools.New(meta, []pools.Named{{Name: "fast", Store: fast}, {Name: "cold", Store: cold}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := pools.Of(s)
	const bs = 1 << 16
	img := append(bytes.Repeat([]byte("x"), bs), bytes.Repeat([]byte("y"), bs)...)
	x := blockmap.ContentName(sha256.Sum256(img[:bs]))
	y := blockmap.ContentName(sha256.Sum256(img[bs:]))
	fast.Put(ctx, x, img[:bs]) // before the import: shared, not copied
	view, err := r.View("cold")
	if err != nil {
		t.Fatal(err)
	}
	mv := manage.New(view)
	mv.Now = clk.now
	rec, _, err := mv.Import(ctx, bytes.NewReader(img), -1, "img", image.Options{BlockShift: 16})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cold.Stat(ctx, x); !objstore.IsNotExist(err) {
		t.Fatalf("the import copied a block another pool holds: %v", err)
	}
	if _, err := cold.Stat(ctx, y); err != nil {
		t.Fatalf("the import's new block is not in its pool: %v", err)
	}
	fast.Put(ctx, y, img[bs:]) // a second copy, in the other pool
	m := manage.New(s)
	m.Now = clk.now
	if err := r.Place(ctx, rec.ID, "cold"); err != nil {
		t.Fatal(err)
	}
	vm, err := m.Clone(ctx, "img", "vm", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Place(ctx, vm.ID, "cold"); err != nil {
		t.Fatal(err)
	}
	v, _, err := m.Open(ctx, "vm", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, []byte("private"), 10, true); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var priv []string
	cold.List(ctx, "vol/"+vm.ID.String()+"/d/", func(in objstore.Info) error { priv = append(priv, in.Name); return nil })
	if len(priv) == 0 {
		t.Fatal("the clone placed in cold wrote no private block there")
	}
	gone, err := m.CreateVolume(ctx, "gone", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	r.Place(ctx, gone.ID, "cold")
	if err := m.Remove(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	// An interrupted removal leaves the record: put it back.
	r.Place(ctx, gone.ID, "cold")
	clk.advance(gc.DefaultGrace + time.Hour)
	rep, err := m.GC(ctx, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		s    objstore.Store
		name string
	}{{fast, x}, {cold, y}, {cold, priv[0]}, {meta, pools.PlacementName(rec.ID)}, {meta, pools.PlacementName(vm.ID)}} {
		if _, err := c.s.Stat(ctx, c.name); err != nil {
			t.Errorf("gc deleted referenced %s: %v (%+v)", c.name, err, rep)
		}
	}
	// y's copy in fast is redundant: every volume that reads y is placed
	// in cold, which holds a copy (docs/pools.md, gc).
	if _, err := fast.Stat(ctx, y); !objstore.IsNotExist(err) || rep.Deleted.Redundant != 1 {
		t.Errorf("the redundant copy of %s in fast: %v, %d redundant copies deleted; want it deleted, 1", y, err, rep.Deleted.Redundant)
	}
	if _, err := meta.Stat(ctx, pools.PlacementName(gone.ID)); !objstore.IsNotExist(err) {
		t.Errorf("the placement of a removed volume was kept: %v", err)
	}
	for _, name := range []string{"img", "vm"} {
		v, _, err := m.Open(ctx, name, false)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(img))
		if err := v.ReadAt(ctx, got, 0); err != nil {
			t.Fatalf("%s after gc: %v", name, err)
		}
		want := img
		if name == "vm" {
			want = append([]byte(nil), img...)
			copy(want[10:], "private")
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s after gc reads other bytes", name)
		}
		v.Close(ctx)
	}
}

// TestReviewPoolsFormerSingleStore: a store that used to be one backend
// becomes a pools store whose metadata backend is also a pool ("old",
// listed second) and whose default pool is new: its volume and image read
// as before, new private blocks go to the new pool, and a collection
// deletes nothing referenced in either (each part lists only its own
// names, so no object is judged twice), and an unreferenced old block.
func TestReviewPoolsFormerSingleStore(t *testing.T) {
	clk := &clock{t: time.Unix(1_000_000, 0)}
	single, fresh := objstore.NewMem(), objstore.NewMem()
	single.Now, fresh.Now = clk.now, clk.now
	m := manage.New(single)
	m.Now = clk.now
	const bs = 1 << 16
	img := bytes.Repeat([]byte("i"), 2*bs)
	if _, _, err := m.Import(ctx, bytes.NewReader(img), -1, "img", image.Options{BlockShift: 16}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Clone(ctx, "img", "vm", 0); err != nil {
		t.Fatal(err)
	}
	v, _, err := m.Open(ctx, "vm", true)
	if err != nil {
		t.Fatal(err)
	}
	v.WriteAt(ctx, []byte("before"), 0, true)
	v.Close(ctx)
	junk := blockmap.ContentName(sha256.Sum256([]byte("junk")))
	single.Put(ctx, junk, []byte("junk"))

	s, err := pools.New(single, []pools.Named{{Name: "new", Store: fresh}, {Name: "old", Store: single}})
	if err != nil {
		t.Fatal(err)
	}
	m = manage.New(s)
	m.Now = clk.now
	v, _, err = m.Open(ctx, "vm", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, []byte("after"), bs, true); err != nil {
		t.Fatal(err)
	}
	v.Close(ctx)
	n := 0
	fresh.List(ctx, "vol/", func(objstore.Info) error { n++; return nil })
	if n == 0 {
		t.Fatal("no new private block in the new pool")
	}
	clk.advance(gc.DefaultGrace + time.Hour)
	rep, err := m.GC(ctx, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted.Objects == 0 || rep.Failed != 0 {
		t.Fatalf("report %+v: want the junk block deleted, nothing failed", rep)
	}
	if _, err := single.Stat(ctx, junk); !objstore.IsNotExist(err) {
		t.Fatalf("an unreferenced old block was kept: %v", err)
	}
	want := append([]byte(nil), img...)
	copy(want, "before")
	copy(want[bs:], "after")
	v, _, err = m.Open(ctx, "vm", false)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := v.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("vm after gc: %v (same bytes: %v; report %+v)", err, bytes.Equal(got, want), rep)
	}
	v.Close(ctx)
}
