package lease

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

var ctx = context.Background()

// fakeClock is a clock that moves only when the test says so.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const ttl, drift = 5 * time.Second, 500 * time.Millisecond

// newNode is a node on clk, whose waits move clk (fakeSleep).
func newNode(t *testing.T, s objstore.Store, name string, clk *fakeClock) *Manager {
	t.Helper()
	m, err := NewManager(s, Config{Node: name, Addr: name + ":7000", TTL: ttl, MaxDrift: drift, Clock: clk, Sleep: fakeSleep(clk)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAcquireRenewExpire(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, b := newNode(t, s, "a", clk), newNode(t, s, "b", clk)

	la, err := a.Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if la.Term() != 1 || la.Valid() != nil {
		t.Fatalf("fresh lease: term %d, valid %v", la.Term(), la.Valid())
	}
	var held *HeldError
	if _, err := b.Acquire(ctx, "vol"); !errors.As(err, &held) || held.Record.Owner != "a" || held.Record.Addr != "a:7000" {
		t.Fatalf("second node acquiring a held lease: %v", err)
	}
	// Renewals keep it; without one, the owner fences itself first...
	clk.Advance(4 * time.Second)
	if err := la.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Advance(ttl - 2*drift)
	if !errors.Is(la.Valid(), ErrStale) {
		t.Fatalf("owner still valid at TTL-2*drift after its last renewal: %v", la.Valid())
	}
	// ...and the other node may take over only after expiry + drift.
	clk.Advance(2*drift + drift/2) // past the expiry, within the drift allowance
	if _, err := b.Acquire(ctx, "vol"); !errors.Is(err, ErrHeld) {
		t.Fatalf("takeover after the expiry but within the drift allowance: %v", err)
	}
	clk.Advance(drift/2 + time.Millisecond)
	lb, err := b.Acquire(ctx, "vol")
	if err != nil {
		t.Fatalf("takeover after expiry: %v", err)
	}
	if lb.Term() != 2 {
		t.Fatalf("takeover term %d, want 2", lb.Term())
	}
	// The old owner's renewal fails for good.
	if err := la.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("stale owner's renewal: %v", err)
	}
	if err := la.Valid(); !errors.Is(err, ErrLost) {
		t.Fatalf("stale owner still valid: %v", err)
	}
}

func TestReleaseAndReacquire(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, b := newNode(t, s, "a", clk), newNode(t, s, "b", clk)
	la, _ := a.Acquire(ctx, "vol")
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Acquire(ctx, "vol")
	if err != nil {
		t.Fatalf("acquire right after a release: %v", err)
	}
	if lb.Term() != 2 {
		t.Fatalf("term after a handover: %d", lb.Term())
	}
	// Re-acquiring one's own lease keeps the term.
	again, err := b.Acquire(ctx, "vol")
	if err != nil || again.Term() != 2 {
		t.Fatalf("owner re-acquiring: term %d, %v", again.Term(), err)
	}
}

func TestConcurrentAcquireOneWins(t *testing.T) {
	for round := 0; round < 20; round++ {
		s := objstore.NewMem()
		clk := &fakeClock{t: time.Unix(1000, 0)}
		var wg sync.WaitGroup
		var mu sync.Mutex
		winners := 0
		for i := 0; i < 8; i++ {
			m := newNode(t, s, string(rune('a'+i)), clk)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := m.Acquire(ctx, "vol"); err == nil {
					mu.Lock()
					winners++
					mu.Unlock()
				} else if !errors.Is(err, ErrHeld) {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if winners != 1 {
			t.Fatalf("round %d: %d nodes acquired the lease at once", round, winners)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{}, {Node: "a", TTL: time.Second, MaxDrift: time.Second}, {Node: "a", TTL: -1}} {
		if _, err := NewManager(objstore.NewMem(), c); err == nil {
			t.Errorf("NewManager(%+v) accepted it", c)
		}
	}
}

// fakeSleep moves clk instead of waiting.
func fakeSleep(clk *fakeClock) func(context.Context, time.Duration) error {
	return func(ctx context.Context, d time.Duration) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		clk.Advance(d)
		return nil
	}
}

// newTaker is newNode asking holders to hand over with ask.
func newTaker(t *testing.T, s objstore.Store, name string, clk *fakeClock, ask func(context.Context, Record, string) error) *Manager {
	t.Helper()
	m := newNode(t, s, name, clk)
	m.cfg.Ask = ask
	return m
}

// TestTakeHandoff: the holder hands over when asked; no waiting, and the
// taker need not start a new epoch.
func TestTakeHandoff(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a := newNode(t, s, "a", clk)
	la, _ := a.Acquire(ctx, "vol")
	var asked []Record
	b := newTaker(t, s, "b", clk, func(ctx context.Context, rec Record, vol string) error {
		asked = append(asked, rec)
		return la.Release(ctx)
	})
	start := clk.Now()
	lb, err := b.Take(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if len(asked) != 1 || asked[0].Owner != "a" || asked[0].Addr != "a:7000" {
		t.Fatalf("asked %+v", asked)
	}
	if clk.Now() != start || lb.TookOver() || lb.Term() != la.Term()+1 {
		t.Fatalf("handoff: waited %s, took over %v, term %d", clk.Now().Sub(start), lb.TookOver(), lb.Term())
	}
	if la.Valid() == nil {
		t.Fatal("the old holder's lease is still valid after release")
	}
}

// TestTakeDeadHolder: a holder that does not answer is waited out; the
// taker gets the lease only after the holder has fenced itself, and knows
// it took it over.
func TestTakeDeadHolder(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a := newNode(t, s, "a", clk)
	la, _ := a.Acquire(ctx, "vol")
	expires := la.Record().Expires
	asks := 0
	b := newTaker(t, s, "b", clk, func(context.Context, Record, string) error {
		asks++
		if la.Valid() == nil && clk.Now().After(expires.Add(drift)) {
			t.Errorf("the holder is still valid at %s, after its expiry", clk.Now())
		}
		return errors.New("connection refused")
	})
	lb, err := b.Take(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if !clk.Now().After(expires.Add(drift)) {
		t.Fatalf("took the lease at %s, before expiry %s + drift", clk.Now(), expires)
	}
	if la.Valid() == nil || !lb.TookOver() || asks < 2 {
		t.Fatalf("old holder valid: %v; took over: %v; asks %d", la.Valid(), lb.TookOver(), asks)
	}
	if err := la.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("the old holder's renewal: %v", err)
	}

	// A holder with no address (a command-line operation) is waited for
	// too, and a taker that gives up says who holds the lease.
	c := newTaker(t, s, "c", clk, nil)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	var held *HeldError
	if _, err := c.Take(cctx, "vol"); !errors.As(err, &held) || held.Record.Owner != "b" {
		t.Fatalf("giving up: %v", err)
	}
}

// TestKeep renews until the lease is broken, then reports the loss once.
func TestKeep(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a := newNode(t, s, "a", clk)
	renewals := 0
	a.cfg.Sleep = func(ctx context.Context, d time.Duration) error {
		clk.Advance(d)
		if renewals++; renewals == 10 {
			if _, err := a.Break(ctx, "vol", false); err != nil {
				t.Error(err)
			}
		}
		return nil
	}
	la, _ := a.Acquire(ctx, "vol")
	var lost []error
	la.Keep(ctx, func(err error) { lost = append(lost, err) })
	if len(lost) != 1 || !errors.Is(lost[0], ErrLost) {
		t.Fatalf("lost: %v", lost)
	}
	if clk.Now().Sub(time.Unix(1000, 0)) < 9*ttl/3 {
		t.Fatalf("clock moved only %s", clk.Now().Sub(time.Unix(1000, 0)))
	}
	if la.Valid() == nil {
		t.Fatal("a lost lease is valid")
	}
}

// FuzzDecodeRecord: a lease record in the store may be anything; decoding it
// never panics, and what decodes survives a round trip.
func FuzzDecodeRecord(f *testing.F) {
	for _, s := range []string{`{"owner":"a","addr":"127.0.0.1:7","term":3,"expires":"2026-11-26T00:00:00Z"}`, `{}`, `{"term":-1}`, `null`, `[`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decode(b)
		if err != nil {
			if !errors.Is(err, objstore.ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		out, err := json.Marshal(r)
		if err != nil {
			return // a time outside what JSON can hold
		}
		if r2, err := decode(out); err != nil || r2.Owner != r.Owner || r2.Term != r.Term || !r2.Expires.Equal(r.Expires) {
			t.Fatalf("round trip of %+v: %+v, %v", r, r2, err)
		}
	})
}

// TestParseName: ParseName reads back Name, and nothing else.
func TestParseName(t *testing.T) {
	if v, ok := ParseName(Name("0123")); !ok || v != "0123" {
		t.Errorf("ParseName(Name(0123)) = %q, %v", v, ok)
	}
	if v, ok := ParseName("vol/0123/head"); ok {
		t.Errorf("ParseName(vol/0123/head) = %q, true", v)
	}
}
