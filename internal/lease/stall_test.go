package lease

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// holdSwaps makes the next lease write through f stop in the store until
// the returned release is called; entered is closed once it is held.
func holdSwaps(t *testing.T, f *objstore.Faulty) (entered <-chan struct{}, release func()) {
	t.Helper()
	in, out := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: "lease/", Count: 1, Hook: func(context.Context, objstore.Op, string) {
		close(in)
		<-out
	}})
	release = func() { once.Do(func() { close(out) }) }
	t.Cleanup(release)
	return in, release
}

// within fails the test if fn does not return soon: it would be blocked
// for good (the generous bound only turns a deadlock into a failure).
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { fn(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s is blocked", what)
	}
}

// TestValidNotBlockedByRenewal: the guard every volume I/O asks does not
// wait for a renewal in flight, however long the store takes.
func TestValidNotBlockedByRenewal(t *testing.T) {
	f := objstore.NewFaulty(objstore.NewMem())
	clk := &fakeClock{t: time.Unix(1000, 0)}
	la, err := newNode(t, f, "a", clk).Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	entered, release := holdSwaps(t, f)
	renewed := make(chan error, 1)
	go func() { renewed <- la.Renew(ctx) }()
	<-entered
	within(t, "Valid during a renewal", func() {
		if err := la.Valid(); err != nil {
			t.Errorf("valid during a renewal: %v", err)
		}
	})
	within(t, "Term during a renewal", func() { la.Term() })
	// Stalled past the validity of the last renewal: Valid turns false
	// without waiting for the renewal either.
	clk.Advance(ttl - 2*drift)
	within(t, "Valid during a stalled renewal", func() {
		if err := la.Valid(); !errors.Is(err, ErrStale) {
			t.Errorf("valid past the last renewal's validity, with a renewal stalled: %v", err)
		}
	})
	release()
	// The renewal started before the stall: it lasts from its start,
	// which has run out too.
	if err := <-renewed; !errors.Is(err, ErrStale) {
		t.Fatalf("a renewal that outlasted its own validity: %v", err)
	}
	if err := la.Valid(); !errors.Is(err, ErrStale) {
		t.Fatalf("valid after a renewal that outlasted its validity: %v", err)
	}
	if err := la.Renew(ctx); err != nil || la.Valid() != nil {
		t.Fatalf("a prompt renewal: %v, valid %v", err, la.Valid())
	}
}

// TestRenewUnknownOutcome: a renewal that timed out but landed is this
// node's own record: the next renewal adopts it instead of concluding that
// the lease was lost. A record changed by anyone else is still a loss.
func TestRenewUnknownOutcome(t *testing.T) {
	mem := objstore.NewMem()
	f := objstore.NewFaulty(mem)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a := newNode(t, f, "a", clk)
	la, err := a.Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: "lease/", Count: 1, Err: objstore.ErrTimeout, ErrAfter: true})
	clk.Advance(ttl / 3)
	if err := la.Renew(ctx); !errors.Is(err, objstore.ErrTimeout) {
		t.Fatalf("renewal that timed out: %v", err)
	}
	clk.Advance(ttl / 3)
	if err := la.Renew(ctx); err != nil {
		t.Fatalf("renewal after a timed-out renewal that landed: %v", err)
	}
	if err := la.Valid(); err != nil {
		t.Fatalf("valid after adopting: %v", err)
	}
	if rec, _, _ := a.Read(ctx, "vol"); !rec.Expires.Equal(clk.Now().Add(ttl)) || rec.Term != 1 {
		t.Fatalf("record after the adopted renewal: %+v", rec)
	}
	// Two timeouts in a row, the first landing late: still adopted.
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: "lease/", Count: 1, Err: objstore.ErrTimeout, ErrAfter: true})
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: "lease/", Count: 1, Err: objstore.ErrTimeout})
	la.Renew(ctx)
	la.Renew(ctx)
	if err := la.Renew(ctx); err != nil {
		t.Fatalf("renewal after two timeouts, the first landed: %v", err)
	}

	// A timeout that did not land, then someone else's record: lost.
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: "lease/", Count: 1, Err: objstore.ErrTimeout})
	if err := la.Renew(ctx); !errors.Is(err, objstore.ErrTimeout) {
		t.Fatalf("renewal that timed out: %v", err)
	}
	clk.Advance(ttl + 2*drift)
	if _, err := newNode(t, mem, "b", clk).Acquire(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	if err := la.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("renewal after a timeout and a takeover: %v", err)
	}
	if !errors.Is(la.Valid(), ErrLost) {
		t.Fatalf("valid after the loss: %v", la.Valid())
	}
}

