package rados

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// writeMerger combines the in-place writes to one object that queue up
// behind a write to it in flight, as librbd's default I/O scheduler
// ("simple") does for sequential ones: while an object has a write in
// flight, the writes to it that arrive wait, and when it completes they go
// as one RADOS write operation carrying each of them as an extent. A
// guest's sequential writes at a queue depth of 8 then cost the OSD about
// two operations instead of 8, and an operation costs an OSD more than
// its bytes: each appends an entry to its placement group's log and trims
// the log, which took a quarter of a memstore OSD's CPU under archip's
// 64 KiB writes (docs/benchmarks.md, "RADOS: archip against RBD without
// cache").
//
// Each WriteAt still returns once its own bytes are written, or with the
// error of the operation that carried them. The extents of an operation
// apply in the order their writes arrived, so where two overlap the
// later one's bytes win, as they would had each run after the one before;
// a write that returned before another began is never reordered after
// it (writes a client has in flight at once have no order: NBD's and
// every Store's contract). At most one operation per object is in flight
// from here, so a write to an object busy with another waits up to one
// operation's time, merged or not; scattered small writes rarely meet
// that (two writes to one 4 MiB object in flight at once).
type writeMerger struct {
	// write runs one operation: the extents, applied in order, in name.
	write func(name string, ext []extent) error
	// limit bounds the bytes of one operation: writes past it wait for
	// the next.
	limit int

	mu   sync.Mutex
	objs map[string]*mergeQueue // objects with an operation in flight
	// merged counts the writes that went in an operation with others
	// before them (tests).
	merged atomic.Int64
}

// extent is a write's bytes and where they go.
type extent struct {
	p   []byte
	off int64
}

// mergeQueue holds the writes waiting for an object's operation in
// flight, in the order they arrived.
type mergeQueue struct {
	waiting []*mergeWrite
}

type mergeWrite struct {
	extent
	done chan error
	// taken: in an operation; from then on its caller must wait for done
	// (the operation reads p). Guarded by writeMerger.mu.
	taken bool
}

func newWriteMerger(limit int, write func(name string, ext []extent) error) *writeMerger {
	return &writeMerger{write: write, limit: limit, objs: map[string]*mergeQueue{}}
}

// WriteAt writes p at off in name, in one operation with other writes to
// name that wait for the same operation in flight. A write whose ctx ends
// while it waits is not written and returns ctx's error; once in an
// operation, it waits for it.
func (m *writeMerger) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	m.mu.Lock()
	q, busy := m.objs[name]
	if !busy {
		m.objs[name] = &mergeQueue{}
		m.mu.Unlock()
		// Deferred: a panic (which the NBD server recovers, answering
		// EIO) must not leave name busy, every later write waiting.
		defer m.next(name)
		return m.write(name, []extent{{p, off}})
	}
	w := &mergeWrite{extent: extent{p, off}, done: make(chan error, 1)}
	q.waiting = append(q.waiting, w)
	m.mu.Unlock()
	select {
	case err := <-w.done:
		return repanic(err)
	case <-ctx.Done():
	}
	m.mu.Lock()
	if !w.taken {
		q.waiting = slices.DeleteFunc(q.waiting, func(x *mergeWrite) bool { return x == w })
		m.mu.Unlock()
		return ctx.Err()
	}
	m.mu.Unlock()
	return repanic(<-w.done)
}

// opPanic carries a panic of an operation that ran in run's goroutine
// to each write it carried, which panics with it in its caller's
// goroutine, as it would have had it run the operation itself.
type opPanic struct{ v any }

func (p opPanic) Error() string { return fmt.Sprintf("panic: %v", p.v) }

func repanic(err error) error {
	if p, ok := err.(opPanic); ok {
		panic(p.v)
	}
	return err
}

// next starts an operation with the writes waiting for name's operation
// that just ended (up to limit bytes, at least one, in arrival order), or
// marks name idle if none wait.
func (m *writeMerger) next(name string) {
	m.mu.Lock()
	q := m.objs[name]
	if len(q.waiting) == 0 {
		delete(m.objs, name)
		m.mu.Unlock()
		return
	}
	n, size := 0, 0
	for n < len(q.waiting) && (n == 0 || size+len(q.waiting[n].p) <= m.limit) {
		size += len(q.waiting[n].p)
		q.waiting[n].taken = true
		n++
	}
	batch := slices.Clone(q.waiting[:n])
	q.waiting = slices.Delete(q.waiting, 0, n)
	m.mu.Unlock()
	go m.run(name, batch)
}

// run writes batch as one operation, answers its writes, then starts
// what waited meanwhile.
func (m *writeMerger) run(name string, batch []*mergeWrite) {
	ext := make([]extent, len(batch))
	for i, w := range batch {
		ext[i] = w.extent
	}
	err := m.runOp(name, ext)
	m.merged.Add(int64(len(batch) - 1))
	for _, w := range batch {
		w.done <- err
	}
	m.next(name)
}

// runOp runs one operation, a panic in it returned as an opPanic: in
// run's goroutine it would end the process.
func (m *writeMerger) runOp(name string, ext []extent) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = opPanic{r}
		}
	}()
	return m.write(name, ext)
}
