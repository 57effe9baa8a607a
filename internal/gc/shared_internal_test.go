package gc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

func holdRecords(t *testing.T, s objstore.Store) int {
	t.Helper()
	n := 0
	if err := s.List(context.Background(), holdPrefix, func(objstore.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// busy reports whether a collection cannot start on s.
func busy(t *testing.T, s objstore.Store, now Clock) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	l, err := acquireLock(ctx, s, now)
	if err != nil {
		return true
	}
	l.release()
	return false
}

// TestSharedHold: operations in flight share one hold record, which
// keeps collections off until the last one ends (and its linger ends);
// an operation that joins never joins a hold that lapsed by the clock.
func TestSharedHold(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	sh := &SharedHold{S: s, Now: clk.now}
	ra, err := sh.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := sh.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := holdRecords(t, s); n != 1 {
		t.Fatalf("%d hold records for two operations, want 1", n)
	}
	if err := ra(); err != nil {
		t.Fatal(err)
	}
	if !busy(t, s, clk.now) {
		t.Fatal("a collection started while an operation used the shared hold")
	}
	if err := rb(); err != nil {
		t.Fatal(err)
	}
	if n := holdRecords(t, s); n != 0 {
		t.Fatalf("%d hold records once idle (no linger), want 0", n)
	}
	if busy(t, s, clk.now) {
		t.Fatal("a collection could not start once the shared hold was idle")
	}

	// Linger: the next operation joins the idle hold; Close ends it.
	sh.Linger = time.Hour
	r1, _ := sh.Acquire(ctx)
	r1()
	r2, _ := sh.Acquire(ctx)
	if err := r2(); err != nil {
		t.Fatal(err)
	}
	if n := holdRecords(t, s); n != 1 {
		t.Fatalf("%d hold records after two operations within the linger, want 1", n)
	}
	if !busy(t, s, clk.now) {
		t.Fatal("a collection started while the shared hold lingered")
	}
	sh.Close()
	if n := holdRecords(t, s); n != 0 {
		t.Fatalf("%d hold records after Close", n)
	}
}

// TestSharedHoldLost: an operation in flight when a collection took the
// shared hold for dead (this process stalled past its expiry) gets
// ErrHoldLost; one that starts after takes a new hold, and gets nil.
func TestSharedHoldLost(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	sh := &SharedHold{S: s, Now: clk.now, Linger: time.Hour}
	ra, err := sh.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clk.advance(recordTTL + maxDrift + time.Second)
	l, err := acquireLock(ctx, s, clk.now)
	if err != nil {
		t.Fatalf("a collection could not take an expired hold for dead: %v", err)
	}
	l.release()
	rb, err := sh.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ra(); !errors.Is(err, ErrHoldLost) {
		t.Fatalf("operation across a collection: %v, want ErrHoldLost", err)
	}
	if err := rb(); err != nil {
		t.Fatalf("operation after the collection: %v", err)
	}
	// The same when the clock did not show the stall (a VM pause): the
	// record, changed by the collection, does.
	rc, _ := sh.Acquire(ctx)
	sh.mu.Lock()
	h := sh.cur.h
	sh.mu.Unlock()
	_, v, _ := s.Get(ctx, h.c.name)
	if _, err := s.Swap(ctx, h.c.name, dead, v); err != nil { // as acquireLock does
		t.Fatal(err)
	}
	s.Delete(ctx, h.c.name)
	if err := rc(); !errors.Is(err, ErrHoldLost) {
		t.Fatalf("operation whose hold a collection changed: %v, want ErrHoldLost", err)
	}
	rd, _ := sh.Acquire(ctx)
	if err := rd(); err != nil {
		t.Fatalf("operation after the lost hold: %v", err)
	}
	sh.Close()
	if n := holdRecords(t, s); n != 0 {
		t.Fatalf("%d hold records after Close", n)
	}
}

// TestSharedHoldConcurrent: operations that come and go at once, with a
// linger firing among them, leave no hold behind and never fail.
func TestSharedHoldConcurrent(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	sh := &SharedHold{S: s, Linger: time.Microsecond}
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < 50; i++ {
				r, err := sh.Acquire(ctx)
				if err == nil {
					err = r()
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	sh.Close()
	if n := holdRecords(t, s); n != 0 {
		t.Fatalf("%d hold records left", n)
	}
}

// TestSharedHoldTurnover: operations that keep coming do not keep a
// waiting collection off for ever: past shareFor, a new operation takes
// a new hold (which waits for a collection that runs), and the old one
// goes with its last operation.
func TestSharedHoldTurnover(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	sh := &SharedHold{S: s, Now: clk.now, Linger: time.Hour}
	ra, _ := sh.Acquire(ctx)
	clk.advance(shareFor - time.Second)
	rb, _ := sh.Acquire(ctx)
	if n := holdRecords(t, s); n != 1 {
		t.Fatalf("%d hold records within shareFor, want 1", n)
	}
	clk.advance(2 * time.Second)
	rc, _ := sh.Acquire(ctx)
	if n := holdRecords(t, s); n != 2 {
		t.Fatalf("%d hold records past shareFor, want 2", n)
	}
	for _, r := range []func() error{ra, rb} {
		if err := r(); err != nil {
			t.Fatal(err)
		}
	}
	if n := holdRecords(t, s); n != 1 {
		t.Fatalf("%d hold records once the old hold's operations ended, want 1", n)
	}
	if err := rc(); err != nil {
		t.Fatal(err)
	}
	// A hold past shareFor goes with its last operation, linger or not;
	// an idle one past shareFor goes when a new one is taken.
	if n := holdRecords(t, s); n != 1 {
		t.Fatalf("%d hold records lingering, want 1", n)
	}
	clk.advance(shareFor)
	rd, _ := sh.Acquire(ctx)
	if n := holdRecords(t, s); n != 1 {
		t.Fatalf("%d hold records after a new hold replaced an idle one, want 1", n)
	}
	clk.advance(shareFor)
	if err := rd(); err != nil {
		t.Fatal(err)
	}
	if n := holdRecords(t, s); n != 0 {
		t.Fatalf("%d hold records after the last operation of a hold past shareFor, want 0", n)
	}
	sh.Close()
	if n := holdRecords(t, s); n != 0 {
		t.Fatalf("%d hold records after Close", n)
	}
}