// TestAcquireUnknownOutcome: a takeover whose write timed out but landed
// is still a takeover when the node acquires again and finds its own
// record: the volume must open in a new epoch.
func TestAcquireUnknownOutcome(t *testing.T) {
	mem := objstore.NewMem()
	f := objstore.NewFaulty(mem)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	if _, err := newNode(t, mem, "a", clk).Acquire(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(ttl + 2*drift) // a stopped renewing
	b := newNode(t, f, "b", clk)
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: "lease/", Count: 1, Err: objstore.ErrTimeout, ErrAfter: true})
	if _, err := b.Acquire(ctx, "vol"); !errors.Is(err, objstore.ErrTimeout) {
		t.Fatalf("acquire that timed out: %v", err)
	}
	lb, err := b.Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if !lb.TookOver() || lb.Term() != 2 {
		t.Fatalf("acquire after a timed-out takeover that landed: took over %v, term %d", lb.TookOver(), lb.Term())
	}
}

// TestReleaseUnknownOutcome: a release that timed out can be repeated,
// whether it landed or not.
func TestReleaseUnknownOutcome(t *testing.T) {
	for _, landed := range []bool{true, false} {
		mem := objstore.NewMem()
		f := objstore.NewFaulty(mem)
		clk := &fakeClock{t: time.Unix(1000, 0)}
		la, err := newNode(t, f, "a", clk).Acquire(ctx, "vol")
		if err != nil {
			t.Fatal(err)
		}
		f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: "lease/", Count: 1, Err: objstore.ErrTimeout, ErrAfter: landed})
		if err := la.Release(ctx); !errors.Is(err, objstore.ErrTimeout) {
			t.Fatalf("landed %v: release that timed out: %v", landed, err)
		}
		if la.Valid() == nil {
			t.Fatalf("landed %v: valid after a release was attempted", landed)
		}
		if err := la.Release(ctx); err != nil {
			t.Fatalf("landed %v: repeated release: %v", landed, err)
		}
		lb, err := newNode(t, mem, "b", clk).Acquire(ctx, "vol")
		if err != nil || lb.TookOver() {
			t.Fatalf("landed %v: acquire after the release: took over %v, %v", landed, lb != nil && lb.TookOver(), err)
		}
	}
}

// TestSameNodeID: two processes started with the same node id are two
// holders, not one: the second is refused with a message that says why,
// and takes over only once the first's lease has expired (a restarted
// daemon), in a new epoch.
func TestSameNodeID(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	var logged []string
	first, second := newNode(t, s, "a", clk), newNode(t, s, "a", clk)
	second.cfg.Logf = func(format string, args ...any) { logged = append(logged, format) }
	l1, err := first.Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	_, err = second.Acquire(ctx, "vol")
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "unique --node-id") {
		t.Fatalf("second process with the same node id: %v", err)
	}
	if len(logged) == 0 {
		t.Error("nothing logged about the shared node id")
	}
	// Re-acquiring within one process is still one holder.
	if again, err := first.Acquire(ctx, "vol"); err != nil || again.TookOver() {
		t.Fatalf("the same process acquiring again: %v", err)
	}
	// A restarted daemon (same id, same address) does not ask itself to
	// hand over: it waits the old lease out.
	second.cfg.Ask = func(context.Context, Record, string) error {
		t.Error("a node asked its own address to hand over")
		return nil
	}
	l2, err := second.Take(ctx, "vol")
	if err != nil || !l2.TookOver() || l2.Term() != 2 {
		t.Fatalf("taking over from a process with the same node id: %v", err)
	}
	if len(logged) != 1 {
		t.Errorf("logged the shared node id %d times", len(logged))
	}
	if err := l1.Renew(ctx); !errors.Is(err, ErrLost) || !strings.Contains(err.Error(), "node id") {
		t.Fatalf("the first process's renewal: %v", err)
	}
}

// TestAcquireStalledBeforeWrite: a node that found the lease expired and
// stalled before writing (while another took it) does not get it too.
func TestAcquireStalledBeforeWrite(t *testing.T) {
	mem := objstore.NewMem()
	f := objstore.NewFaulty(mem)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	if _, err := newNode(t, mem, "a", clk).Acquire(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(ttl + 2*drift)
	c := newNode(t, mem, "c", clk)
	var lc *Lease
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: "lease/", Count: 1, Hook: func(context.Context, objstore.Op, string) {
		clk.Advance(ttl)
		var err error
		if lc, err = c.Acquire(ctx, "vol"); err != nil {
			t.Error(err)
		}
	}})
	if _, err := newNode(t, f, "b", clk).Acquire(ctx, "vol"); !errors.Is(err, ErrHeld) {
		t.Fatalf("acquire whose write stalled past another's takeover: %v", err)
	}
	if err := lc.Renew(ctx); err != nil {
		t.Fatalf("the node that took it meanwhile: %v", err)
	}
}

