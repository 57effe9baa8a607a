package volume

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// inflightStore is asyncFailStore (RADOS since writes return once sent)
// with writes that stay in flight: the next WriteAt of an object hold
// matches returns nil (sent) but lands only when land is called, as an
// operation the OSDs have not acknowledged yet (a slow or peering
// placement group) lands whenever it completes, whoever waits for it.
// Sync of such an object waits for it to land, or for ctx (as
// writeMerger.Sync does: a Sync whose ctx ends returns ctx's error and
// leaves the operation in flight).
type inflightStore struct {
	*asyncFailStore

	hmu    sync.Mutex
	hold   func(name string) bool
	held   []heldWrite
	landed chan struct{} // closed by land
}

type heldWrite struct {
	name string
	p    []byte
	off  int64
}

func newInflightStore() *inflightStore {
	return &inflightStore{asyncFailStore: newAsyncFailStore(), landed: make(chan struct{})}
}

func (s *inflightStore) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	s.hmu.Lock()
	if s.hold != nil && s.hold(name) {
		s.hold = nil
		s.held = append(s.held, heldWrite{name, bytes.Clone(p), off})
		s.hmu.Unlock()
		return nil
	}
	s.hmu.Unlock()
	return s.asyncFailStore.WriteAt(ctx, name, p, off)
}

// inFlight reports how many held writes have not landed.
func (s *inflightStore) inFlight() int {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	return len(s.held)
}

// holdNext makes the next WriteAt of an object match names return nil
// and land only at land() (see hold).
func (s *inflightStore) holdNext(match func(name string) bool) {
	s.hmu.Lock()
	s.hold = match
	s.hmu.Unlock()
}

func (s *inflightStore) pending(name string) (bool, chan struct{}) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	for _, w := range s.held {
		if w.name == name {
			return true, s.landed
		}
	}
	return false, nil
}

// land applies the held writes, late.
func (s *inflightStore) land() {
	s.hmu.Lock()
	held := s.held
	s.held = nil
	close(s.landed)
	s.landed = make(chan struct{})
	s.hmu.Unlock()
	for _, w := range held {
		if err := s.mem.WriteAt(context.Background(), w.name, w.p, w.off); err != nil {
			panic(err)
		}
	}
}

