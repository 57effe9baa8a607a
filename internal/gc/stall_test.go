package gc_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// stall blocks the first call that match accepts until the test releases
// it: a process paused in the middle of an operation (VM pause, NFS hang).
// A stalled Delete or Swap is applied when released, as a request stuck
// in flight would be.
type stall struct {
	objstore.Store
	match   func(op, name string) bool
	hit     chan struct{} // closed once a call is stalled
	release chan struct{} // close to let it go on

	mu   sync.Mutex
	used bool
}

func newStall(s objstore.Store, match func(op, name string) bool) *stall {
	return &stall{Store: s, match: match, hit: make(chan struct{}), release: make(chan struct{})}
}

func (s *stall) wait(op, name string) {
	s.mu.Lock()
	if s.used || s.match == nil || !s.match(op, name) {
		s.mu.Unlock()
		return
	}
	s.used = true
	s.mu.Unlock()
	close(s.hit)
	<-s.release
}

func (s *stall) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	s.wait("get", name)
	return s.Store.Get(ctx, name)
}

func (s *stall) Put(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.wait("put", name)
	return s.Store.Put(ctx, name, b)
}

func (s *stall) Create(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.wait("create", name)
	return s.Store.Create(ctx, name, b)
}

func (s *stall) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (objstore.Version, error) {
	s.wait("swap", name)
	return s.Store.Swap(ctx, name, b, old)
}

func (s *stall) Delete(ctx context.Context, name string) error {
	s.wait("delete", name)
	return s.Store.Delete(ctx, name)
}

func (s *stall) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	s.wait("delete", name)
	return s.Store.DeleteVersion(ctx, name, old)
}

func (s *stall) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	s.wait("list", prefix)
	return s.Store.List(ctx, prefix, fn)
}

// managerOn is a manager of m's store seen through s (a wrapper of it).
func managerOn(m *manage.Manager, s objstore.Store) *manage.Manager {
	m2 := *m
	m2.Store, m2.Catalog = s, catalog.New(s)
	return &m2
}

// pastLock is how far the clock must move for a record (lock or hold)
// not renewed since it was written to count as dead on any host.
const pastLock = gc.RecordTTL + gc.MaxDrift + time.Second

// garbageImage imports n random blocks as name and removes it: their
// content blocks are garbage. It returns the data.
func garbageImage(t *testing.T, m *manage.Manager, rng *rand.Rand, name string, n int) []byte {
	t.Helper()
	data := randBytes(rng, n*bs)
	if _, _, err := m.Import(ctx, bytes.NewReader(data), -1, name, image.Options{BlockShift: 16}); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, name); err != nil {
		t.Fatal(err)
	}
	return data
}

type result struct {
	rep gc.Report
	err error
}

func runAsync(s objstore.Store, clk *clock) chan result {
	c := make(chan result, 1)
	go func() {
		rep, err := gc.Run(ctx, s, gc.Options{Now: clk.now})
		c <- result{rep, err}
	}()
	return c
}

