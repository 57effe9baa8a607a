package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// setIdxMaxExts sets the cap on a write log index's extents.
func setIdxMaxExts(n int) func() {
	old := idxMaxExts
	idxMaxExts = n
	return func() { idxMaxExts = old }
}

// storedHead reads volume id's head from s.
func storedHead(t *testing.T, s objstore.Store, id blockmap.ID) *blockmap.Head {
	t.Helper()
	h, _, err := ReadHead(context.Background(), s, id)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// indexSegs returns the segments that the write log index of volume id's
// stored head references (none without an index).
func indexSegs(t *testing.T, s objstore.Store, id blockmap.ID) map[string]bool {
	t.Helper()
	h := storedHead(t, s, id)
	refs := map[string]bool{}
	if h.Index.IsZero() {
		return refs
	}
	b, _, err := s.Get(context.Background(), blockmap.IndexName(id, h.Index.Epoch, h.Index.Seq))
	if err != nil {
		t.Fatal(err)
	}
	x, err := blockmap.DecodeIndex(b, id, h.Index)
	if err != nil {
		t.Fatal(err)
	}
	for _, sg := range x.Segs {
		refs[sg.Name(id)] = true
	}
	return refs
}

// countIndexes counts volume id's write log index objects in s.
func countIndexes(t *testing.T, s objstore.Store, id blockmap.ID) int {
	t.Helper()
	n := 0
	err := s.List(context.Background(), fmt.Sprintf("vol/%s/x/", id), func(in objstore.Info) error {
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// randomWrites writes n random 4 KiB pieces over v (returning what v
// should read), flushing every 32.
func randomWrites(t *testing.T, v *Volume, want []byte, rng *rand.Rand, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 1; i <= n; i++ {
		off := rng.Int64N(int64(len(want))/4096) * 4096
		p := make([]byte, 4096)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
		if i%32 == 0 {
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestSegLogIndexBytesPut (issue 13): N random 4 KiB writes with a flush
// every 32, then Close, write at most 1.1 bytes per byte plus the write
// log index: Close stores the index, not the blocks the log touched
// (before: a 4 MiB PUT per touched block at Close, 8x here).
func TestSegLogIndexBytesPut(t *testing.T) {
	const (
		shift  = 22
		blocks = 16
		writes = 2048
	)
	ctx := context.Background()
	s := newOpStore()
	id, err := Create(ctx, s, CreateOptions{Size: blocks << shift, BlockShift: shift})
	if err != nil {
		t.Fatal(err)
	}
	v := openLogged(t, s, id, OpenOptions{})
	want := make([]byte, blocks<<shift)
	s.take()
	randomWrites(t, v, want, rand.New(rand.NewPCG(13, 14)), writes)
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ops, n := s.take()
	h := storedHead(t, s, id)
	var idx []byte
	if !h.Index.IsZero() {
		if idx, _, err = s.Store.Get(ctx, blockmap.IndexName(id, h.Index.Epoch, h.Index.Seq)); err != nil {
			t.Fatal(err)
		}
	}
	data := int64(writes * 4096)
	t.Logf("%d random 4 KiB writes, a flush every 32, and Close: %d bytes written (%.3f per byte; the index %d bytes), %v",
		writes, n, float64(n)/float64(data), len(idx), ops)
	if float64(n) > 1.1*float64(data)+float64(len(idx)) {
		t.Errorf("%d bytes written for %d bytes of writes and an index of %d", n, data, len(idx))
	}
	if h.Index.IsZero() || len(h.Logs) != 0 {
		t.Fatalf("the closed head names index %+v and logs %v", h.Index, h.Logs)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, r), want) {
		t.Fatal("a read-only open after Close reads other bytes than were written")
	}
}

// TestSegLogIndexReopen: a closed volume's index is loaded by every open
// (read-only, and writable, which writes over it and closes again), and
// the logs over it replay; no block is written by Close.
func TestSegLogIndexReopen(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	id, v := newSegVolume(t, s, 8)
	want := readAll(t, v)
	rng := rand.New(rand.NewPCG(5, 6))
	for round := range 3 {
		s.take()
		randomWrites(t, v, want, rng, 100)
		if err := v.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if ops, _ := s.take(); ops["put"] != 0 {
			t.Fatalf("round %d: %d block puts (%v)", round, ops["put"], ops)
		}
		if storedHead(t, s, id).Index.IsZero() {
			t.Fatalf("round %d: the closed head names no index", round)
		}
		// What the index no longer references was deleted.
		refs := indexSegs(t, s, id)
		for _, name := range segments(t, s) {
			if !refs[name] {
				t.Fatalf("round %d: segment %s left, not in the index", round, name)
			}
		}
		if n := countIndexes(t, s, id); n != 1 {
			t.Fatalf("round %d: %d index objects", round, n)
		}
		r, err := Open(ctx, s, id, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, r), want) {
			t.Fatalf("round %d: a read-only open reads other bytes", round)
		}
		v = openLogged(t, s, id, OpenOptions{})
		if !bytes.Equal(readAll(t, v), want) {
			t.Fatalf("round %d: a writable open reads other bytes", round)
		}
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSegLogIndexCheckpoints: checkpoints at the segment count store an
// index (no block put), and a follower and a writer opened after a crash
// read the index and the log over it.
func TestSegLogIndexCheckpoints(t *testing.T) {
	defer setSegCount(3)()
	ctx := context.Background()
	s := newOpStore()
	id, v := newSegVolume(t, s, 8)
	want := readAll(t, v)
	f, err := Open(ctx, s, id, OpenOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	s.take()
	randomWrites(t, v, want, rand.New(rand.NewPCG(7, 8)), 32*10+5)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if ops, _ := s.take(); ops["put"] != 0 {
		t.Fatalf("%d block puts (%v)", ops["put"], ops)
	}
	h := storedHead(t, s, id)
	if h.Index.IsZero() || len(h.Logs) != 1 {
		t.Fatalf("head: index %+v, logs %v", h.Index, h.Logs)
	}
	if !bytes.Equal(readAll(t, f), want) {
		t.Fatal("the follower reads other bytes")
	}
	// A crash: the writer is gone; the next one takes over.
	taker := takeOver(t, s, id, want)
	if err := taker.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSegLogIndexTakeover: a writer taken over with an index and a log
// over it: the taker loads the index, replays and fences the old log, and
// stores a head whose index holds the old log's extents, with no block
// write; the old writer's later flush fails.
func TestSegLogIndexTakeover(t *testing.T) {
	defer setSegCount(2)()
	ctx := context.Background()
	s := newOpStore()
	id, old := newSegVolume(t, s, 4)
	want := readAll(t, old)
	randomWrites(t, old, want, rand.New(rand.NewPCG(9, 9)), 32*3) // an index checkpoint
	if storedHead(t, s, id).Index.IsZero() {
		t.Fatal("no index stored")
	}
	if err := old.WriteAt(ctx, pattern(4096, 42), 8192, false); err != nil {
		t.Fatal(err)
	}
	if err := old.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	copy(want[8192:], pattern(4096, 42))
	s.take()
	taker := takeOver(t, s, id, want)
	if ops, _ := s.take(); ops["put"] != 0 {
		t.Fatalf("the takeover put %d blocks (%v)", ops["put"], ops)
	}
	h := storedHead(t, s, id)
	if h.Index.IsZero() || len(h.Logs) != 1 || h.Logs[0].Epoch != h.Epoch {
		t.Fatalf("the taker's head: index %+v, logs %v (epoch %d)", h.Index, h.Logs, h.Epoch)
	}
	if err := old.WriteAt(ctx, pattern(4096, 43), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := old.Flush(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("the old writer's flush after the takeover: %v, want ErrFenced", err)
	}
	if !bytes.Equal(readAll(t, taker), want) {
		t.Fatal("the taker reads the old writer's late write")
	}
	if err := taker.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSegLogIndexSnapshot: a snapshot after index checkpoints
// materializes the index (block puts): the snapshot's head, and the
// volume's after it, name none, and both read what was written.
func TestSegLogIndexSnapshot(t *testing.T) {
	defer setSegCount(2)()
	ctx := context.Background()
	s := newOpStore()
	id, v := newSegVolume(t, s, 4)
	want := readAll(t, v)
	randomWrites(t, v, want, rand.New(rand.NewPCG(3, 3)), 32*3+7)
	if storedHead(t, s, id).Index.IsZero() {
		t.Fatal("no index stored")
	}
	snap, err := v.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h := storedHead(t, s, id); !h.Index.IsZero() {
		t.Fatalf("the volume's head names index %+v after a snapshot", h.Index)
	}
	if h := storedHead(t, s, snap); !h.Index.IsZero() || len(h.Logs) != 0 {
		t.Fatalf("the snapshot's head names index %+v, logs %v", h.Index, h.Logs)
	}
	r, err := Open(ctx, s, snap, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, r), want) {
		t.Fatal("the snapshot reads other bytes")
	}
	snapped := bytes.Clone(want)
	randomWrites(t, v, want, rand.New(rand.NewPCG(4, 4)), 40)
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, r), snapped) {
		t.Fatal("the snapshot changed with later writes")
	}
	w, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, w), want) {
		t.Fatal("the volume reads other bytes")
	}
}

// TestSegLogIndexFallback: a checkpoint whose index would pass its cap
// materializes (block puts) and drops the index; the volume reads right.
func TestSegLogIndexFallback(t *testing.T) {
	defer setIdxMaxExts(8)()
	ctx := context.Background()
	s := newOpStore()
	id, v := newSegVolume(t, s, 4)
	want := readAll(t, v)
	randomWrites(t, v, want, rand.New(rand.NewPCG(1, 2)), 4)
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if storedHead(t, s, id).Index.IsZero() {
		t.Fatal("4 extents: no index")
	}
	v = openLogged(t, s, id, OpenOptions{})
	s.take()
	randomWrites(t, v, want, rand.New(rand.NewPCG(1, 3)), 40)
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if ops, _ := s.take(); ops["put"] == 0 {
		t.Fatalf("past the cap: no block put (%v)", ops)
	}
	h := storedHead(t, s, id)
	if !h.Index.IsZero() {
		t.Fatalf("past the cap: the head names index %+v", h.Index)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, r), want) {
		t.Fatal("reads other bytes after the fallback")
	}
	var left []string
	s.List(ctx, fmt.Sprintf("vol/%s/x/", id), func(in objstore.Info) error {
		left = append(left, in.Name)
		return nil
	})
	if len(left) != 0 {
		t.Fatalf("index objects left after the fallback: %v", left)
	}
}

// TestSegLogIndexGarbageBound: overwrites keep whole segments alive; once
// the segments an index would reference hold more than twice its live
// bytes plus the log's bound, the checkpoint materializes (block puts)
// and drops the index and those segments.
func TestSegLogIndexGarbageBound(t *testing.T) {
	defer setLogBound(4096)() // a segmented log's bound: 64 KiB
	ctx := context.Background()
	s := newOpStore()
	id, v := newSegVolume(t, s, 2)
	want := readAll(t, v)
	s.take()
	indexed := false
	for i := range 40 {
		// Two writes per flush, one kept live: each segment holds a
		// record that stays referenced.
		p, q := pattern(4096, byte(i)), pattern(512, byte(100+i))
		if err := v.WriteAt(ctx, p, 0, false); err != nil {
			t.Fatal(err)
		}
		if err := v.WriteAt(ctx, q, int64(bs+i*512), false); err != nil {
			t.Fatal(err)
		}
		copy(want, p)
		copy(want[bs+i*512:], q)
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		indexed = indexed || !storedHead(t, s, id).Index.IsZero()
	}
	if !indexed {
		t.Fatal("no index was stored")
	}
	if ops, _ := s.take(); ops["put"] == 0 {
		t.Fatalf("no checkpoint materialized past the garbage bound (%v)", ops)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, r), want) {
		t.Fatal("reads other bytes")
	}
}

// indexOrder checks, at each head swap that names a write log index,
// that the index is stored already, and at each index create that the
// segments it references are.
type indexOrder struct {
	*opStore
	t       *testing.T
	id      blockmap.ID
	swaps   int
	creates int
}

func (s *indexOrder) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	if name == blockmap.HeadName(s.id) {
		h, err := blockmap.DecodeHead(data)
		if err != nil {
			s.t.Error(err)
		} else if !h.Index.IsZero() {
			s.swaps++
			if _, err := s.opStore.Store.Stat(ctx, blockmap.IndexName(s.id, h.Index.Epoch, h.Index.Seq)); err != nil {
				s.t.Errorf("a head swap names index %+v, not stored: %v", h.Index, err)
			}
		}
	}
	return s.opStore.Swap(ctx, name, data, old)
}

func (s *indexOrder) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if n := blockmap.ParseName(name); n.Kind == blockmap.IndexObject && n.Volume == s.id {
		s.creates++
		var ref blockmap.IndexRef
		fmt.Sscanf(strings.TrimPrefix(name, fmt.Sprintf("vol/%s/x/", s.id)), "%x-%x", &ref.Epoch, &ref.Seq)
		x, err := blockmap.DecodeIndex(data, s.id, ref)
		if err != nil {
			s.t.Error(err)
		} else {
			for _, sg := range x.Segs {
				if _, err := s.opStore.Store.Stat(ctx, sg.Name(s.id)); err != nil {
					s.t.Errorf("index %s references segment %s, not stored: %v", name, sg.Name(s.id), err)
				}
			}
		}
	}
	return s.opStore.Create(ctx, name, data)
}

// TestSegLogIndexStoredBeforeHead: every head swap that names a write log
// index comes after the index's create, and every index create after the
// segments it references (writing the head first, or the buffered
// records' segment after the index, fails it).
func TestSegLogIndexStoredBeforeHead(t *testing.T) {
	defer setSegCount(2)()
	ctx := context.Background()
	s := &indexOrder{opStore: newOpStore(), t: t}
	id, v := newSegVolume(t, s, 4)
	s.id = id
	want := readAll(t, v)
	randomWrites(t, v, want, rand.New(rand.NewPCG(21, 22)), 32*5+9) // checkpoints at the segment count
	if err := v.Close(ctx); err != nil {                            // and at Close, with records buffered
		t.Fatal(err)
	}
	if s.swaps < 2 || s.creates < 2 {
		t.Fatalf("%d head swaps naming an index, %d index creates", s.swaps, s.creates)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, r), want) {
		t.Fatal("reads other bytes")
	}
}

// TestSegLogIndexRemove: removing a closed volume whose head names a
// write log index deletes the index and the segments it references.
func TestSegLogIndexRemove(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	id, v := newSegVolume(t, s, 2)
	want := readAll(t, v)
	randomWrites(t, v, want, rand.New(rand.NewPCG(2, 2)), 40)
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if len(segments(t, s)) == 0 || countIndexes(t, s, id) != 1 {
		t.Fatalf("after Close: segments %v, %d indexes", segments(t, s), countIndexes(t, s, id))
	}
	if err := Remove(ctx, s, id); err != nil {
		t.Fatal(err)
	}
	if left := segments(t, s); len(left) != 0 || countIndexes(t, s, id) != 0 {
		t.Fatalf("after Remove: segments %v, %d indexes", left, countIndexes(t, s, id))
	}
}

// partsStore is an opStore that says it is made of several backends
// (objstore.Parter), as a pools:// store is.
type partsStore struct{ *opStore }

func (s partsStore) Parts() []objstore.Store { return []objstore.Store{s.opStore} }

// TestSegLogIndexOnPools: on a store of several backends a segmented
// log's checkpoint writes blocks, not an index, unless the store says it
// keeps write log indexes (objstore.LogIndexKeeper: a pools:// store
// with logs = "metadata"): the log's segments and index are kept in the
// metadata backend, so an index keeps the volume's data out of the pool
// it is placed in (e2e TestPoolsServe: the clone's writes reach its pool;
// TestSplitServe both ways). Either way what was written reads back.
func TestSegLogIndexOnPools(t *testing.T) {
	for _, kept := range []bool{false, true} {
		t.Run(fmt.Sprint("kept=", kept), func(t *testing.T) {
			ctx := context.Background()
			var s interface {
				objstore.Store
				take() (map[string]int, int64)
			} = partsStore{newOpStore()}
			if kept {
				s = keepsIndexStore{partsStore{newOpStore()}}
			}
			id, v := newSegVolume(t, s, 8)
			want := readAll(t, v)
			randomWrites(t, v, want, rand.New(rand.NewPCG(7, 8)), 100)
			s.take()
			if err := v.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if ops, _ := s.take(); (ops["put"] == 0) != kept {
				t.Fatalf("the close's operations %v: want blocks put only without the index", ops)
			}
			if h := storedHead(t, s, id); h.Index.IsZero() == kept {
				t.Fatalf("the closed head names index %+v", h.Index)
			}
			r, err := Open(ctx, s, id, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close(ctx)
			if !bytes.Equal(readAll(t, r), want) {
				t.Fatal("read back differs")
			}
		})
	}
}

// keepsIndexStore is a partsStore that keeps write log indexes
// (objstore.LogIndexKeeper), as a pools:// store with logs = "metadata".
type keepsIndexStore struct{ partsStore }

func (keepsIndexStore) KeepsLogIndex() bool { return true }