// TestKeepAfterLongStall: a holder paused longer than the TTL is not
// valid while paused, and on waking finds its lease lost instead of
// renewing it.
func TestKeepAfterLongStall(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, b := newNode(t, s, "a", clk), newNode(t, s, "b", clk)
	la, err := a.Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	sleeps := 0
	a.cfg.Sleep = func(ctx context.Context, d time.Duration) error {
		if sleeps++; sleeps == 3 {
			d = 3 * ttl // the process is paused
			clk.Advance(ttl)
			if la.Valid() == nil {
				t.Error("valid while paused past its expiry")
			}
			clk.Advance(drift + time.Millisecond)
			if _, err := b.Acquire(ctx, "vol"); err != nil {
				t.Error(err)
			}
		}
		clk.Advance(d)
		return nil
	}
	var lost []error
	la.Keep(ctx, func(err error) { lost = append(lost, err) })
	if len(lost) != 1 || !errors.Is(lost[0], ErrLost) || !errors.Is(la.Valid(), ErrLost) {
		t.Fatalf("lost %v, valid %v", lost, la.Valid())
	}
}

// TestRenewStalledInStore: a renewal held in the store while another node
// takes the lease over: the holder is not valid meanwhile, and the late
// renewal does not land.
func TestRenewStalledInStore(t *testing.T) {
	mem := objstore.NewMem()
	f := objstore.NewFaulty(mem)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	la, err := newNode(t, f, "a", clk).Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	entered, release := holdSwaps(t, f)
	renewed := make(chan error, 1)
	go func() { renewed <- la.Renew(ctx) }()
	<-entered
	clk.Advance(ttl + drift + time.Millisecond)
	if la.Valid() == nil {
		t.Fatal("valid past its expiry while its renewal is stalled")
	}
	lb, err := newNode(t, mem, "b", clk).Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-renewed; !errors.Is(err, ErrLost) {
		t.Fatalf("the stalled renewal: %v", err)
	}
	if err := lb.Renew(ctx); err != nil {
		t.Fatalf("the new holder after the stalled renewal: %v", err)
	}
}

// TestReleaseAfterStall: a holder that releases after a pause during
// which another took over does not release the other's lease.
func TestReleaseAfterStall(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	la, _ := newNode(t, s, "a", clk).Acquire(ctx, "vol")
	clk.Advance(ttl + drift + time.Millisecond)
	lb, err := newNode(t, s, "b", clk).Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if err := la.Release(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("release after a takeover: %v", err)
	}
	if err := lb.Renew(ctx); err != nil {
		t.Fatalf("the new holder after the old one's late release: %v", err)
	}
}

// stallClock runs stall at the first reading of the clock after it is
// set: a process paused between two steps.
type stallClock struct {
	*fakeClock
	mu    sync.Mutex
	stall func()
}

func (c *stallClock) Now() time.Time {
	c.mu.Lock()
	stall := c.stall
	c.stall = nil
	c.mu.Unlock()
	if stall != nil {
		stall()
	}
	return c.fakeClock.Now()
}

// TestAcquireStalledAfterRead: a node that read the record, then paused
// long enough for it to look expired while its holder renewed, does not
// take the lease on that stale view.
func TestAcquireStalledAfterRead(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	la, err := newNode(t, s, "a", clk).Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	bclk := &stallClock{fakeClock: clk}
	b, err := NewManager(s, Config{Node: "b", TTL: ttl, MaxDrift: drift, Clock: bclk})
	if err != nil {
		t.Fatal(err)
	}
	bclk.stall = func() {
		clk.Advance(ttl + 2*drift)
		if err := la.Renew(ctx); err != nil {
			t.Error(err)
		}
	}
	if _, err := b.Acquire(ctx, "vol"); !errors.Is(err, ErrHeld) {
		t.Fatalf("acquire on a view older than the holder's renewal: %v", err)
	}
	if bclk.stall != nil {
		t.Fatal("the acquire never read the clock")
	}
	if err := la.Renew(ctx); err != nil || la.Valid() != nil {
		t.Fatalf("the holder after the stale acquire: %v, valid %v", err, la.Valid())
	}
}
