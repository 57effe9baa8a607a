package pools

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// asyncPart models one RADOS pool's store since writes return once sent:
// each has its own writeMerger, so only the store a write went to knows
// that it failed. A WriteAt of a name in lose returns nil and writes
// nothing; that store's Sync and Settle of it then fail (sticky). Sync
// and Settle of a name it never wrote return nil at once (SyncWaiter).
type asyncPart struct {
	*objstore.Mem
	mu     sync.Mutex
	lose   map[string]bool
	failed map[string]error
}

var errOSD = errors.New("injected: operation failed at the OSD")

func newAsyncPart() *asyncPart {
	return &asyncPart{Mem: objstore.NewMem(), lose: map[string]bool{}, failed: map[string]error{}}
}

func (p *asyncPart) WriteAt(ctx context.Context, name string, b []byte, off int64) error {
	p.mu.Lock()
	if p.lose[name] {
		p.failed[name] = errOSD
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	return p.Mem.WriteAt(ctx, name, b, off)
}

func (p *asyncPart) Sync(ctx context.Context, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed[name]
}

func (p *asyncPart) Settle(ctx context.Context, name string) error { return p.Sync(ctx, name) }
func (p *asyncPart) SyncWaitsOnly() bool                           { return true }

// TestReview11bSettleAfterMoveSwapAndEviction: a writer creates a block
// of its epoch in pool a (its volume's pool) with an in-place write that
// returns once sent and then fails at the OSDs. Before the writer settles
// it (writeObject settles a created object before the map names it), a
// move in this process swaps the volume's placement record to pool b
// (SwapRecord: "this process sees the new pool at once"; the writer is
// asked for a new epoch only after that), and the router's cache of
// where names are (maxCached names, then cleared whole) is evicted by
// other traffic. Settle then routes the name by its placement: the block
// is in neither pool (its create failed), so target names pool b, whose
// store never saw the write, and Settle returns nil; the flush's Sync
// goes there too. The map then names an object that does not exist, and
// the write is reported durable.
func TestReview11bSettleAfterMoveSwapAndEviction(t *testing.T) {
	a, b := newAsyncPart(), newAsyncPart()
	s, err := New(objstore.NewMem(), []Named{{Name: "a", Store: a}, {Name: "b", Store: b}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := Of(s)
	id := blockmap.NewID()
	if err := r.Place(ctx, id, "a"); err != nil {
		t.Fatal(err)
	}
	x := blockmap.PrivateEntry(id, 1, 7).ObjectName()
	a.lose[x] = true
	rw, ok := objstore.AsRangeWriter(s)
	if !ok {
		t.Fatal("no RangeWriter")
	}
	if err := rw.WriteAt(ctx, x, []byte("data"), 0); err != nil {
		t.Fatal(err)
	}
	if len(a.failed) != 1 {
		t.Fatalf("the write did not go to pool a (failed there: %v)", a.failed)
	}
	st, ok := objstore.AsSettler(s)
	if !ok {
		t.Fatal("a router of settling pools does not settle")
	}
	if err := st.Settle(ctx, x); !errors.Is(err, errOSD) {
		t.Fatalf("Settle right after the write: %v, want its error", err)
	}
	// The move's record swap, in this process.
	_, ver, err := r.Record(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.SwapRecord(ctx, id, Record{Pool: "b", From: "a"}, ver); err != nil {
		t.Fatal(err)
	}
	// Other traffic: Settles of maxCached blocks of another volume fill
	// the cache of where names are, which is then cleared whole.
	other := blockmap.NewID()
	for i := range maxCached {
		if err := st.Settle(ctx, blockmap.PrivateEntry(other, 1, uint64(i)).ObjectName()); err != nil {
			t.Fatal(err)
		}
	}
	err = st.Settle(ctx, x)
	sy, _ := objstore.AsSyncer(s)
	serr := sy.Sync(ctx, x)
	if !errors.Is(err, errOSD) {
		_, statErr := s.Stat(ctx, x)
		t.Fatalf("Settle of a block whose create failed in pool a, after the volume's record was swapped to pool b "+
			"and the location cache evicted: %v (Sync: %v; the block: %v), want the write's error", err, serr, statErr)
	}
}
