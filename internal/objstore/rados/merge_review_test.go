package rados

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"
)

// writeOrPanic runs m.WriteAt and turns a panic into an error.
func writeOrPanic(ctx context.Context, m *writeMerger, name string, p []byte, off int64) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return m.WriteAt(ctx, name, p, off)
}

// A panic in an operation (the NBD server recovers one per request and
// answers EIO) reaches the callers whose writes it carried, in their own
// goroutines, and leaves the object usable: the process does not crash
// (a panic in the goroutine that runs a merged operation would end it),
// and later writes to the object neither hang nor wait forever for an
// operation that never ends.
func TestMergePanic(t *testing.T) {
	l := newOpLog()
	var mu sync.Mutex
	panics := map[int]bool{} // operations (by number) that panic
	ops := 0
	gate := make(chan struct{})
	m := newWriteMerger(1<<20, func(name string, ext []extent, done func(error)) error {
		mu.Lock()
		ops++
		n := ops
		bad := panics[n]
		mu.Unlock()
		if bad {
			panic(fmt.Sprintf("operation %d", n))
		}
		if n == 2 {
			d := done
			done = func(err error) { <-gate; d(err) }
		}
		return l.submit(name, ext, done)
	})
	ctx := context.Background()
	within := func(what string, fn func() error) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- fn() }()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: hung", what)
			return nil
		}
	}

	// The first write, alone (sent from the caller's goroutine), panics.
	panics[1] = true
	if err := within("the panicking write", func() error { return writeOrPanic(ctx, m, "o", []byte{1}, 0) }); err == nil {
		t.Fatal("a write whose operation panicked returned nil")
	}
	// Operation 2 completes once the gate opens; 3 (the queued writes,
	// merged) panics as it is sent.
	panics[3] = true
	errs := make(chan error, 4)
	go func() { errs <- writeOrPanic(ctx, m, "o", []byte{2}, 0) }()
	waitFor(t, "operation 2 in flight", func() bool { mu.Lock(); defer mu.Unlock(); return ops == 2 })
	for i := range 2 {
		go func() { errs <- writeOrPanic(ctx, m, "o", []byte{3}, int64(1+i)) }()
		waitFor(t, "queued", func() bool { return m.waiting("o") == i+1 })
	}
	close(gate)
	var failed int
	for range 3 {
		select {
		case err := <-errs:
			if err != nil {
				failed++
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a write of a merged operation that panicked hung")
		}
	}
	if failed != 2 {
		t.Fatalf("%d writes failed, want the 2 of the panicking operation", failed)
	}
	if err := within("a write after the panics", func() error { return m.WriteAt(ctx, "o", []byte{4}, 3) }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "o idle", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return m.objs["o"] == nil })
}

// Writes whose contexts end at random moments, racing with the
// operations that take them: each returns nil and is in the object, or
// returns its context's error and is not (a queued write left out); none
// hangs, and the object's entry is gone once all returned.
func TestMergeCancelRace(t *testing.T) {
	const writers, rounds = 6, 300
	l := newOpLog()
	applied := map[int]bool{} // write ids seen in an operation
	var amu sync.Mutex
	m := newWriteMerger(16, func(name string, ext []extent, done func(error)) error {
		amu.Lock()
		for _, e := range ext {
			applied[int(e.p[0])<<16|int(e.p[1])<<8|int(e.p[2])] = true
		}
		amu.Unlock()
		return l.submit(name, ext, func(err error) {
			time.Sleep(time.Duration(rand.Intn(200)) * time.Microsecond)
			done(err)
		})
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, cancelled := map[int]bool{}, map[int]bool{}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for r := range rounds {
				id := w<<16 | r
				p := []byte{byte(id >> 16), byte(id >> 8), byte(id)}
				ctx, cancel := context.WithCancel(context.Background())
				if rng.Intn(2) == 0 {
					d := time.Duration(rng.Intn(100)) * time.Microsecond
					go func() {
						time.Sleep(d)
						cancel()
					}()
				}
				err := m.WriteAt(ctx, "o", p, int64(3*w))
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					ok[id] = true
				case errors.Is(err, context.Canceled):
					cancelled[id] = true
				default:
					t.Errorf("write %x: %v", id, err)
				}
				mu.Unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("writes hung")
	}
	amu.Lock()
	defer amu.Unlock()
	for id := range ok {
		if !applied[id] {
			t.Fatalf("write %x returned nil but no operation carried it", id)
		}
	}
	for id := range cancelled {
		if applied[id] {
			t.Fatalf("write %x returned its context's error but an operation carried it", id)
		}
	}
	// The operation that answered the last writes ends just after.
	waitFor(t, "o idle", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return len(m.objs) == 0 })
	if l.maxBusy != 1 {
		t.Fatalf("%d operations in flight on one object", l.maxBusy)
	}
	t.Logf("%d written, %d cancelled while queued, %d operations", len(ok), len(cancelled), len(l.ops))
}
