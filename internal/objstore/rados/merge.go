package rados

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
)

// writeMerger runs the in-place writes to data objects, which return
// before RADOS has them durable, as a file's writes return from the page
// cache: a write returns once librados holds its bytes (it copies them
// into the operation it sends), and Sync waits for the object's
// operations to complete and reports the first that failed. So a guest's
// write costs the daemon no round trip to the OSDs, and its flush one
// wait for what is still in flight, which a write and its flush no longer
// pay one after the other (docs/format.md, "Writes in flight", under the
// RADOS store).
// A read needs no wait: RADOS applies one client's operations on an
// object in the order it sent them, and a write is sent before it
// returns.
//
// It also combines the writes to one object that queue up behind an
// operation in flight, as librbd's default I/O scheduler ("simple") does
// for sequential ones: while an object has an operation in flight, the
// writes to it that arrive wait, and when it completes they go as one
// RADOS write operation carrying each of them as an extent. A guest's
// sequential writes at a queue depth of 8 then cost the OSD about two
// operations instead of 8, and an operation costs an OSD more than its
// bytes: each appends an entry to its placement group's log and trims
// the log, which took a quarter of a memstore OSD's CPU under archip's
// 64 KiB writes (docs/benchmarks.md, "RADOS: archip against RBD without
// cache"). A write that waits returns once its operation is sent (its
// caller's buffer is read until then, and not copied).
//
// The extents of an operation apply in the order their writes arrived,
// so where two overlap the later one's bytes win, as they would had each
// run after the one before; a write that returned before another began is
// never reordered after it (writes a client has in flight at once have no
// order: NBD's and every Store's contract).
//
// A failed operation's error stays with its object: every later Sync of
// it fails, since bytes a write returned for are lost. The objects kept
// for that are those whose writes failed (a fenced writer's, those of a
// full cluster), which the process keeps until it exits.
type writeMerger struct {
	// submit starts one operation: the extents, applied in order, in
	// name. It returns once the store holds their bytes, and calls done
	// with the operation's outcome once it completes (on any thread),
	// unless it returns an error: then nothing was sent.
	submit func(name string, ext []extent, done func(error)) error
	// limit bounds the bytes of one operation: writes past it wait for
	// the next.
	limit int
	// budget bounds the bytes of writes sent or queued and not yet
	// complete: a client that writes faster than the cluster takes it
	// waits in WriteAt.
	budget *semaphore.Weighted

	mu   sync.Mutex
	objs map[string]*mergeQueue // objects with writes not yet complete, or failed
	// merged counts the writes that went in an operation with others
	// before them (tests).
	merged atomic.Int64
}

// inFlightLimit is the budget of a Store's writes sent and not yet
// complete (librbd's cache holds up to 24 MiB dirty by default).
const inFlightLimit = 64 << 20

// extent is a write's bytes and where they go.
type extent struct {
	p   []byte
	off int64
}

// mergeQueue is an object's writes: those waiting for its operation in
// flight, in the order they arrived, and the count of those sent and of
// those complete.
type mergeQueue struct {
	waiting []*mergeWrite
	// busy: an operation is in flight or being started.
	busy bool
	// sent counts the writes in operations started, done those in
	// operations complete; changed is closed (and replaced) when an
	// operation ends.
	sent, done uint64
	changed    chan struct{}
	// err is the first error of a completed operation.
	err error
}

type mergeWrite struct {
	extent
	charge int64
	// started reports the outcome of starting the write's operation.
	started chan error
	// taken: in an operation; from then on its caller must wait for
	// started (the operation reads p). Guarded by writeMerger.mu.
	taken bool
}

func newWriteMerger(limit int, submit func(name string, ext []extent, done func(error)) error) *writeMerger {
	return &writeMerger{submit: submit, limit: limit, budget: semaphore.NewWeighted(inFlightLimit), objs: map[string]*mergeQueue{}}
}

// WriteAt writes p at off in name: it returns once the write is sent, in
// one operation with other writes to name that waited for the same
// operation in flight, or with the error of sending it. The write is
// durable once Sync of name returns nil. A write whose ctx ends before
// it is sent is not written and returns ctx's error.
func (m *writeMerger) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	charge := int64(min(len(p), inFlightLimit))
	if err := m.budget.Acquire(ctx, charge); err != nil {
		return err
	}
	m.mu.Lock()
	q := m.objs[name]
	if q == nil {
		q = &mergeQueue{changed: make(chan struct{})}
		m.objs[name] = q
	}
	if !q.busy {
		q.busy = true
		q.sent++
		m.mu.Unlock()
		return m.start(name, []extent{{p, off}}, charge)
	}
	w := &mergeWrite{extent: extent{p, off}, charge: charge, started: make(chan error, 1)}
	q.waiting = append(q.waiting, w)
	m.mu.Unlock()
	select {
	case err := <-w.started:
		return repanic(err)
	case <-ctx.Done():
	}
	m.mu.Lock()
	if !w.taken {
		q.waiting = slices.DeleteFunc(q.waiting, func(x *mergeWrite) bool { return x == w })
		m.mu.Unlock()
		m.budget.Release(charge)
		return ctx.Err()
	}
	m.mu.Unlock()
	return repanic(<-w.started)
}

