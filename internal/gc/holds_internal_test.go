package gc

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestLockRenewalAfterTakeover: a collector whose lock another took over
// neither renews it (overwriting the other's) nor frees it.
func TestLockRenewalAfterTakeover(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	a, err := acquireLock(ctx, s, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	clk.advance(recordTTL / 3)
	if err := a.c.renewOnce(ctx); err != nil || a.valid() != nil {
		t.Fatalf("renewal in time: %v, valid: %v", err, a.valid())
	}
	clk.advance(recordTTL + maxDrift + time.Second)
	b, err := acquireLock(ctx, s, clk.now)
	if err != nil {
		t.Fatalf("takeover of an expired lock: %v", err)
	}
	rec, ver, _ := s.Get(ctx, lockName)
	if err := a.c.renewOnce(ctx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("renewal after a takeover: %v", err)
	}
	a.release()
	if got, v, err := s.Get(ctx, lockName); err != nil || v != ver || !bytes.Equal(got, rec) {
		t.Fatalf("the old collector changed the new one's lock: %q %d %v", got, v, err)
	}
	b.release()
	if got, _, _ := s.Get(ctx, lockName); live(got, clk.now()) {
		t.Fatal("a released lock is still live")
	}
	if _, err := acquireLock(ctx, s, clk.now); err != nil {
		t.Fatalf("lock after release: %v", err)
	}
}

// TestLockLapsesByClock: a collector whose renewals did not happen (it
// stalled, or the store failed them) stops trusting its lock before any
// other host may take it, and does not renew it afterwards even if nobody
// took it: an operation that found it expired does not write it.
func TestLockLapsesByClock(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	a, err := acquireLock(ctx, s, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	clk.advance(recordTTL - 2*maxDrift - time.Millisecond)
	if err := a.valid(); err != nil {
		t.Fatal(err)
	}
	b, _, _ := s.Get(ctx, lockName)
	if !live(b, clk.now().Add(3*maxDrift)) {
		t.Fatal("the lock is dead to others while its owner still trusts it")
	}
	clk.advance(time.Millisecond)
	if err := a.valid(); !errors.Is(err, ErrLockLost) {
		t.Fatalf("lock past its owner's deadline: %v", err)
	}
	if err := a.c.renewOnce(ctx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("renewal of a lapsed lock: %v", err)
	}
}

// unknown fails the next Swap after applying it, as a request that timed
// out on the client while the store carried it out.
type unknown struct {
	objstore.Store
	armed bool
}

func (u *unknown) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (objstore.Version, error) {
	v, err := u.Store.Swap(ctx, name, b, old)
	if u.armed && err == nil {
		u.armed = false
		return 0, context.DeadlineExceeded
	}
	return v, err
}

// TestRenewalOfUnknownOutcome: a renewal that timed out but was applied
// does not make the next one conclude the record was lost.
func TestRenewalOfUnknownOutcome(t *testing.T) {
	ctx := context.Background()
	s := &unknown{Store: objstore.NewMem()}
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	h, err := AcquireHold(ctx, s, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	clk.advance(recordTTL / 3)
	s.armed = true
	if err := h.c.renewOnce(ctx); err == nil {
		t.Fatal("the injected timeout did not reach the renewal")
	}
	clk.advance(recordTTL / 3)
	if err := h.c.renewOnce(ctx); err != nil {
		t.Fatalf("renewal after one of unknown outcome: %v", err)
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
}

// TestHoldRenewalAfterKill: the owner of a hold a collection took for
// dead and removed does not bring the record back by renewing it (it
// would hold every collection off for a minute, and be left behind).
func TestHoldRenewalAfterKill(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	h, err := AcquireHold(ctx, s, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	clk.advance(recordTTL + maxDrift + time.Second)
	l, err := acquireLock(ctx, s, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	l.release()
	if err := h.c.renewOnce(ctx); !errors.Is(err, ErrHoldLost) {
		t.Fatalf("renewal of a hold a collection removed: %v", err)
	}
	n := 0
	s.List(ctx, holdPrefix, func(objstore.Info) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d hold records left", n)
	}
	if err := h.Release(); !errors.Is(err, ErrHoldLost) {
		t.Fatal(err)
	}
}
