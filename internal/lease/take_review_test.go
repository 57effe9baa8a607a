package lease

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestTakeWaitsNeverShrink: Take waiting for a holder it cannot ask (no
// Ask, or another process with this node's id and address) that keeps
// renewing waits between looks for the whole time, however long: its
// pause must not overflow into a busy loop over the store.
func TestTakeWaitsNeverShrink(t *testing.T) {
	for _, sameNode := range []bool{false, true} {
		s := objstore.NewMem()
		clk := &fakeClock{t: time.Unix(1000, 0)}
		holder := newNode(t, s, "a", clk)
		l, err := holder.Acquire(ctx, "vol")
		if err != nil {
			t.Fatal(err)
		}
		name := "b"
		if sameNode {
			name = "a"
		}
		var waits []time.Duration
		stop := errors.New("enough")
		taker, err := NewManager(s, Config{Node: name, Addr: name + ":7000", TTL: ttl, MaxDrift: drift, Clock: clk,
			Sleep: func(_ context.Context, d time.Duration) error {
				waits = append(waits, d)
				if len(waits) == 200 {
					return stop
				}
				clk.Advance(d)
				if err := l.Renew(ctx); err != nil {
					t.Fatalf("the holder renewing: %v", err)
				}
				return nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := taker.Take(ctx, "vol"); !errors.Is(err, ErrHeld) {
			t.Fatalf("same node %v: take of a lease held for good: %v", sameNode, err)
		}
		for i, d := range waits {
			if d <= 0 {
				t.Fatalf("same node %v: wait %d of %d is %s (earlier %v): Take polls the store without pause", sameNode, i, len(waits), d, waits[max(0, i-3):i])
			}
		}
	}
}

// TestReleaseUnsettled: a lease released by a holder whose writes may
// still land is free at once, and taken over (new epoch) by whoever
// takes it next, this node included.
func TestReleaseUnsettled(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, b := newNode(t, s, "a", clk), newNode(t, s, "b", clk)
	for _, next := range []*Manager{b, a} {
		la, err := a.Acquire(ctx, "vol")
		if err != nil {
			t.Fatal(err)
		}
		if err := la.ReleaseUnsettled(ctx); err != nil {
			t.Fatal(err)
		}
		l, err := next.Acquire(ctx, "vol")
		if err != nil || !l.TookOver() {
			t.Fatalf("%s acquiring after an unsettled release: took over %v, %v", next.cfg.Node, l != nil && l.TookOver(), err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTakeHandoffSleepsNot: a node whose first write asks the holder to
// hand over (a client switching daemons) takes the lease as soon as the
// holder has answered, which it does once it released: one ask, no
// sleep (the 1 s pause of such a switch in e2e TestRadosPoolsMoveLive
// was not Take's: its pauses between asks double up to TTL/10 and add
// up to about that).
func TestTakeHandoffSleepsNot(t *testing.T) {
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	holder := newNode(t, s, "a", clk)
	l, err := holder.Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	var asks int
	var slept time.Duration
	taker, err := NewManager(s, Config{Node: "b", Addr: "b:7000", TTL: ttl, MaxDrift: drift, Clock: clk,
		Ask: func(_ context.Context, rec Record, volume string) error {
			asks++
			if rec.Owner != "a" || volume != "vol" {
				t.Errorf("asked %q for %s", rec.Owner, volume)
			}
			return l.Release(ctx) // the holder's answer comes after its release
		},
		Sleep: func(_ context.Context, d time.Duration) error { slept += d; clk.Advance(d); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	got, err := taker.Take(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if got.TookOver() || asks != 1 || slept != 0 {
		t.Errorf("take by handoff: took over %v, %d asks, slept %s; want a clean take, 1 ask, no sleep", got.TookOver(), asks, slept)
	}
}
