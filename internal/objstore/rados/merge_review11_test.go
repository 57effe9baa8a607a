package rados

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// chaosOps is a fake store for writeMerger whose operations complete
// after a random delay, some with an error, some refused at submit, and
// some panicking at submit. Each write carries its id in its first 8
// bytes; outcome records, per write id, how its operation completed.
type chaosOps struct {
	mu      sync.Mutex
	rng     *rand.Rand
	outcome map[uint64]error // write id -> completed (nil: ok)
	failP   float64          // completion error
	refuseP float64          // submit error
	panicP  float64          // submit panics
}

var errChaos = errors.New("chaos: op failed")
var errRefused = errors.New("chaos: not sent")

func (c *chaosOps) submit(name string, ext []extent, done func(error)) error {
	c.mu.Lock()
	r := c.rng.Float64()
	delay := time.Duration(c.rng.Intn(300)) * time.Microsecond
	var err error
	if c.rng.Float64() < c.failP {
		err = errChaos
	}
	ids := make([]uint64, len(ext))
	for i, e := range ext {
		ids[i] = binary.BigEndian.Uint64(e.p)
	}
	c.mu.Unlock()
	switch {
	case r < c.panicP:
		panic("chaos: submit panics")
	case r < c.panicP+c.refuseP:
		return errRefused
	}
	go func() {
		time.Sleep(delay)
		c.mu.Lock()
		for _, id := range ids {
			c.outcome[id] = err
		}
		c.mu.Unlock()
		done(err)
	}()
	return nil
}

// TestReview11SyncNeverEarly: writes, Syncs and cancellations race on a
// few objects whose operations complete late, some failing, some not
// sent, some panicking at submit. Whenever Sync(name) returns nil, every
// write to name that returned nil before that Sync was called must have
// completed without error; once any completed with an error, every
// later Sync fails. At the end the budget is whole, and no object but
// the failed ones is kept.
func TestReview11SyncNeverEarly(t *testing.T) {
	for seed := int64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			c := &chaosOps{rng: rand.New(rand.NewSource(seed)), outcome: map[uint64]error{}, failP: 0.02, refuseP: 0.03, panicP: 0.02}
			m := newWriteMerger(64<<10, c.submit)
			names := []string{"a", "b", "c"}
			var nextID atomic.Uint64
			// returned[name]: ids of writes that returned nil, in order.
			var rmu sync.Mutex
			returned := map[string][]uint64{}
			failedSeen := map[string]bool{}
			var wg sync.WaitGroup
			var problems []string
			var pmu sync.Mutex
			problem := func(f string, a ...any) {
				pmu.Lock()
				problems = append(problems, fmt.Sprintf(f, a...))
				pmu.Unlock()
			}
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewSource(seed*100 + int64(w)))
					for range 300 {
						name := names[rng.Intn(len(names))]
						if rng.Intn(4) == 0 {
							rmu.Lock()
							before := append([]uint64(nil), returned[name]...)
							sawFail := failedSeen[name]
							rmu.Unlock()
							err := m.Sync(context.Background(), name)
							if err == nil {
								if sawFail {
									problem("Sync(%s) nil after an earlier Sync failed", name)
								}
								c.mu.Lock()
								for _, id := range before {
									o, ok := c.outcome[id]
									if !ok {
										problem("Sync(%s) nil before write %d (returned before the Sync) completed", name, id)
									} else if o != nil {
										problem("Sync(%s) nil though write %d failed: %v", name, id, o)
									}
								}
								c.mu.Unlock()
							} else {
								rmu.Lock()
								failedSeen[name] = true
								rmu.Unlock()
							}
							continue
						}
						id := nextID.Add(1)
						p := make([]byte, 8+rng.Intn(16<<10))
						binary.BigEndian.PutUint64(p, id)
						ctx := context.Background()
						var cancel context.CancelFunc = func() {}
						if rng.Intn(5) == 0 {
							ctx, cancel = context.WithTimeout(ctx, time.Duration(rng.Intn(200))*time.Microsecond)
						}
						err := func() (err error) {
							defer func() {
								if r := recover(); r != nil {
									err = fmt.Errorf("panic: %v", r)
								}
							}()
							return m.WriteAt(ctx, name, p, int64(rng.Intn(1<<20)))
						}()
						cancel()
						// The caller reuses its buffer at once.
						for i := range p {
							p[i] = 0xff
						}
						if err == nil {
							rmu.Lock()
							returned[name] = append(returned[name], id)
							rmu.Unlock()
						}
					}
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("writers or Syncs hung")
			}
			drained := make(chan struct{})
			go func() { m.drain(); close(drained) }()
			select {
			case <-drained:
			case <-time.After(20 * time.Second):
				t.Fatal("drain hung")
			}
			for _, p := range problems {
				t.Error(p)
			}
			if !m.budget.TryAcquire(inFlightLimit) {
				t.Error("budget not whole after every operation ended")
			} else {
				m.budget.Release(inFlightLimit)
			}
			m.mu.Lock()
			for name, q := range m.objs {
				if q.err == nil || q.busy || len(q.waiting) > 0 || q.sent != q.done {
					t.Errorf("object %s left: err %v busy %v waiting %d sent %d done %d", name, q.err, q.busy, len(q.waiting), q.sent, q.done)
				}
			}
			m.mu.Unlock()
		})
	}
}

// TestReview11WriteLargerThanBudget: a write larger than the whole
// budget (charged the budget) goes out, with smaller writes to it and
// other objects around it, without a deadlock, and Sync waits for it.
func TestReview11WriteLargerThanBudget(t *testing.T) {
	ctx := context.Background()
	l := newOpLog()
	m := newWriteMerger(4<<20, l.submit)
	big := make([]byte, inFlightLimit+4096)
	errs := make(chan error, 20)
	for i := range 10 {
		go func() { errs <- m.WriteAt(ctx, "x", make([]byte, 1<<20), int64(i)<<20) }()
		go func() { errs <- m.WriteAt(ctx, fmt.Sprint("y", i%2), make([]byte, 8<<20), 0) }()
	}
	bigErr := make(chan error, 1)
	go func() { bigErr <- m.WriteAt(ctx, "x", big, 0) }()
	for range 20 {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("writes hung beside one larger than the budget")
		}
	}
	select {
	case err := <-bigErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a write larger than the budget hung")
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := m.Sync(sctx, "x"); err != nil {
		t.Fatal(err)
	}
	m.drain()
	if !m.budget.TryAcquire(inFlightLimit) {
		t.Fatal("budget not whole")
	}
}

// TestReview11SyncCtxWhileBlocked: a Sync whose ctx ends while the
// object's operation is held returns ctx's error (not nil), and a later
// Sync after the operation failed reports the failure.
func TestReview11SyncCtxWhileBlocked(t *testing.T) {
	ctx := context.Background()
	l := newOpLog()
	l.gate = make(chan struct{})
	l.err = errChaos
	m := newWriteMerger(1<<20, l.submit)
	if err := m.WriteAt(ctx, "o", []byte("abc"), 0); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := m.Sync(sctx, "o"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync with the op held: %v, want DeadlineExceeded", err)
	}
	close(l.gate)
	for range 3 {
		if err := m.Sync(ctx, "o"); !errors.Is(err, errChaos) {
			t.Fatalf("Sync after the op failed: %v", err)
		}
	}
}
