package lease

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestBreakIsTakeover: breaking a live holder's lease makes the next
// taker open a new epoch with a greater term; the old holder cannot renew,
// and has stopped by its own clock before anyone can take the lease.
func TestBreakIsTakeover(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, b, op := newNode(t, s, "a", clk), newNode(t, s, "b", clk), newNode(t, s, "op", clk)
	la, _ := a.Acquire(ctx, "vol")
	clk.Advance(ttl / 3)
	if err := la.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := op.Break(ctx, "vol", false)
	if err != nil || res.Prev.Owner != "a" || !res.Changed {
		t.Fatalf("break: %+v %v", res, err)
	}
	if want := la.Record().Expires.Add(drift); !res.FreeAt.Equal(want) {
		t.Fatalf("break says the lease is free at %s, want the holder's expiry + drift %s", res.FreeAt, want)
	}
	if err := la.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("the broken holder's renewal: %v", err)
	}
	if _, err := b.Acquire(ctx, "vol"); !errors.Is(err, ErrHeld) {
		t.Fatalf("acquire right after a break, before the holder's expiry: %v", err)
	}
	lb, err := b.Take(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if clk.Now().Before(res.FreeAt) {
		t.Fatalf("taken at %s, before %s", clk.Now(), res.FreeAt)
	}
	if !lb.TookOver() || lb.Term() <= la.Term() {
		t.Fatalf("after a break: took over %v, term %d (the old holder's: %d)", lb.TookOver(), lb.Term(), la.Term())
	}
	if la.Valid() == nil {
		t.Fatal("the broken holder is still valid when the next one takes over")
	}
}

// TestBreakNow: an immediate break lets the next node take the lease at
// once, in a new epoch; the old holder may still write until its own
// validity runs out (which is what the new epoch is for), but cannot renew.
func TestBreakNow(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, b := newNode(t, s, "a", clk), newNode(t, s, "b", clk)
	la, _ := a.Acquire(ctx, "vol")
	res, err := b.Break(ctx, "vol", true)
	if err != nil || !res.FreeAt.Equal(clk.Now()) {
		t.Fatalf("break now: %+v %v", res, err)
	}
	lb, err := b.Acquire(ctx, "vol")
	if err != nil || !lb.TookOver() || lb.Term() != la.Term()+1 {
		t.Fatalf("acquire after an immediate break: %v", err)
	}
	if err := la.Renew(ctx); !errors.Is(err, ErrLost) || la.Valid() == nil {
		t.Fatalf("the broken holder: renew %v, valid %v", err, la.Valid())
	}
}

// TestBreakStalled: a break that read the record, then stalled while the
// holder renewed, breaks the renewed record and waits for its expiry, not
// the one it first read.
func TestBreakStalled(t *testing.T) {
	mem := objstore.NewMem()
	f := objstore.NewFaulty(mem)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	la, _ := newNode(t, mem, "a", clk).Acquire(ctx, "vol")
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: "lease/", Count: 1, Hook: func(context.Context, objstore.Op, string) {
		clk.Advance(ttl / 3)
		if err := la.Renew(ctx); err != nil {
			t.Error(err)
		}
	}})
	res, err := newNode(t, f, "op", clk).Break(ctx, "vol", false)
	if err != nil {
		t.Fatalf("break while the holder renews: %v", err)
	}
	if want := la.Record().Expires.Add(drift); !res.FreeAt.Equal(want) {
		t.Fatalf("break waits until %s, want %s", res.FreeAt, want)
	}
	if err := la.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("renewal after the break: %v", err)
	}
}

// TestBreakCorrupt: an undecodable record makes Acquire say what to do;
// breaking it is a takeover, with a term above any the record could hold.
func TestBreakCorrupt(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, b := newNode(t, s, "a", clk), newNode(t, s, "b", clk)
	la, _ := a.Acquire(ctx, "vol")
	for i := 0; i < 5; i++ {
		la.Renew(ctx)
	}
	ver, err := s.Put(ctx, Name("vol"), []byte("{not json"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Acquire(ctx, "vol")
	if !errors.Is(err, objstore.ErrCorrupt) || !strings.Contains(err.Error(), "archip lease break") {
		t.Fatalf("acquire over a corrupt record: %v", err)
	}
	for _, now := range []bool{false, true} {
		res, err := b.Break(ctx, "vol", now)
		if err != nil {
			t.Fatalf("break of a corrupt record (now %v): %v", now, err)
		}
		if res.Corrupt == nil {
			t.Fatalf("break does not say the record was corrupt: %+v", res)
		}
		if !now && res.FreeAt.Before(clk.Now().Add(ttl+drift)) {
			t.Fatalf("break of a corrupt record waits only until %s", res.FreeAt)
		}
		if now && !res.FreeAt.Equal(clk.Now()) {
			t.Fatalf("break --now of a corrupt record: free at %s", res.FreeAt)
		}
		if !now {
			s.Put(ctx, Name("vol"), []byte("{not json"))
			ver++
		}
	}
	lb, err := b.Acquire(ctx, "vol")
	if err != nil || !lb.TookOver() || lb.Term() <= uint64(ver) {
		t.Fatalf("acquire after breaking a corrupt record at version %d: %v", ver, err)
	}
	if err := la.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("the old holder's renewal: %v", err)
	}
}
