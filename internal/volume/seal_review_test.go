package volume

import (
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestSealAfterTwoTakeoversFailingMidway: A writes (epoch 1), B takes
// over and writes one block (epoch 2), C takes over (epoch 3): the head
// records epoch 1 as the first unsealed one, and a seal must seal the
// blocks of both. C's first snapshot fails part way through sealing (a
// store error on the second content block): nothing is snapshotted, the
// head still records the unsealed epochs, and the map reads as before.
// The stalled writes of A and B then land; the next snapshot seals, and
// what it holds does not change when A and B write again. (Held.)
func TestSealAfterTwoTakeoversFailingMidway(t *testing.T) {
	f := objstore.NewFaulty(objstore.NewMem())
	a := NewTestVolume(t, f, 4*bs, SmallShift)
	for i := range 3 {
		a.WriteAt(ctx, fill(bs, byte(1+i)), int64(i)*bs, false)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := Open(ctx, f, a.ID(), OpenOptions{Writable: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WriteAt(ctx, fill(bs, 5), 1*bs, true); err != nil {
		t.Fatal(err)
	}
	c, err := Open(ctx, f, a.ID(), OpenOptions{Writable: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if h := c.Head(); h.Unsealed != 1 || h.Epoch != 3 {
		t.Fatalf("after two takeovers: unsealed from %d in epoch %d, want 1 in 3", h.Unsealed, h.Epoch)
	}
	want := append(append(fill(bs, 1), fill(bs, 5)...), append(fill(bs, 3), make([]byte, bs)...)...)
	wantBytes(t, c, 0, want, "after the takeovers")

	boom := errors.New("boom")
	f.Add(objstore.Rule{Op: objstore.OpCreate, Prefix: blockmap.ContentName([32]byte{})[:4], Skip: 1, Count: 1, Err: boom})
	if _, err := c.Snapshot(ctx); !errors.Is(err, boom) {
		t.Fatalf("snapshot with a failing seal: %v", err)
	}
	f.Reset()
	if h := c.Head(); h.Unsealed != 1 {
		t.Fatalf("after a failed seal: unsealed from %d, want 1", h.Unsealed)
	}
	if hd, _, err := ReadHead(ctx, f, c.ID()); err != nil || hd.Unsealed != 1 {
		t.Fatalf("stored head after a failed seal: %+v, %v", hd, err)
	}
	wantBytes(t, c, 0, want, "after a failed seal")
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// The stalled writes land.
	a.WriteAt(ctx, fill(bs, 9), 0, false)
	b.WriteAt(ctx, fill(bs, 8), 1*bs, false)
	// Until sealed, the live volume may show them; the snapshot holds
	// whatever it reads when taken.
	want = mustRead(t, c, 0, 4*bs)
	sid, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Head(); h.Unsealed != 0 {
		t.Fatalf("after the snapshot: unsealed from %d", h.Unsealed)
	}
	for i, e := range c.Entries() {
		if e.IsPrivate() && e.Epoch() < 3 || e.Base().Kind() == blockmap.Private && e.Base().Epoch() < 3 {
			t.Errorf("block %d still names an object of epoch %d", i, e.Epoch())
		}
	}
	a.WriteAt(ctx, fill(bs, 7), 0, false)
	a.WriteAt(ctx, fill(bs, 7), 2*bs, false)
	b.WriteAt(ctx, fill(bs, 6), 1*bs, false)
	snap, err := Open(ctx, f, sid, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, snap, 0, want, "snapshot after more stale writes")
	wantBytes(t, c, 0, want, "live volume after more stale writes")
}
