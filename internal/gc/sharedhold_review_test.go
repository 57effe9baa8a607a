package gc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestSharedHoldJoinAfterPause (review of issue 14): this process's VM
// is paused with its shared hold idle (its clock stops with it); a
// collection on another host takes the hold for dead and runs. An
// operation that starts once the VM resumes must wait for that
// collection, as one taking a hold of its own (AcquireHold) does, not
// join the dead hold: it would deduplicate onto blocks the sweep is
// deleting, write its record, and only then find ErrHoldLost.
func TestSharedHoldJoinAfterPause(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	clk := &fakeClock{t: time.Unix(1_000_000, 0)} // this VM's: stopped by the pause
	sh := &SharedHold{S: s, Now: clk.now, Linger: time.Hour}
	r, err := sh.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r(); err != nil {
		t.Fatal(err)
	}
	other := &fakeClock{t: clk.now().Add(recordTTL + maxDrift + time.Second)}
	l, err := acquireLock(ctx, s, other.now)
	if err != nil {
		t.Fatalf("the collection could not take the expired hold for dead: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	r2, err := sh.Acquire(wctx)
	cancel()
	if err == nil {
		r2()
		l.release()
		t.Fatal("an operation joined a hold a running collection took for dead, instead of waiting for the collection")
	}
	l.release()
	r3, err := sh.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r3(); err != nil {
		t.Fatalf("operation after the collection: %v", err)
	}
	sh.Close()
	if n := holdRecords(t, s); n != 0 {
		t.Fatalf("%d hold records after Close", n)
	}
}

// createSeen tells when a hold record is created.
type createSeen struct {
	objstore.Store
	created chan struct{}
}

func (c *createSeen) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	v, err := c.Store.Create(ctx, name, data)
	select {
	case c.created <- struct{}{}:
	default:
	}
	return v, err
}

// TestSharedHoldAcquireCancel (review of issue 14): while one operation
// waits for a running collection to take the shared hold, another whose
// context ends (its client went away, the server shuts down) returns,
// as from AcquireHold, instead of waiting behind the first for as long
// as the collection runs.
func TestSharedHoldAcquireCancel(t *testing.T) {
	ctx := context.Background()
	s := &createSeen{Store: objstore.NewMem(), created: make(chan struct{}, 1)}
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	l, err := acquireLock(ctx, s, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	<-s.created // the lock's
	sh := &SharedHold{S: s, Now: clk.now}
	actx, acancel := context.WithCancel(ctx)
	defer acancel()
	a := make(chan error, 1)
	go func() {
		r, err := sh.Acquire(actx)
		if err == nil {
			r()
		}
		a <- err
	}()
	<-s.created // a's hold, which then waits for the collection
	bctx, bcancel := context.WithCancel(ctx)
	b := make(chan error, 1)
	go func() {
		r, err := sh.Acquire(bctx)
		if err == nil {
			r()
		}
		b <- err
	}()
	bcancel()
	got := false
	select {
	case err := <-b:
		got = true
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Acquire with its context ended: %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("Acquire whose context ended still waits behind another for the collection")
	}
	l.release()
	if err := <-a; err != nil {
		t.Fatal(err)
	}
	if !got {
		<-b
	}
	sh.Close()
}

// TestSharedHoldAfterClose (review of issue 14): an operation that
// starts after Close (a request still in flight when the server's
// shutdown gave up waiting) takes a hold that goes with its end: no
// linger, which the process, exiting, would leave in the store for a
// collection to wait out (about a minute).
func TestSharedHoldAfterClose(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	sh := &SharedHold{S: s, Linger: time.Hour}
	sh.Close()
	r, err := sh.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r(); err != nil {
		t.Fatal(err)
	}
	if n := holdRecords(t, s); n != 0 {
		t.Fatalf("%d hold records left by an operation after Close, want 0", n)
	}
}
