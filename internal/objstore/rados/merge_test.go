package rados

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"
)

// opLog is a fake object store for writeMerger that behaves as RADOS
// does: an operation's extents apply to its in-memory objects, in order,
// when it is sent (and it records them), and the operation completes
// later, in a goroutine of its own; gate, if set, holds every completion
// until it is closed, and err is what a completion reports.
type opLog struct {
	mu   sync.Mutex
	objs map[string][]byte
	ops  [][]extent
	gate chan struct{}
	err  error
	// busy counts operations in flight per object, maxBusy the most seen.
	busy    map[string]int
	maxBusy int
}

func newOpLog() *opLog { return &opLog{objs: map[string][]byte{}, busy: map[string]int{}} }

func (l *opLog) submit(name string, ext []extent, done func(error)) error {
	l.mu.Lock()
	l.busy[name]++
	l.maxBusy = max(l.maxBusy, l.busy[name])
	cp := make([]extent, len(ext))
	for i, e := range ext {
		cp[i] = extent{bytes.Clone(e.p), e.off}
	}
	l.ops = append(l.ops, cp)
	o := l.objs[name]
	for _, e := range ext {
		if end := e.off + int64(len(e.p)); int64(len(o)) < end {
			o = append(o, make([]byte, end-int64(len(o)))...)
		}
		copy(o[e.off:], e.p)
	}
	l.objs[name] = o
	gate := l.gate
	l.mu.Unlock()
	go func() {
		if gate != nil {
			<-gate
		}
		l.mu.Lock()
		l.busy[name]--
		err := l.err
		l.mu.Unlock()
		done(err)
	}()
	return nil
}

// inFlight returns how many operations on name are in flight.
func (l *opLog) inFlight(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.busy[name]
}

// waiting returns how many writes wait behind name's operation.
func (m *writeMerger) waiting(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if q := m.objs[name]; q != nil {
		return len(q.waiting)
	}
	return 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Writes that queue behind one in flight go in one operation, their
// extents in arrival order, so that of two overlapping the later wins.
func TestMergeQueuedWrites(t *testing.T) {
	l := newOpLog()
	l.gate = make(chan struct{})
	m := newWriteMerger(1<<20, l.submit)
	ctx := context.Background()
	errs := make(chan error, 8)
	go func() { errs <- m.WriteAt(ctx, "o", bytes.Repeat([]byte{1}, 4), 0) }()
	waitFor(t, "the first write in flight", func() bool { return l.inFlight("o") == 1 })
	// Queued in this order: 2 at 4, 3 at 8, 4 over 2's second half.
	for i, w := range []extent{{bytes.Repeat([]byte{2}, 4), 4}, {bytes.Repeat([]byte{3}, 4), 8}, {bytes.Repeat([]byte{4}, 2), 6}} {
		go func() { errs <- m.WriteAt(ctx, "o", w.p, w.off) }()
		waitFor(t, fmt.Sprintf("write %d queued", i), func() bool { return m.waiting("o") == i+1 })
	}
	close(l.gate)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "o idle", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return m.objs["o"] == nil })
	if len(l.ops) != 2 || len(l.ops[1]) != 3 {
		t.Fatalf("operations %v, want the first write alone, then the three queued in one", l.ops)
	}
	for i, off := range []int64{4, 8, 6} {
		if l.ops[1][i].off != off {
			t.Fatalf("merged extents %v: not in arrival order", l.ops[1])
		}
	}
	want := []byte{1, 1, 1, 1, 2, 2, 4, 4, 3, 3, 3, 3}
	if !bytes.Equal(l.objs["o"], want) {
		t.Fatalf("object %v, want %v", l.objs["o"], want)
	}
	if got := m.merged.Load(); got != 2 {
		t.Fatalf("merged %d, want 2", got)
	}
	if l.maxBusy != 1 {
		t.Fatalf("%d operations in flight on one object, want at most 1", l.maxBusy)
	}
}

