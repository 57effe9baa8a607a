package volume

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// asyncFailStore models the RADOS store since writes return once sent
// (internal/objstore/rados, writeMerger): WriteAt returns nil once the
// write is sent; an operation that the OSDs then refuse (a full pool, an
// injected error) changes nothing, as a failed RADOS operation does, and
// its error is reported only by Sync of that object, and by every later
// Sync of it (sticky). It is a Syncer, a Settler and a SyncWaiter, with no handles
// (the RADOS store has none), and a fresh Stat (it stands for the fenced
// store's trust that no other writer took over).
type asyncFailStore struct {
	objstore.Store // an *objstore.Mem, seen as a plain Store
	mem            *objstore.Mem

	mu sync.Mutex
	// lose, if set, makes the next WriteAt of an object it matches
	// "sent" (nil) but failed at the OSDs: nothing lands.
	lose func(name string) bool
	// unsettle, if set, makes the next WriteAt of an object it matches
	// return an error of unknown outcome (a ctx that ended while the
	// write was queued), writing nothing.
	unsettle func(name string) bool
	failed   map[string]error
	lost     []string
}

var errOSD = errors.New("injected: operation failed at the OSD (EIO)")

func newAsyncFailStore() *asyncFailStore {
	m := objstore.NewMem()
	return &asyncFailStore{Store: m, mem: m, failed: map[string]error{}}
}

func (s *asyncFailStore) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	s.mu.Lock()
	if s.lose != nil && s.lose(name) {
		s.lose = nil
		s.failed[name] = errOSD
		s.lost = append(s.lost, name)
		s.mu.Unlock()
		return nil
	}
	if s.unsettle != nil && s.unsettle(name) {
		s.unsettle = nil
		s.mu.Unlock()
		return context.DeadlineExceeded
	}
	s.mu.Unlock()
	return s.mem.WriteAt(ctx, name, p, off)
}

func (s *asyncFailStore) Sync(ctx context.Context, name string) error {
	s.mu.Lock()
	err := s.failed[name]
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if _, err := s.mem.Stat(ctx, name); objstore.IsNotExist(err) {
		return nil // a SyncWaiter: nothing in flight, nothing checked
	}
	return s.mem.Sync(ctx, name)
}

func (s *asyncFailStore) Settle(ctx context.Context, name string) error { return s.Sync(ctx, name) }

func (s *asyncFailStore) SyncWaitsOnly() bool { return true }
func (s *asyncFailStore) FreshStat() bool     { return true }

// loseNext makes the next WriteAt of an object match names return nil
// and fail at the OSDs (see lose).
func (s *asyncFailStore) loseNext(match func(name string) bool) {
	s.mu.Lock()
	s.lose = match
	s.mu.Unlock()
}

// unsettleNext makes the next WriteAt of an object match names fail
// with an unknown outcome (see unsettle).
func (s *asyncFailStore) unsettleNext(match func(name string) bool) {
	s.mu.Lock()
	s.unsettle = match
	s.mu.Unlock()
}

// named matches the object name; logsOf the write logs of volume id.
func named(name string) func(string) bool { return func(n string) bool { return n == name } }

// lostAppend writes 4 KiB of 0x10 at 0 through v, a logged writer of
// volume id on s, and flushes it; then it writes 4 KiB of 0x20 at 8192,
// whose append to the log is lost at the OSDs (loseNext).
func lostAppend(t *testing.T, s *asyncFailStore, id blockmap.ID, v *Volume) {
	t.Helper()
	if err := v.WriteAt(ctx, pattern(4096, 0x10), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.loseNext(logsOf(id))
	if err := v.WriteAt(ctx, pattern(4096, 0x20), 8192, false); err != nil {
		t.Fatal(err)
	}
}

func logsOf(id blockmap.ID) func(string) bool {
	prefix := "vol/" + id.String() + "/l/"
	return func(n string) bool { return strings.HasPrefix(n, prefix) }
}

func (s *asyncFailStore) lostNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lost...)
}

var (
	_ objstore.RangeWriter = (*asyncFailStore)(nil)
	_ objstore.Syncer      = (*asyncFailStore)(nil)
	_ objstore.SyncWaiter  = (*asyncFailStore)(nil)
)