func (s *inflightStore) Sync(ctx context.Context, name string) error {
	if ok, ch := s.pending(name); ok {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.asyncFailStore.Sync(ctx, name)
}

func (s *inflightStore) Settle(ctx context.Context, name string) error { return s.Sync(ctx, name) }

var (
	_ objstore.RangeWriter = (*inflightStore)(nil)
	_ objstore.Syncer      = (*inflightStore)(nil)
	_ objstore.Settler     = (*inflightStore)(nil)
	_ objstore.SyncWaiter  = (*inflightStore)(nil)
)

// TestReview11bCloseReleasesWithWriteInFlight: two in-place writes into
// two owned blocks return (sent); the one to block 0 fails at the OSDs,
// the one to block 1 is still in flight. Close's flush syncs both
// objects in an errgroup: block 0's Sync failed at once, which cancelled
// block 1's Sync, so the flush returned while block 1's write was still
// in flight, and Close handed OnClose (the lease's release: package
// manage) the flush's error without ErrUnsettled (fixed: the flush waits
// for every Sync, and a failed final flush on such a store is unsettled). A lease released so is a clean
// release: the next writer opens with Handover, in the same epoch, and
// writes block 1 in place; the first writer's write then lands late over
// the next writer's flushed write. OpenOptions.OnClose promises
// ErrUnsettled "if a data write may still land".
func TestReview11bCloseReleasesWithWriteInFlight(t *testing.T) {
	s := newInflightStore()
	id, err := Create(ctx, s, CreateOptions{Size: 2 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	type closed struct {
		err      error
		inFlight int
	}
	var at *closed
	v, err := Open(ctx, s, id, OpenOptions{Writable: true, OnClose: func(ctx context.Context, flushErr error) error {
		at = &closed{flushErr, s.inFlight()}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, pattern(2*bs, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	es := v.Entries()
	o0, o1 := es[0].ObjectName(), es[1].ObjectName()
	if es[0].Kind() == blockmap.Zero || es[1].Kind() == blockmap.Zero || o0 == o1 {
		t.Fatalf("blocks not allocated apart: %v", es)
	}
	s.loseNext(named(o0))
	s.holdNext(named(o1))
	if err := v.WriteAt(ctx, pattern(4096, 0xA0), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, pattern(4096, 0xA1), bs, false); err != nil {
		t.Fatal(err)
	}
	if len(s.lostNames()) != 1 || s.inFlight() != 1 {
		t.Fatalf("lost %v, in flight %d: want one each", s.lostNames(), s.inFlight())
	}
	// Close's flush now waits for every Sync, the failed one's included:
	// the write in flight lands a moment later.
	go func() {
		time.Sleep(100 * time.Millisecond)
		s.land()
	}()
	cerr := v.Close(ctx)
	if cerr == nil {
		t.Fatal("Close returned nil after a write that failed at the OSDs")
	}
	if at == nil {
		t.Fatal("OnClose did not run")
	}
	if !errors.Is(at.err, ErrUnsettled) {
		t.Fatalf("Close after a failed flush on a store whose writes land late handed OnClose %v, without ErrUnsettled", at.err)
	}
	t.Logf("Close: %v; OnClose got %v with %d write(s) in flight", cerr, at.err, at.inFlight)
	if at.inFlight > 0 && !errors.Is(at.err, ErrUnsettled) {
		// The consequence: a clean release, the next writer in the same
		// epoch (another process: a store of its own over the same
		// objects), and the late landing.
		b := otherProcess(s.asyncFailStore)
		v2, err := Open(ctx, b, id, OpenOptions{Writable: true, Handover: true})
		if err != nil {
			t.Fatal(err)
		}
		defer v2.Close(ctx)
		if err := v2.WriteAt(ctx, pattern(bs, 0xBB), bs, false); err != nil {
			t.Fatal(err)
		}
		if err := v2.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		e2 := v2.Entries()[1]
		s.land()
		got := make([]byte, 8)
		if err := v2.ReadAt(ctx, got, bs); err != nil {
			t.Fatal(err)
		}
		t.Fatalf("Close handed OnClose %v, without ErrUnsettled, while a write it returned for was still in flight: "+
			"a lease released so is released cleanly; the next writer (Handover, same epoch: block 1 in %s, in place: %v) "+
			"wrote and flushed bbbb..., and after the late landing its block reads %x", at.err, e2.ObjectName(), e2.ObjectName() == o1, got)
	}
}

// TestReview11bCloseTimeoutReleasesWithWriteInFlight: the same with no
// failed write at all: Close's flush waits for a write in flight until
// its ctx ends (a slow cluster), and Close hands OnClose the ctx's error
// without ErrUnsettled while the write is still in flight.
func TestReview11bCloseTimeoutReleasesWithWriteInFlight(t *testing.T) {
	s := newInflightStore()
	id, err := Create(ctx, s, CreateOptions{Size: 2 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	var onCloseErr error
	inFlight := -1
	v, err := Open(ctx, s, id, OpenOptions{Writable: true, OnClose: func(ctx context.Context, flushErr error) error {
		onCloseErr, inFlight = flushErr, s.inFlight()
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, pattern(2*bs, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	o1 := v.Entries()[1].ObjectName()
	s.holdNext(named(o1))
	if err := v.WriteAt(ctx, pattern(4096, 0xA1), bs, false); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	cerr := v.Close(cctx)
	t.Logf("Close: %v; OnClose got %v with %d write(s) in flight", cerr, onCloseErr, inFlight)
	if inFlight > 0 && !errors.Is(onCloseErr, ErrUnsettled) {
		t.Fatalf("Close handed OnClose %v without ErrUnsettled while a write it returned for was in flight (it may still land)", onCloseErr)
	}
	s.land()
}
