package volume

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// checkIndexed fails unless every segment the stored head's write log
// index references exists in s.
func checkIndexed(t *testing.T, s objstore.Store, v *Volume, what string) {
	t.Helper()
	for name := range indexSegs(t, s, v.ID()) {
		if _, err := s.Stat(context.Background(), name); err != nil {
			t.Fatalf("%s: segment %s that the index references: %v", what, name, err)
		}
	}
}

// TestReviewIndexOldWriterLate: a writer with an index is taken over; the
// taker stores an index that references the old writer's segments. The
// old writer then writes, flushes, snapshots, checkpoints and closes
// late: none of it may delete what the taker's index references, nor
// change what the taker (or a reopen after it) reads.
func TestReviewIndexOldWriterLate(t *testing.T) {
	defer setSegCount(2)()
	ctx := context.Background()
	s := newOpStore()
	id, old := newSegVolume(t, s, 4)
	want := readAll(t, old)
	rng := rand.New(rand.NewPCG(11, 12))
	randomWrites(t, old, want, rng, 32*3+5)
	if err := old.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if storedHead(t, s, id).Index.IsZero() {
		t.Fatal("no index stored (test premise)")
	}
	taker := takeOver(t, s, id, want)
	checkIndexed(t, s, taker, "after the takeover")
	// The old writer wakes up: more writes (some into the blocks the
	// index holds), each step may fail, none may do harm.
	lost := bytes.Clone(want)
	for i := range 40 {
		p := pattern(4096, byte(100+i))
		off := rng.Int64N(int64(len(lost))/4096) * 4096
		if old.WriteAt(ctx, p, off, false) == nil {
			copy(lost[off:], p)
		}
		if i%8 == 7 {
			old.Flush(ctx)
		}
	}
	old.Checkpoint(ctx)
	old.Snapshot(ctx)
	old.Close(ctx)
	checkIndexed(t, s, taker, "after the old writer's late steps")
	if !bytes.Equal(readAll(t, taker), want) {
		t.Fatal("the taker reads the old writer's late writes")
	}
	randomWrites(t, taker, want, rng, 32*2)
	if err := taker.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, r), want) {
		t.Fatal("a reopen after the taker's close reads other bytes")
	}
}

// TestReviewIndexTrimHashResize: on a volume whose head names an index,
// a trim of whole indexed blocks, a partial trim, a hash and a resize
// each read right, and so does every reopen after a Close (a trimmed
// range never comes back from the index).
func TestReviewIndexTrimHashResize(t *testing.T) {
	defer setSegCount(2)()
	ctx := context.Background()
	s := newOpStore()
	id, v := newSegVolume(t, s, 4)
	want := readAll(t, v)
	rng := rand.New(rand.NewPCG(21, 22))
	reopen := func(what string) {
		t.Helper()
		if err := v.Close(ctx); err != nil {
			t.Fatalf("%s: close: %v", what, err)
		}
		r, err := Open(ctx, s, id, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, r), want) {
			t.Fatalf("%s: a reopen reads other bytes", what)
		}
		v = openLogged(t, s, id, OpenOptions{})
		if !bytes.Equal(readAll(t, v), want) {
			t.Fatalf("%s: a writable reopen reads other bytes", what)
		}
	}
	randomWrites(t, v, want, rng, 32*3+3)
	reopen("writes")
	if storedHead(t, s, id).Index.IsZero() {
		t.Fatal("no index stored (test premise)")
	}
	// A whole block trimmed, then flushed.
	if err := v.Trim(ctx, int64(bs), int64(bs)); err != nil {
		t.Fatal(err)
	}
	clear(want[bs : 2*bs])
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A crash now: the next writer takes over from the stored head.
	taker := takeOver(t, s, id, want)
	v.Discard(ctx)
	v = taker
	randomWrites(t, v, want, rng, 32*2)
	// Part of a block trimmed.
	if err := v.Trim(ctx, 2*int64(bs)+4096, 8192); err != nil {
		t.Fatal(err)
	}
	clear(want[2*bs+4096 : 2*bs+4096+8192])
	reopen("trims")
	randomWrites(t, v, want, rng, 40)
	if _, err := v.Hash(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, v), want) {
		t.Fatal("after a hash the volume reads other bytes")
	}
	randomWrites(t, v, want, rng, 40)
	reopen("hash")
	randomWrites(t, v, want, rng, 40)
	if err := v.Resize(ctx, uint64(3*bs)); err != nil {
		t.Fatal(err)
	}
	want = want[:3*bs]
	randomWrites(t, v, want, rng, 40)
	if err := v.Resize(ctx, uint64(5*bs)); err != nil {
		t.Fatal(err)
	}
	want = append(want, make([]byte, 2*bs)...)
	randomWrites(t, v, want, rng, 40)
	reopen("resizes")
	v.Close(ctx)
}

// stallCollect stalls the writer (its clock jumps by two hours) right
// after the create of a write log index returned, before the head swap
// after it, and meanwhile does what a collection with a grace of an hour
// does to that index: no head names it, and it is older than the grace,
// so it is deleted.
type stallCollect struct {
	*opStore
	id      blockmap.ID
	skew    *atomic.Int64
	stalled int
}

func (s *stallCollect) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	ver, err := s.opStore.Create(ctx, name, data)
	if n := blockmap.ParseName(name); err == nil && n.Kind == blockmap.IndexObject && n.Volume == s.id {
		s.skew.Add(int64(2 * time.Hour))
		s.opStore.Delete(ctx, name)
		s.stalled++
	}
	return ver, err
}

// TestReviewIndexStallBeforeSwapAtClose: a writer whose writes are all
// flushed closes: its checkpoint creates a write log index, and the
// writer stalls past the collector's grace before its head swap; the
// collector deletes the index, which no head names yet. The swap must
// not then store a head naming the deleted index (every open of the
// volume would fail): the flush must check, as it does for the objects
// of a cut older than MaxUnflushedAge.
func TestReviewIndexStallBeforeSwapAtClose(t *testing.T) {
	ctx := context.Background()
	var skew atomic.Int64
	s := &stallCollect{opStore: newOpStore(), skew: &skew}
	id, v := newSegVolume(t, s, 4)
	s.id = id
	v.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	want := readAll(t, v)
	randomWrites(t, v, want, rand.New(rand.NewPCG(41, 42)), 64)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cerr := v.Close(ctx)
	if s.stalled == 0 {
		t.Fatal("no index create before a head swap (test premise)")
	}
	h := storedHead(t, s, id)
	if !h.Index.IsZero() {
		if _, err := s.Stat(ctx, blockmap.IndexName(id, h.Index.Epoch, h.Index.Seq)); err != nil {
			t.Fatalf("the close (error %v) stored a head naming a write log index that is gone: %v", cerr, err)
		}
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatalf("open after the close (error %v): %v", cerr, err)
	}
	if !bytes.Equal(readAll(t, r), want) {
		t.Fatal("the volume reads other bytes")
	}
}