// start sends one operation of ext, whose writes are counted in name's
// sent and charged charge bytes of the budget. If it is not sent (an
// error, a panic), they are taken back out, and the writes waiting go
// next.
func (m *writeMerger) start(name string, ext []extent, charge int64) (err error) {
	sent := false
	// Deferred: a panic (which the NBD server recovers, answering EIO)
	// must not leave name busy, every later write waiting.
	defer func() {
		if !sent {
			m.finish(name, len(ext), charge, nil, false)
		}
	}()
	err = m.submit(name, ext, func(err error) { m.finish(name, len(ext), charge, err, true) })
	sent = err == nil
	return err
}

// opPanic carries a panic of an operation that was started in run's
// goroutine to each write it carried, which panics with it in its
// caller's goroutine, as it would have had it started the operation
// itself.
type opPanic struct{ v any }

func (p opPanic) Error() string { return fmt.Sprintf("panic: %v", p.v) }

func repanic(err error) error {
	if p, ok := err.(opPanic); ok {
		panic(p.v)
	}
	return err
}

// finish ends an operation of n writes to name that was sent and has
// completed with err, or (!sent) was not sent after all; then it starts
// an operation with the writes waiting for name (up to limit bytes, at
// least one, in arrival order), if any. It may run on a librados thread,
// so it sends nothing itself: a send may wait for librados's own
// throttle, which that thread releases.
func (m *writeMerger) finish(name string, n int, charge int64, err error, sent bool) {
	m.budget.Release(charge)
	m.mu.Lock()
	q := m.objs[name]
	if sent {
		q.done += uint64(n)
		if err != nil && q.err == nil {
			q.err = err
		}
	} else {
		q.sent -= uint64(n)
	}
	close(q.changed)
	q.changed = make(chan struct{})
	if len(q.waiting) == 0 {
		q.busy = false
		if q.err == nil {
			delete(m.objs, name) // nothing in flight: Sync has nothing to wait for
		}
		m.mu.Unlock()
		return
	}
	k, size := 0, 0
	for k < len(q.waiting) && (k == 0 || size+len(q.waiting[k].p) <= m.limit) {
		size += len(q.waiting[k].p)
		q.waiting[k].taken = true
		k++
	}
	batch := slices.Clone(q.waiting[:k])
	q.waiting = slices.Delete(q.waiting, 0, k)
	q.sent += uint64(k)
	m.mu.Unlock()
	go m.run(name, batch)
}

// run sends batch as one operation and answers its writes.
func (m *writeMerger) run(name string, batch []*mergeWrite) {
	ext := make([]extent, len(batch))
	var charge int64
	for i, w := range batch {
		ext[i] = w.extent
		charge += w.charge
	}
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = opPanic{r}
			}
		}()
		return m.start(name, ext, charge)
	}()
	m.merged.Add(int64(len(batch) - 1))
	for _, w := range batch {
		w.started <- err
	}
}

// Sync waits until every operation that carried a write to name sent
// before it was called has completed, and returns the first error any
// operation on name has had (or ctx's).
func (m *writeMerger) Sync(ctx context.Context, name string) error {
	opErr, err := m.wait(ctx, name)
	if err != nil {
		return err
	}
	return opErr
}

// wait waits as Sync does and returns the first error any operation on
// name has had, apart from ctx's.
func (m *writeMerger) wait(ctx context.Context, name string) (opErr, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.objs[name]
	if q == nil {
		return nil, nil
	}
	// NB: min, since writes being sent that fail to be are taken back
	// out of sent.
	target := q.sent
	for q.done < min(target, q.sent) {
		ch := q.changed
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			m.mu.Lock()
			return nil, ctx.Err()
		}
		m.mu.Lock()
	}
	return q.err, nil
}

// drain waits until no operation is in flight or waiting (Close).
func (m *writeMerger) drain() {
	for {
		m.mu.Lock()
		var q *mergeQueue
		for _, o := range m.objs {
			if o.busy {
				q = o
				break
			}
		}
		if q == nil {
			m.mu.Unlock()
			return
		}
		ch := q.changed
		m.mu.Unlock()
		<-ch
	}
}
