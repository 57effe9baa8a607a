package volume

import (
	"errors"
	"runtime"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestGeometryCap: create, clone and resize refuse a size over
// blockmap.MaxBlocks blocks, with the maximum in the message.
func TestGeometryCap(t *testing.T) {
	s := objstore.NewMem()
	max := blockmap.MaxSizeFor(SmallShift)
	if _, err := Create(ctx, s, CreateOptions{Size: max + 1, BlockShift: SmallShift}); !errors.Is(err, ErrBadSize) {
		t.Fatalf("create over the cap: %v", err)
	}
	id, err := Create(ctx, s, CreateOptions{Size: max, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	if err := v.Resize(ctx, max+1); !errors.Is(err, ErrBadSize) {
		t.Fatalf("resize over the cap: %v", err)
	}
	sid, err := v.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Clone(ctx, s, sid, max+1); !errors.Is(err, ErrBadSize) {
		t.Fatalf("clone over the cap: %v", err)
	}
	if _, err := CreateImage(ctx, s, max+1, SmallShift, nil); !errors.Is(err, ErrBadSize) {
		t.Fatalf("image over the cap: %v", err)
	}
}

// TestOpenHugeHeadRefused: a stored head claiming more blocks than the
// cap (written by hand: nothing in this program makes one) is refused as
// corrupt before its map is allocated, by every path that reads a map.
func TestOpenHugeHeadRefused(t *testing.T) {
	s := objstore.NewMem()
	for _, size := range []uint64{blockmap.MaxSizeFor(SmallShift) * 2, blockmap.MaxSize} {
		h := &blockmap.Head{ID: blockmap.NewID(), Size: size, BlockShift: SmallShift, Epoch: 1}
		if _, err := s.Create(ctx, blockmap.HeadName(h.ID), blockmap.EncodeHead(h)); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := Open(ctx, s, h.ID, OpenOptions{})
		_, err2 := Open(ctx, s, h.ID, OpenOptions{Writable: true})
		runtime.ReadMemStats(&after)
		for _, err := range []error{err, err2} {
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("size %d: %v", size, err)
			}
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 4<<20 {
			t.Errorf("size %d: opening allocated %d bytes", size, d)
		}
		// Remove deletes what cannot be opened; the collector reclaims
		// the rest.
		if err := Remove(ctx, s, h.ID); err != nil {
			t.Errorf("remove: %v", err)
		}
		if _, _, err := s.Get(ctx, blockmap.HeadName(h.ID)); !objstore.IsNotExist(err) {
			t.Errorf("head still there after remove: %v", err)
		}
	}
}