// An operation's error is every write's in it, reported by Sync (the
// writes returned when sent), and by every Sync after it; writes to
// other objects do not wait for it, and Sync waits for the operations in
// flight.
func TestMergeErrorAndOtherObjects(t *testing.T) {
	l := newOpLog()
	l.gate = make(chan struct{})
	m := newWriteMerger(1<<20, l.submit)
	ctx := context.Background()
	errs := make(chan error, 8)
	if err := m.WriteAt(ctx, "o", []byte{1}, 0); err != nil {
		t.Fatalf("a write returned %v before its operation completed", err)
	}
	for i := range 3 {
		go func() { errs <- m.WriteAt(ctx, "o", []byte{2}, int64(i+1)) }()
	}
	waitFor(t, "three queued", func() bool { return m.waiting("o") == 3 })
	if err := m.WriteAt(ctx, "p", []byte{9}, 0); err != nil {
		t.Fatal(err)
	}
	synced := make(chan error, 2)
	go func() { synced <- m.Sync(ctx, "o") }()
	go func() { synced <- m.Sync(ctx, "p") }()
	select {
	case err := <-synced:
		t.Fatalf("Sync returned %v with its object's operation in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	boom := errors.New("boom")
	l.mu.Lock()
	l.err = boom
	l.mu.Unlock()
	close(l.gate)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("a queued write returned %v once sent", err)
		}
	}
	for range 2 {
		if err := <-synced; !errors.Is(err, boom) {
			t.Fatalf("Sync returned %v, want the operation's error", err)
		}
	}
	if err := m.Sync(ctx, "o"); !errors.Is(err, boom) {
		t.Fatalf("Sync after the queued writes' operation: %v, want the error kept", err)
	}
	l.mu.Lock()
	l.err = nil
	l.mu.Unlock()
	if err := m.WriteAt(ctx, "o", []byte{3}, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Sync(ctx, "o"); !errors.Is(err, boom) {
		t.Fatalf("Sync after a later write that succeeded: %v, want the lost write's error kept", err)
	}
	if err := m.Sync(ctx, "q"); err != nil {
		t.Fatalf("Sync of an object never written: %v", err)
	}
}

// A write whose context ends while it waits is not written; one that an
// operation carries is.
func TestMergeCancelWhileWaiting(t *testing.T) {
	l := newOpLog()
	l.gate = make(chan struct{})
	m := newWriteMerger(1<<20, l.submit)
	errs := make(chan error, 8)
	go func() { errs <- m.WriteAt(context.Background(), "o", []byte{1}, 0) }()
	waitFor(t, "the first write in flight", func() bool { return l.inFlight("o") == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() { cancelled <- m.WriteAt(ctx, "o", []byte{7}, 1) }()
	waitFor(t, "queued", func() bool { return m.waiting("o") == 1 })
	go func() { errs <- m.WriteAt(context.Background(), "o", []byte{2}, 2) }()
	waitFor(t, "queued", func() bool { return m.waiting("o") == 2 })
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled write returned %v", err)
	}
	close(l.gate)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if want := []byte{1, 0, 2}; !bytes.Equal(l.objs["o"], want) {
		t.Fatalf("object %v, want %v (the cancelled write left out)", l.objs["o"], want)
	}
}

// An operation carries at most limit bytes (a single bigger write goes
// alone); the rest wait for the next, in order.
func TestMergeLimit(t *testing.T) {
	l := newOpLog()
	l.gate = make(chan struct{})
	m := newWriteMerger(8, l.submit)
	ctx := context.Background()
	errs := make(chan error, 8)
	go func() { errs <- m.WriteAt(ctx, "o", []byte{0}, 0) }()
	waitFor(t, "the first write in flight", func() bool { return l.inFlight("o") == 1 })
	sizes := []int{3, 4, 2, 20, 1}
	off := int64(1)
	for i, n := range sizes {
		go func(off int64) { errs <- m.WriteAt(ctx, "o", bytes.Repeat([]byte{byte(i + 1)}, n), off) }(off)
		off += int64(n)
		waitFor(t, "queued", func() bool { return m.waiting("o") == i+1 })
	}
	close(l.gate)
	for range len(sizes) + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "o idle", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return m.objs["o"] == nil })
	var got [][]int
	for _, op := range l.ops {
		var ns []int
		for _, e := range op {
			ns = append(ns, len(e.p))
		}
		got = append(got, ns)
	}
	if want := "[[1] [3 4] [2] [20] [1]]"; fmt.Sprint(got) != want {
		t.Fatalf("operations of sizes %v, want %s", got, want)
	}
}

// Many writers at once on a few objects: every write lands, and a write
// that returned before another began is never undone by it (each writer
// writes its own slots in sequence, each write covering the one before).
func TestMergeConcurrent(t *testing.T) {
	l := newOpLog()
	m := newWriteMerger(64, l.submit)
	ctx := context.Background()
	const writers, rounds = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for r := range rounds {
				name := fmt.Sprint("o", rng.Intn(3))
				// Writer w owns bytes [8w, 8w+8) of every object: its
				// later write there must win over its earlier ones.
				p := bytes.Repeat([]byte{byte(r)}, 1+rng.Intn(8))
				if err := m.WriteAt(ctx, name, p, int64(8*w)); err != nil {
					t.Error(err)
					return
				}
				l.mu.Lock()
				o := l.objs[name]
				ok := len(o) >= 8*w+len(p) && bytes.Equal(o[8*w:8*w+len(p)], p)
				l.mu.Unlock()
				if !ok {
					t.Errorf("writer %d round %d: %s does not hold the write that returned", w, r, name)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := range 3 {
		if err := m.Sync(ctx, fmt.Sprint("o", i)); err != nil {
			t.Fatal(err)
		}
	}
	m.drain()
	if len(m.objs) != 0 {
		t.Fatalf("%d objects kept after every operation completed without error", len(m.objs))
	}
	if l.maxBusy != 1 {
		t.Fatalf("%d operations in flight on one object, want at most 1", l.maxBusy)
	}
	t.Logf("%d writes, %d operations, %d merged", writers*rounds, len(l.ops), m.merged.Load())
}
