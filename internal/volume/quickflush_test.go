package volume

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// crashReads opens the volume id on crash images of m drawn from a few
// seeds and checks that each reads want at off.
func crashReads(t *testing.T, m *objstore.Mem, v *Volume, off int64, want []byte, what string) {
	t.Helper()
	for seed := range uint64(16) {
		c := m.Crash(rand.New(rand.NewPCG(seed, 1)))
		r, err := Open(ctx, c, v.ID(), OpenOptions{})
		if err != nil {
			t.Fatalf("%s: crash image %d: open: %v", what, seed, err)
		}
		got := mustRead(t, r, off, len(want))
		r.Close(ctx)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: crash image %d reads other bytes at %d", what, seed, off)
		}
	}
}

// TestFlushLeavesWritesInFlightRunning (issue 11, the RADOS fsync=32
// row): a flush that stores no map (every write since the last one went
// in place into the volume's own blocks) takes its cut without the gate,
// so a write in flight, which the flush does not cover, neither delays
// it nor, through the gate's waiting writer, holds off the writes after
// it: before, each flush of a guest's queue of writes drained it. The
// write that completed before the flush survives a crash right after it;
// the one in flight is made durable by the next flush.
func TestFlushLeavesWritesInFlightRunning(t *testing.T) {
	m := objstore.NewCrashable()
	s := &stallingWrites{Mem: m, halfway: make(chan struct{}), released: make(chan struct{})}
	v := NewTestVolume(t, s, 2*bs, SmallShift)
	if err := v.WriteAt(ctx, pattern(2*bs, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	before := v.gateCuts.Load()

	a, b := pattern(100, 2), pattern(100, 3)
	if err := v.WriteAt(ctx, a, 10, false); err != nil {
		t.Fatal(err)
	}
	s.armed.Store(true)
	wrote := make(chan error, 1)
	go func() { wrote <- v.WriteAt(ctx, b, bs+10, false) }()
	<-s.halfway
	flushed := make(chan error, 1)
	go func() { flushed <- v.Flush(ctx) }()
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		// (Not a measure of speed: a flush that waits for the stalled
		// write never returns before it is released.)
		close(s.released)
		<-flushed
		t.Fatal("the flush waited for a write in flight that it does not cover")
	}
	if n := v.gateCuts.Load() - before; n != 0 {
		t.Errorf("the flush took its cut holding the gate (%d times); want without", n)
	}
	crashReads(t, m, v, 10, a, "the write completed before the flush")

	close(s.released)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	crashReads(t, m, v, bs+10, b, "the write in flight at the first flush, after the second")
	if n := v.gateCuts.Load() - before; n != 0 {
		t.Errorf("%d flushes took their cut holding the gate; want none", n)
	}
}

// TestFlushOfMapChangeTakesGate: a flush after a write that changed the
// map (a block allocated) or logged a record takes its cut holding the
// gate, as before, and what it covers survives a crash.
func TestFlushOfMapChangeTakesGate(t *testing.T) {
	m := objstore.NewCrashable()
	v := NewTestVolume(t, m, 4*bs, SmallShift)
	before := v.gateCuts.Load()
	a := pattern(bs, 4)
	if err := v.WriteAt(ctx, a, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := v.gateCuts.Load() - before; n != 1 {
		t.Errorf("the flush of an allocating write took its cut holding the gate %d times; want 1", n)
	}
	crashReads(t, m, v, 0, a, "an allocating write")

	// A write logged to a clone's block (copy-on-write through the log).
	id := newClone(t, m, 2)
	l := openLogged(t, m, id, OpenOptions{})
	defer l.Close(ctx)
	before = l.gateCuts.Load()
	c := pattern(100, 5)
	if err := l.WriteAt(ctx, c, 7, false); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	logged := len(l.mu.index) > 0
	l.mu.Unlock()
	if !logged {
		t.Fatal("the clone's write was not logged; the test needs it to be")
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := l.gateCuts.Load() - before; n != 1 {
		t.Errorf("the flush of a logged write took its cut holding the gate %d times; want 1", n)
	}
	crashReads(t, m, l, 7, c, "a logged write")
}
