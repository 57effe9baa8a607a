package gc_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestSnapshotSealHoldLost: after a takeover a snapshot first seals the
// old writer's blocks into content blocks, deduplicating onto garbage
// that a collection may be deleting. The snapshot stalls past its hold
// just before the sealed map's head swap; a collection takes the hold for
// dead and deletes those content blocks; the snapshot wakes and swaps.
// The snapshot is refused (its hold was lost), but the volume must read
// its data: the sealed map is repaired from the old writer's blocks.
// (Before the seal checked its hold and kept what to repair from, the
// volume read as corrupt.)
func TestSnapshotSealHoldLost(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	rng := rand.New(rand.NewPCG(51, 52))
	data := garbageImage(t, m, rng, "g", 4)
	r, err := m.CreateVolume(ctx, "v", uint64(len(data)), 16)
	if err != nil {
		t.Fatal(err)
	}
	old, _, err := m.OpenWriter(ctx, r.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.WriteAt(ctx, data, 0, true); err != nil {
		t.Fatal(err)
	}
	// The writer is cut off: its lease is broken, so the next writer
	// takes over in a new epoch and must seal the old one's blocks.
	if _, err := m.Leases.Break(ctx, r.ID.String(), true); err != nil {
		t.Fatal(err)
	}
	defer old.Discard(ctx)
	clk.advance(2 * time.Hour)

	n := 0
	st := newStall(mem, func(op, name string) bool {
		if op == "swap" && strings.HasSuffix(name, "/head") {
			n++
		}
		return n == 2 // the first is the open's (new epoch), the second the seal's
	})
	errc := make(chan error, 1)
	go func() {
		_, err := managerOn(m, st).Snapshot(ctx, "v", "v@1")
		errc <- err
	}()
	select {
	case <-st.hit:
	case err := <-errc:
		t.Fatalf("the snapshot did not reach the stall (%v)", err)
	}
	clk.advance(pastLock)
	rep, err := m.GC(ctx, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted.Content == 0 {
		t.Fatal("the collection deleted no content block: the test does not test the stall")
	}
	close(st.release)
	if err := <-errc; !errors.Is(err, gc.ErrHoldLost) {
		t.Fatalf("snapshot whose hold was lost: %v", err)
	}
	if !bytes.Equal(manage.ReadT(t, m, "v", 0, -1), data) {
		t.Fatal("the volume does not read its data")
	}
	if _, err := m.Lookup(ctx, "v@1"); err == nil {
		t.Fatal("the snapshot whose hold was lost is in the catalog")
	}
	// Run again, it works.
	if _, err := m.Snapshot(ctx, "v", "v@1"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(manage.ReadT(t, m, "v@1", 0, -1), data) {
		t.Fatal("the snapshot does not read the data")
	}
}
