package pools

import (
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestPlacementStaleReadAfterNewEpoch: a read of a volume's record that
// began before a move swapped it (a lookup of an older epoch's block, or
// Placement) and ends after the writer's first block of the new epoch
// read the new record must not cache the old pool for that new epoch:
// the writer's next blocks of it would go to the source pool, which the
// move does not copy from again once it walked (docs/pools.md, step 2).
func TestPlacementStaleReadAfterNewEpoch(t *testing.T) {
	meta, a, b := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	g := &placeGate{Store: meta, read: make(chan struct{}), resume: make(chan struct{})}
	ws, err := New(g, []Named{{"a", a}, {"b", b}})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := Of(ws)
	ms, err := New(meta, []Named{{"a", a}, {"b", b}})
	if err != nil {
		t.Fatal(err)
	}
	mover, _ := Of(ms)
	id := blockmap.NewID()
	if err := mover.Place(ctx, id, "a"); err != nil {
		t.Fatal(err)
	}
	blk := func(epoch, seq uint64) string { return blockmap.PrivateEntry(id, epoch, seq).ObjectName() }
	done := make(chan error)
	go func() { _, _, err := w.Placement(ctx, id); done <- err }()
	<-g.read // it read the record before the swap
	g.read = nil
	_, v, err := mover.Record(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mover.SwapRecord(ctx, id, Record{Pool: "b", From: "a"}, v); err != nil {
		t.Fatal(err)
	}
	// The writer begins epoch 2 after the swap: its first block reads
	// the new record.
	if _, err := w.Create(ctx, blk(2, 1), []byte("x")); err != nil {
		t.Fatal(err)
	}
	close(g.resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := w.Create(ctx, blk(2, 2), []byte("y")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{blk(2, 1), blk(2, 2)} {
		if _, err := b.Stat(ctx, name); err != nil {
			t.Errorf("%s of the epoch begun after the swap is not in the target pool: %v", name, err)
		}
		if _, err := a.Stat(ctx, name); err == nil {
			t.Errorf("%s of the epoch begun after the swap went to the source pool", name)
		}
	}
}
