package lease

import (
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestBreakRacesUnknownRenewal: a renewal times out but lands; the
// operator breaks the lease before the holder's next renewal. The holder
// must not adopt the broken record (it is not its own write): its next
// renewal and its release find the lease lost, its validity ends, and
// the next taker takes over no earlier than the landed renewal's expiry.
func TestBreakRacesUnknownRenewal(t *testing.T) {
	mem := objstore.NewMem()
	f := objstore.NewFaulty(mem)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, op, b := newNode(t, f, "a", clk), newNode(t, mem, "op", clk), newNode(t, mem, "b", clk)
	la, err := a.Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(ttl / 3)
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: "lease/", Count: 1, Err: objstore.ErrTimeout, ErrAfter: true})
	if err := la.Renew(ctx); !errors.Is(err, objstore.ErrTimeout) {
		t.Fatalf("renewal that timed out: %v", err)
	}
	landed := clk.Now().Add(ttl) // the landed renewal's expiry
	res, err := op.Break(ctx, "vol", false)
	if err != nil || !res.Changed || !res.Prev.Expires.Equal(landed) || !res.FreeAt.Equal(landed.Add(drift)) {
		t.Fatalf("break: %+v, %v", res, err)
	}
	if _, err := b.Acquire(ctx, "vol"); !errors.Is(err, ErrHeld) {
		t.Fatalf("acquiring a broken lease before the landed renewal's expiry: %v", err)
	}
	if err := la.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("renewal after the break: %v", err)
	}
	if !errors.Is(la.Valid(), ErrLost) {
		t.Fatalf("valid after the break: %v", la.Valid())
	}
	if err := la.Release(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("release after the break: %v", err)
	}
	clk.Advance(landed.Add(drift + time.Millisecond).Sub(clk.Now()))
	lb, err := b.Acquire(ctx, "vol")
	if err != nil || !lb.TookOver() {
		t.Fatalf("acquire after the broken lease is free: took over %v, %v", lb != nil && lb.TookOver(), err)
	}
}

// TestBreakCorruptThenHolderRenews: the holder of a record that got
// corrupt in place renews it after a break cleared it: it finds the
// lease lost, it does not overwrite the broken record.
func TestBreakCorruptThenHolderRenews(t *testing.T) {
	mem := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, op := newNode(t, mem, "a", clk), newNode(t, mem, "op", clk)
	la, err := a.Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	_, ver, _ := a.Read(ctx, "vol")
	if _, err := mem.Swap(ctx, Name("vol"), []byte("{not json"), ver); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Acquire(ctx, "vol"); !errors.Is(err, objstore.ErrCorrupt) {
		t.Fatalf("acquire of a corrupt record: %v", err)
	}
	if res, err := op.Break(ctx, "vol", true); err != nil || !res.Changed || res.Corrupt == nil {
		t.Fatalf("break of a corrupt record: %+v, %v", res, err)
	}
	if err := la.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("renewal after the corrupt record was broken: %v", err)
	}
	if rec, _, err := a.Read(ctx, "vol"); err != nil || !rec.Broken {
		t.Fatalf("record after the holder's renewal: %+v, %v", rec, err)
	}
}