// TestReview11LogCheckpointDropsFailedAppend: on a store whose writes
// return once sent (RADOS), a logged write returns nil but its append
// fails at the OSDs afterwards. The log then outgrows its bound, so the
// next flush checkpoints it: it reads the failed record's place from the
// log (zeros: the append never landed), writes that into the block,
// rotates to a new log and drops the old one from dirtyObjs, so nothing
// ever Syncs it and learns of the failure. The flush must fail (the
// write it covers is lost); it reports success, and the volume reads
// zeros where the acknowledged-and-flushed write was.
func TestReview11LogCheckpointDropsFailedAppend(t *testing.T) {
	defer setLogBound(bs)()
	s := newAsyncFailStore()
	id := newClone(t, s, 4)
	v := openLogged(t, s, id, OpenOptions{})
	defer v.Close(ctx)
	want := pattern(4*bs, 1)
	write := func(p []byte, off int64) {
		t.Helper()
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	lostAppend(t, s, id, v)
	copy(want, pattern(4096, 0x10))
	copy(want[8192:], pattern(4096, 0x20))
	if l := s.lostNames(); len(l) != 1 {
		t.Fatalf("the write did not go to the log (lost: %v)", l)
	}
	// Past the log's bound (bs): the next flush checkpoints and rotates.
	for k := range 9 {
		write(pattern(8192, byte(0x30+k)), int64(bs+k*8192))
	}
	err := v.Flush(ctx)
	got := make([]byte, len(want))
	if rerr := v.ReadAt(ctx, got, 0); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil {
		if !bytes.Equal(got[8192:8192+4096], want[8192:8192+4096]) {
			t.Fatalf("the flush after a logged write whose append failed at the OSDs returned nil, "+
				"and the volume now reads %x... where that acknowledged, flushed write put %x...", got[8192:8200], want[8192:8200])
		}
		t.Fatal("the flush after a logged write whose append failed at the OSDs returned nil")
	}
	// However often it is retried, no flush may report it durable.
	for i := range 3 {
		if err := v.Flush(ctx); err == nil {
			t.Fatalf("retry %d of the flush returned nil after a failed append", i)
		}
	}
}

// TestReview11LogKeptFailedAppendFlushFails is the same failed append
// with a log that stays within its bound: the flush Syncs the log and
// fails, and so does every retry (the control case: this passes).
func TestReview11LogKeptFailedAppendFlushFails(t *testing.T) {
	s := newAsyncFailStore()
	id := newClone(t, s, 4)
	v := openLogged(t, s, id, OpenOptions{})
	defer v.Close(ctx)
	lostAppend(t, s, id, v)
	for i := range 3 {
		if err := v.Flush(ctx); err == nil {
			t.Fatalf("flush %d returned nil after a failed append", i)
		}
	}
}

// TestReview11RetireDropsFailedInPlaceWrite: an in-place write W1 into
// an owned block returns nil (sent) and fails at the OSDs; a later write
// W2 to the same object fails with an unknown outcome (its ctx ended
// while it was queued behind W1's operation), which taints the object.
// The next write retires the tainted object: it copies the block (read
// back without W1, which never landed) to a new object and drops the old
// one from dirtyObjs, so no flush Syncs it and learns of W1's failure.
// The flush must fail; it reports success and the block has lost W1.
func TestReview11RetireDropsFailedInPlaceWrite(t *testing.T) {
	s := newAsyncFailStore()
	id, err := Create(ctx, s, CreateOptions{Size: 2 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	want := pattern(2*bs, 0)
	if err := v.WriteAt(ctx, pattern(bs, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	copy(want, pattern(bs, 1))
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e := v.Entries()[0]
	if e.Kind() == blockmap.Zero {
		t.Fatal("block 0 not allocated")
	}
	obj := e.ObjectName()
	s.loseNext(named(obj))
	if err := v.WriteAt(ctx, pattern(4096, 2), 0, false); err != nil {
		t.Fatal(err)
	}
	copy(want, pattern(4096, 2))
	if l := s.lostNames(); len(l) != 1 {
		t.Fatalf("W1 was not written in place into %s (lost: %v)", obj, l)
	}
	s.unsettleNext(named(obj))
	if err := v.WriteAt(ctx, pattern(4096, 3), 8192, false); err == nil {
		t.Fatal("W2 (unknown outcome) returned nil")
	}
	// W3, to another block, retires the tainted object first, which
	// waits for its writes in flight: it may fail with W1's error.
	if err := v.WriteAt(ctx, pattern(4096, 4), bs, false); err != nil && !errors.Is(err, errOSD) {
		t.Fatal(err)
	}
	copy(want[bs:], pattern(4096, 4))
	err = v.Flush(ctx)
	if err == nil {
		got := make([]byte, 4096)
		if rerr := v.ReadAt(ctx, got, 0); rerr != nil {
			t.Fatal(rerr)
		}
		t.Fatalf("the flush after an in-place write that failed at the OSDs returned nil (block 0 now reads %x..., the write put %x...; its object %s was retired and never synced)",
			got[:8], want[:8], obj)
	}
	for i := range 3 {
		if err := v.Flush(ctx); err == nil {
			t.Fatalf("retry %d of the flush returned nil", i)
		}
	}
}

// TestReview11CloseDropsFailedAppend: Close checkpoints the log and drops
// it (logClosing: no log is kept), deleting it from dirtyObjs before its
// cut is taken, so a logged write whose append failed at the OSDs is
// never Synced: Close must report the loss (the handover is not clean);
// it returns nil, and a reopen reads zeros where the write was.
func TestReview11CloseDropsFailedAppend(t *testing.T) {
	s := newAsyncFailStore()
	id := newClone(t, s, 2)
	v := openLogged(t, s, id, OpenOptions{})
	// A first logged write lands (the log object exists), and is flushed.
	lostAppend(t, s, id, v)
	if l := s.lostNames(); len(l) != 1 {
		t.Fatalf("the write did not go to the log (lost: %v)", l)
	}
	if err := v.Close(ctx); err == nil {
		r, err := Open(ctx, s, id, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 8)
		if err := r.ReadAt(ctx, got, 8192); err != nil {
			t.Fatal(err)
		}
		t.Fatalf("Close after a logged write whose append failed at the OSDs returned nil; a reopen reads %x, the write put 2020...", got)
	}
}
