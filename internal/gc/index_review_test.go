package gc_test

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// TestReviewIndexGCLiveWriters: collections (with everything older than
// the grace) between the steps of writers with write log indexes: a
// writer open and idle, a takeover whose index references the old
// writer's segments, a snapshot and a clone of it, a reopen after Close.
// After each collection every handle and a fresh open read what was
// written.
func TestReviewIndexGCLiveWriters(t *testing.T) {
	s, m, clk, r := segVolume(t)
	rng := rand.New(rand.NewPCG(31, 32))
	size := int64(4 * bs)
	want := make([]byte, size)
	open := func(opts volume.OpenOptions) *volume.Volume {
		t.Helper()
		opts.Writable, opts.Log = true, true
		v, err := volume.Open(ctx, s, r.ID, opts)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	writes := func(v *volume.Volume, n int) {
		t.Helper()
		for i := 1; i <= n; i++ {
			off := rng.Int64N(size/4096) * 4096
			p := randBytes(rng, 4096)
			if err := v.WriteAt(ctx, p, off, false); err != nil {
				t.Fatal(err)
			}
			copy(want[off:], p)
			if i%4 == 0 {
				if err := v.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, vs ...*volume.Volume) {
		t.Helper()
		ro, err := volume.Open(ctx, s, r.ID, volume.OpenOptions{})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for i, v := range append(vs, ro) {
			got := make([]byte, size)
			if err := v.ReadAt(ctx, got, 0); err != nil {
				t.Fatalf("%s: handle %d: %v", what, i, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: handle %d reads other bytes", what, i)
			}
		}
	}
	collect := func(what string) {
		t.Helper()
		clk.advance(2 * time.Hour)
		if _, err := m.GC(ctx, gc.Options{}); err != nil {
			t.Fatalf("%s: gc: %v", what, err)
		}
	}
	v := open(volume.OpenOptions{})
	writes(v, 60)
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h, _, err := volume.ReadHead(ctx, s, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if h.Index.IsZero() {
		t.Fatal("no index after Close (test premise)")
	}
	collect("closed")
	check("closed")
	v = open(volume.OpenOptions{})
	writes(v, 30)
	collect("open, idle")
	check("open, idle", v)
	taker := open(volume.OpenOptions{NewEpoch: true})
	collect("taken over")
	check("taken over", taker)
	writes(taker, 30)
	collect("taker wrote")
	check("taker wrote", taker)
	if _, err := taker.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	writes(taker, 30)
	collect("after a snapshot")
	check("after a snapshot", taker)
	writes(taker, 30)
	if err := taker.Close(ctx); err != nil {
		t.Fatal(err)
	}
	v.Discard(ctx)
	collect("closed again")
	check("closed again")
}

// TestReviewIndexManagerSnapshotClone: the manager's snapshot of a closed
// volume whose head names a write log index, a clone of it, an export
// path's read-only open and a collection: the snapshot's head names no
// index, and the snapshot, the clone and the volume read what was
// written.
func TestReviewIndexManagerSnapshotClone(t *testing.T) {
	s, m, clk, r := segVolume(t)
	rng := rand.New(rand.NewPCG(51, 52))
	size := int64(4 * bs)
	v, err := volume.Open(ctx, s, r.ID, volume.OpenOptions{Writable: true, Log: true})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	for i := range 50 {
		off := rng.Int64N(size/4096) * 4096
		p := randBytes(rng, 4096)
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
		if i%8 == 7 {
			v.Flush(ctx)
		}
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := volume.ReadHead(ctx, s, r.ID); h == nil || h.Index.IsZero() {
		t.Fatal("no index after Close (test premise)")
	}
	snap, err := m.Snapshot(ctx, "vm", "snap")
	if err != nil {
		t.Fatal(err)
	}
	if h, _, err := volume.ReadHead(ctx, s, snap.ID); err != nil || !h.Index.IsZero() {
		t.Fatalf("the snapshot's head: %v, %v", h, err)
	}
	if _, err := m.Clone(ctx, "snap", "c", 0); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Hour)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vm", "snap", "c"} {
		h, _, err := m.Open(ctx, name, false)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := make([]byte, size)
		if err := h.ReadAt(ctx, got, 0); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s reads other bytes", name)
		}
		h.Close(ctx)
	}
}

// segVolume makes volume "vm" (4 blocks) on a store with no in-place
// writes (segOnly: writers log in segments and checkpoint into an
// index), managed by a manager on the test clock.
func segVolume(t *testing.T) (segOnly, *manage.Manager, *clock, *catalog.Record) {
	t.Helper()
	mem := objstore.NewMem()
	_, clk := setup(mem)
	s := segOnly{mem}
	m := manage.New(s)
	m.Now = clk.now
	if _, err := m.CreateVolume(ctx, "vm", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	r, err := m.Lookup(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	return s, m, clk, r
}