// TestCollectorPausedPastLock (issue 10 #5, a): collector A pauses in a
// deletion past its lock's TTL; collector B takes the lock over and
// pauses too; A wakes: it deletes nothing more (beyond the deletion that
// was in flight) and leaves B's lock alone. B then finishes the work.
func TestCollectorPausedPastLock(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	rng := rand.New(rand.NewPCG(31, 32))
	garbageImage(t, m, rng, "g1", 4)
	garbageImage(t, m, rng, "g2", 4)
	m.CreateVolume(ctx, "live", 4*bs, 16)
	manage.WriteT(t, m, "live", 0, randBytes(rng, 2*bs))
	want := manage.ReadT(t, m, "live", 0, -1)
	clk.advance(2 * time.Hour)

	// NB: its first deletion, whatever it is: the sweep lists in no
	// order, and its report counts what it deleted before the stall too.
	stA := newStall(mem, func(op, name string) bool { return op == "delete" })
	a := runAsync(stA, clk)
	<-stA.hit
	clk.advance(pastLock)
	stB := newStall(mem, func(op, prefix string) bool { return op == "list" && prefix == "" })
	b := runAsync(stB, clk)
	<-stB.hit
	lockB, verB, err := mem.Get(ctx, "gc/lock")
	if err != nil {
		t.Fatal(err)
	}
	before := count(mem)

	close(stA.release)
	ra := <-a
	if !errors.Is(ra.err, gc.ErrLockLost) {
		t.Errorf("collector A woke past its lock: %v", ra.err)
	}
	if got := before - count(mem); got > 1 || ra.rep.Deleted.Objects > 1 {
		t.Errorf("collector A deleted %d objects after its lock expired (report %+v)", got, ra.rep.Deleted)
	}
	if b, v, err := mem.Get(ctx, "gc/lock"); err != nil || v != verB || !bytes.Equal(b, lockB) {
		t.Errorf("collector A changed B's lock: %q %d %v (was %q %d)", b, v, err, lockB, verB)
	}
	if _, err := gc.AcquireHold(ctxTimeout(t, 1200*time.Millisecond), mem, clk.now); err == nil {
		t.Error("an operation started while collector B held the lock")
	}

	close(stB.release)
	if rb := <-b; rb.err != nil || rb.rep.Deleted.Content == 0 {
		t.Fatalf("collector B: %+v, %v", rb.rep, rb.err)
	}
	checkClean(t, m)
	if !bytes.Equal(manage.ReadT(t, m, "live", 0, -1), want) {
		t.Fatal("the live volume changed")
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(ctx, d)
	t.Cleanup(cancel)
	return c
}

// TestImportDedupsOntoStaleMark (issue 10 #5, b): collector A marks,
// then pauses past its lock's TTL before sweeping; an import on another
// host finds the lock expired and deduplicates onto blocks A marked
// garbage; A wakes and must not delete them.
func TestImportDedupsOntoStaleMark(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	rng := rand.New(rand.NewPCG(33, 34))
	data := garbageImage(t, m, rng, "g", 6)
	clk.advance(2 * time.Hour)

	stA := newStall(mem, func(op, prefix string) bool { return op == "list" && prefix == "" })
	a := runAsync(stA, clk)
	<-stA.hit // marked: g's blocks are garbage to A
	clk.advance(pastLock)
	_, st, err := m.Import(ctx, bytes.NewReader(data), -1, "again", image.Options{BlockShift: 16})
	if err != nil {
		t.Fatal(err)
	}
	if st.DedupBlocks != 6 {
		t.Fatalf("the import stored %d blocks anew, deduplicated %d", st.NewBlocks, st.DedupBlocks)
	}
	close(stA.release)
	ra := <-a
	if ra.rep.Deleted.Objects != 0 {
		t.Errorf("collector A deleted %+v after its lock expired (err %v)", ra.rep.Deleted, ra.err)
	}
	if !errors.Is(ra.err, gc.ErrLockLost) {
		t.Errorf("collector A woke past its lock: %v", ra.err)
	}
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	checkClean(t, m)
	if !bytes.Equal(manage.ReadT(t, m, "again", 0, -1), data) {
		t.Fatal("the import does not read its data")
	}
}

// TestHoldTakerPausedPastExpiry (issue 10 #5, holds): an import pauses
// past its hold's expiry just before it writes its map; a collection
// takes the hold for dead and deletes the garbage blocks the import
// deduplicated onto. The import must not report success, and no hold
// record is left behind.
func TestHoldTakerPausedPastExpiry(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	rng := rand.New(rand.NewPCG(35, 36))
	data := garbageImage(t, m, rng, "g", 4)
	clk.advance(2 * time.Hour)

	st := newStall(mem, func(op, name string) bool { return op == "create" && strings.HasSuffix(name, "/head") })
	errc := make(chan error, 1)
	go func() {
		_, _, err := managerOn(m, st).Import(ctx, bytes.NewReader(data), -1, "again", image.Options{BlockShift: 16})
		errc <- err
	}()
	<-st.hit
	clk.advance(pastLock)
	rep, err := m.GC(ctx, gc.Options{})
	if err != nil || rep.Deleted.Content != 4 {
		t.Fatalf("collection past the hold's expiry: %+v, %v", rep.Deleted, err)
	}
	close(st.release)
	if err := <-errc; !errors.Is(err, gc.ErrHoldLost) {
		t.Fatalf("import whose hold a collection took for dead: %v", err)
	}
	holds(t, mem, 0)
}

// TestHoldNotDeadWhileOwnerMayWork: a collection waits for a hold until
// its expiry plus the drift allowance, even though the hold's owner has
// stopped trusting it earlier; then it takes it for dead, and its owner
// learns so when it releases it.
func TestHoldNotDeadWhileOwnerMayWork(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	h, err := gc.AcquireHold(ctx, mem, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	clk.advance(gc.RecordTTL - 2*gc.MaxDrift)
	if err := h.Valid(); !errors.Is(err, gc.ErrHoldLost) {
		t.Errorf("hold past its owner's deadline: %v", err)
	}
	clk.advance(3*gc.MaxDrift - time.Second)
	if _, err := m.GC(ctxTimeout(t, 1200*time.Millisecond), gc.Options{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("collection while the hold's owner may still work: %v", err)
	}
	clk.advance(2 * time.Second)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(); !errors.Is(err, gc.ErrHoldLost) {
		t.Fatalf("release of a hold a collection took for dead: %v", err)
	}
	holds(t, mem, 0)

	// A hold released in time is confirmed and removed.
	h, _ = gc.AcquireHold(ctx, mem, clk.now)
	holds(t, mem, 1)
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	holds(t, mem, 0)
}

func holds(t *testing.T, s objstore.Store, want int) {
	t.Helper()
	n := 0
	s.List(ctx, "gc/holds/", func(objstore.Info) error { n++; return nil })
	if n != want {
		t.Errorf("%d hold records in the store, want %d", n, want)
	}
}
