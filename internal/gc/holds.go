package gc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// Exclusion between a collection and the operations that copy references
// to objects that exist already (snapshot, clone, image import, hash).
//
// A collection holds the object "gc/lock"; each such operation holds an
// object "gc/holds/<random>". An operation creates its hold, then looks
// for the lock; a collection creates the lock, then lists the holds. Both
// are compare-and-swap-backed writes followed by reads of the store, so
// at least one of the two sees the other (as in Dekker's algorithm): the
// operation waits for the collection to end, or the collection waits for
// the operation.
//
// Records carry an expiry that their owner renews, always by
// compare-and-swap on the version it wrote last, so that an owner never
// overwrites a record another process changed. A record is dead to others
// once their clock is past its expiry plus maxDrift; see the package doc
// for what each owner does so that it has stopped by then.

const (
	lockName   = "gc/lock"
	holdPrefix = "gc/holds/"
	// recordTTL is how long a lock or hold lasts without renewal; owners
	// renew every third of it.
	recordTTL = 60 * time.Second
	// maxDrift is the largest clock difference between hosts.
	maxDrift  = 5 * time.Second
	pollEvery = 500 * time.Millisecond
)

var (
	// ErrBusy is returned when another collection is running.
	ErrBusy = errors.New("gc: another garbage collection is running")
	// ErrLockLost is returned by a collection that stopped deleting
	// because its lock may have expired.
	ErrLockLost = errors.New("gc: the collection lock may have expired (this process stalled, or could not renew it, for about a minute): stopped deleting; nothing it kept is lost, run gc again")
	// ErrHoldLost is returned when a collection took a hold for dead
	// while its operation ran (the operation stalled past the hold's
	// expiry).
	ErrHoldLost = errors.New("gc: this operation stalled past its hold on garbage collections, and a collection may have deleted objects its result references: check the result (read it), or remove it and run the operation again")
)

type record struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
}

// Clock tells the time; tests inject a fake one.
type Clock func() time.Time

func newOwner() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func encode(owner string, expires time.Time) []byte {
	b, _ := json.Marshal(record{Owner: owner, Expires: expires})
	return b
}

// dead is the record a collection leaves in place of a hold it takes for
// dead, and a collection in place of its lock when it ends.
var dead = encode("", time.Time{})

func decode(b []byte) (record, bool) {
	var r record
	return r, json.Unmarshal(b, &r) == nil
}

func live(b []byte, now time.Time) bool {
	r, ok := decode(b)
	if !ok {
		return false // garbage in a record is nobody's
	}
	return now.Before(r.Expires.Add(maxDrift))
}

// claim is a record this process owns: the lock or a hold.
type claim struct {
	s     objstore.Store
	name  string
	owner string
	now   Clock
	// clockFenced: once the claim's validity has passed by this process's
	// clock, it is lost, even if nobody changed the record. The lock is:
	// operations that take it for dead do not write it. A hold is not: a
	// collection changes a hold it takes for dead before it goes on, so
	// the record's version alone says whether it is still this process's.
	clockFenced bool
	lostErr     error

	mu    sync.Mutex
	ver   objstore.Version // of the record as last written
	until time.Time        // valid until this moment of this process's clock
	lost  bool

	stop chan struct{}
	done chan struct{}
}

// validFrom returns the end of the validity of a record written at
// start (read from this process's clock before the write): others take it
// for dead after start+recordTTL+maxDrift on theirs, which is no earlier
// than start+recordTTL-2*maxDrift on this one.
func validFrom(start time.Time) time.Time { return start.Add(recordTTL - 2*maxDrift) }

// valid reports whether the claim is still this process's by its clock.
func (c *claim) valid() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lost || !c.now().Before(c.until) {
		return c.lostErr
	}
	return nil
}

// held is valid, and checks in the store that the record still carries
// this claim's owner: a process whose clock stopped with it (a VM pause)
// cannot tell by its clock that its claim lapsed, but finds the record
// changed by whoever took it for dead.
func (c *claim) held(ctx context.Context) error {
	if err := c.valid(); err != nil {
		return err
	}
	b, _, err := c.s.Get(ctx, c.name)
	if err != nil && !objstore.IsNotExist(err) {
		return fmt.Errorf("gc: read %s: %w", c.name, err)
	}
	if r, ok := decode(b); err != nil || !ok || r.Owner != c.owner {
		c.mu.Lock()
		c.lost = true
		c.mu.Unlock()
		return c.lostErr
	}
	return nil
}

// renewOnce extends the claim by compare-and-swap on the version it
// wrote. A conflict means another process changed the record: the claim
// is lost. Other errors leave the claim as it was (its validity is not
// extended); the next renewal tries again.
func (c *claim) renewOnce(ctx context.Context) error {
	start := c.now()
	c.mu.Lock()
	ver, lost := c.ver, c.lost || (c.clockFenced && !start.Before(c.until))
	if lost {
		c.lost = true
	}
	c.mu.Unlock()
	if lost {
		return c.lostErr
	}
	rec := encode(c.owner, start.Add(recordTTL))
	nv, err := c.s.Swap(ctx, c.name, rec, ver)
	if errors.Is(err, objstore.ErrConflict) {
		// Only this claim writes its owner id: a record that carries it
		// is one of its own writes, which failed on this side (a
		// timeout) but happened. Adopt its version and try again.
		b, v, gerr := c.s.Get(ctx, c.name)
		if gerr != nil && !objstore.IsNotExist(gerr) {
			return gerr
		}
		if r, ok := decode(b); gerr == nil && ok && r.Owner == c.owner {
			nv, err = c.s.Swap(ctx, c.name, rec, v)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case errors.Is(err, objstore.ErrConflict):
		c.lost = true
		return c.lostErr
	case err != nil:
		return err
	}
	c.ver = nv
	if u := validFrom(start); u.After(c.until) {
		c.until = u
	}
	return nil
}

// keep renews the claim every third of its TTL until halt, or until it
// is lost.
func (c *claim) keep() {
	c.stop, c.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(c.done)
		t := time.NewTicker(recordTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				if err := c.renewOnce(context.Background()); errors.Is(err, c.lostErr) {
					return
				}
			}
		}
	}()
}

func (c *claim) halt() {
	close(c.stop)
	<-c.done
}

// version returns the version last written, and whether the claim is
// known lost.
func (c *claim) version() (objstore.Version, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ver, c.lost
}

// Hold keeps collections from starting while an operation copies
// references. Release it when the operation has persisted its references.
type Hold struct {
	c    *claim
	once sync.Once
	err  error
}

// AcquireHold waits until no collection runs, then holds one off until
// Release. It gives up when ctx ends.
func AcquireHold(ctx context.Context, s objstore.Store, now Clock) (*Hold, error) {
	owner := newOwner()
	c := &claim{s: s, name: holdPrefix + owner, owner: owner, now: now, lostErr: ErrHoldLost}
	for {
		start := now()
		v, err := s.Create(ctx, c.name, encode(owner, start.Add(recordTTL)))
		if err != nil {
			return nil, fmt.Errorf("gc: take a hold: %w", err)
		}
		ok, err := lockFree(ctx, s, now)
		if err == nil && ok {
			c.ver, c.until = v, validFrom(start)
			c.keep()
			return &Hold{c: c}, nil
		}
		s.Delete(ctx, c.name)
		if err != nil {
			return nil, fmt.Errorf("gc: read the collection lock: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("gc: waited for a garbage collection to end: %w", ctx.Err())
		case <-time.After(pollEvery):
		}
	}
}

// lockFree reports whether no collection holds the lock. A lock that
// expired is freed first, by compare-and-swap: its collection may be
// paused rather than dead, its clock stopped with it (a VM pause), and
// then finds out by the record before its next deletion.
func lockFree(ctx context.Context, s objstore.Store, now Clock) (bool, error) {
	b, v, err := s.Get(ctx, lockName)
	switch {
	case objstore.IsNotExist(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("gc: read the collection lock: %w", err)
	case live(b, now()):
		return false, nil
	}
	if r, ok := decode(b); ok && r.Owner == "" {
		return true, nil // free already
	}
	_, err = s.Swap(ctx, lockName, dead, v)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, objstore.ErrConflict), objstore.IsNotExist(err):
		return false, nil // renewed or taken meanwhile: look again
	}
	return false, fmt.Errorf("gc: free the expired collection lock: %w", err)
}

// Valid reports ErrHoldLost once the hold may have expired by this
// process's clock: an operation that checks it before each step that
// copies references stops early instead of finding out at Release.
func (h *Hold) Valid() error { return h.c.valid() }

// Check is Valid, and checks in the store that no collection took the
// hold for dead (one read): a process whose clock stopped with it cannot
// tell otherwise. An operation calls it last before it makes its result
// durable; a stall after it is found out only by Release.
func (h *Hold) Check(ctx context.Context) error { return h.c.held(ctx) }

// Release ends the hold. It returns ErrHoldLost if a collection took the
// hold for dead at any time before Release (the operation stalled past
// its expiry): the operation's result may then reference deleted
// objects. A nil error means that no collection ran while the hold was
// held. Release may be called more than once; it returns the same error.
func (h *Hold) Release() error {
	h.once.Do(func() { h.err = h.release() })
	return h.err
}

func (h *Hold) release() error {
	c := h.c
	c.halt()
	ver, lost := c.version()
	if lost {
		return ErrHoldLost
	}
	// A collection that takes a hold for dead changes it before it goes
	// on (see acquireLock): the version is the fence.
	ctx := context.Background()
	_, v, err := c.s.Get(ctx, c.name)
	if objstore.IsNotExist(err) || (err == nil && v != ver) {
		return ErrHoldLost
	}
	if err != nil {
		return fmt.Errorf("gc: could not confirm that no collection ran during this operation: %w", err)
	}
	c.s.Delete(ctx, c.name) // if this fails, the next collection removes it once expired
	return nil
}

// lock is a running collection's exclusion.
type lock struct{ c *claim }

// acquireLock takes the collection lock, then waits until no hold is
// live. A lock left by a dead collection (expired) is taken over.
func acquireLock(ctx context.Context, s objstore.Store, now Clock) (*lock, error) {
	owner := newOwner()
	c := &claim{s: s, name: lockName, owner: owner, now: now, clockFenced: true, lostErr: ErrLockLost}
	start := now()
	v, err := s.Create(ctx, lockName, encode(owner, start.Add(recordTTL)))
	if err != nil {
		if !errors.Is(err, objstore.ErrExists) {
			return nil, fmt.Errorf("gc: take the lock: %w", err)
		}
		b, old, gerr := s.Get(ctx, lockName)
		if gerr != nil {
			return nil, fmt.Errorf("gc: read the lock: %w", gerr)
		}
		start = now()
		if live(b, start) {
			return nil, ErrBusy
		}
		if v, err = s.Swap(ctx, lockName, encode(owner, start.Add(recordTTL)), old); err != nil {
			return nil, fmt.Errorf("%w (it was taking over an expired lock too)", ErrBusy)
		}
	}
	c.ver, c.until = v, validFrom(start)
	c.keep()
	l := &lock{c: c}
	for {
		busy := false
		err := s.List(ctx, holdPrefix, func(in objstore.Info) error {
			b, v, err := s.Get(ctx, in.Name)
			if objstore.IsNotExist(err) {
				return nil
			}
			if err != nil {
				return err
			}
			if live(b, now()) {
				busy = true
				return nil
			}
			// Its owner died, or stalled past its expiry. Change the record
			// first, so that the owner's renewals and its release find out
			// (its version is their fence); then remove it.
			if _, err := s.Swap(ctx, in.Name, dead, v); err != nil {
				if !errors.Is(err, objstore.ErrConflict) && !objstore.IsNotExist(err) {
					return err
				}
				busy = true // changed meanwhile: look again
				return nil
			}
			s.Delete(ctx, in.Name)
			return nil
		})
		if err == nil && !busy {
			return l, nil
		}
		if err == nil {
			select {
			case <-ctx.Done():
				err = fmt.Errorf("gc: waited for snapshots, clones and imports to finish: %w", ctx.Err())
			case <-time.After(pollEvery):
				continue
			}
		}
		l.release()
		return nil, err
	}
}

// valid reports ErrLockLost once the lock may have expired by this
// process's clock.
func (l *lock) valid() error { return l.c.valid() }

// check is valid, and checks that the lock in the store is still this
// collection's; the collection calls it before every deletion, and must
// not delete anything more once it fails.
func (l *lock) check(ctx context.Context) error { return l.c.held(ctx) }

// release ends the collection: it marks the lock free by compare-and-swap,
// so that it never frees a lock another collection took over.
func (l *lock) release() {
	l.c.halt()
	if ver, lost := l.c.version(); !lost {
		l.c.s.Swap(context.Background(), lockName, dead, ver)
	}
}

// SharedHold shares one hold among the operations of a process that run
// at once, and those that follow within Linger of the last one's end (the
// parts of multipart uploads, a server's uploads): each operation then
// makes two reads of the store, as it joins and at its end (Hold.Check),
// instead of creating and deleting a hold, two durable writes in
// sequence with its own.
//
// Why an operation that joins a hold taken earlier is as safe as one
// that takes its own: the hold was taken by AcquireHold, so no
// collection ran then; a collection that starts later finds the hold
// live and waits for it, or takes it for dead once it expired, and
// then swaps its record to a dead one for good (nothing writes its
// owner again). So an operation whose release finds the record still
// carrying the hold's owner knows that no collection started between
// the hold's acquisition and that moment, which spans the operation;
// one that finds otherwise gets ErrHoldLost, as from Hold.Release. An
// operation joins only a hold that is valid by this process's clock and
// whose record, read as it joins, still carries the owner (a clock
// stopped by a VM pause does not show that a collection took the hold
// for dead and runs); else it takes a new one, which waits for that
// collection.
//
// A collection waits for live holds, and operations that take a hold of
// their own wait for it (AcquireHold): so that operations that keep
// coming do not keep a collection waiting forever, an operation joins
// only a hold taken less than shareFor ago, else takes a new one, and
// the old one goes once its operations end. An idle hold delays a
// collection's start by up to Linger. A process that exits while a hold
// is idle leaves it to expire (a collection takes it for dead after
// about a minute): call Close when done.
type SharedHold struct {
	S   objstore.Store
	Now Clock // nil: time.Now
	// Linger is how long the hold stays once no operation uses it (0:
	// released at once).
	Linger time.Duration

	mu        sync.Mutex
	acq       chan struct{} // on mu, made once: one AcquireHold at a time
	cur       *sharedEntry
	releasing int        // Releases in progress
	closed    bool       // Close was called: holds no longer linger
	released  *sync.Cond // on mu: releasing went down
}

// shareFor is how long after its acquisition a shared hold takes new
// operations.
const shareFor = recordTTL / 3

type sharedEntry struct {
	h     *Hold
	since time.Time // acquired, by the clock
	users int
	idle  *time.Timer // while users == 0
}

// Acquire waits until no collection runs and holds one off until the
// returned function is called, which returns ErrHoldLost if a collection
// took the hold for dead meanwhile (see Hold.Release).
func (sh *SharedHold) Acquire(ctx context.Context) (release func() error, err error) {
	if e, err := sh.joinChecked(ctx); err != nil {
		return nil, err
	} else if e != nil {
		return sh.releaser(e), nil
	}
	sh.mu.Lock()
	if sh.acq == nil {
		sh.acq = make(chan struct{}, 1)
	}
	acq := sh.acq
	sh.mu.Unlock()
	select {
	case acq <- struct{}{}:
	case <-ctx.Done(): // waiting behind another for a collection to end
		return nil, fmt.Errorf("gc: waited for a garbage collection to end: %w", ctx.Err())
	}
	defer func() { <-acq }()
	if e, err := sh.joinChecked(ctx); err != nil {
		return nil, err
	} else if e != nil { // taken while this one waited
		return sh.releaser(e), nil
	}
	now := sh.clock()
	h, err := AcquireHold(ctx, sh.S, now)
	if err != nil {
		return nil, err
	}
	e := &sharedEntry{h: h, since: now(), users: 1}
	sh.mu.Lock()
	old := sh.cur
	sh.cur = e
	sh.mu.Unlock()
	if old != nil {
		sh.retire(old)
	}
	return sh.releaser(e), nil
}

func (sh *SharedHold) clock() Clock {
	if sh.Now == nil {
		return time.Now
	}
	return sh.Now
}

// joinChecked joins the current hold if it is live in the store too
// (one read): this process's clock cannot tell that it stalled (a VM
// pause) while a collection took the hold for dead and started, and an
// operation that joined it then would run alongside that collection,
// finding out only at its end, its result written. With the read, an
// operation joins only a hold that no collection started past, as one
// that takes its own. A hold found lost is left (it takes no more
// operations): the caller takes a new one.
func (sh *SharedHold) joinChecked(ctx context.Context) (*sharedEntry, error) {
	e := sh.join()
	if e == nil {
		return nil, nil
	}
	err := e.h.Check(ctx)
	if err == nil {
		return e, nil
	}
	sh.leave(e, err)
	if errors.Is(err, ErrHoldLost) {
		return nil, nil
	}
	return nil, err
}

// join returns the current hold with one more user, if it is valid and
// takes new operations.
func (sh *SharedHold) join() *sharedEntry {
	now := sh.clock()()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.cur
	if e == nil || e.h.Valid() != nil || !now.Before(e.since.Add(shareFor)) {
		return nil
	}
	e.users++
	if e.idle != nil {
		e.idle.Stop()
		e.idle = nil
	}
	return e
}

// retire releases e once its users are done, and makes sure it is not
// current.
func (sh *SharedHold) retire(e *sharedEntry) {
	sh.mu.Lock()
	if sh.cur == e {
		sh.cur = nil
	}
	free := e.users == 0
	if free && e.idle != nil {
		e.idle.Stop()
		e.idle = nil
	}
	if free {
		sh.releasing++
	}
	sh.mu.Unlock()
	if free {
		e.h.Release()
		sh.mu.Lock()
		sh.releasing--
		if sh.released != nil {
			sh.released.Broadcast()
		}
		sh.mu.Unlock()
	}
}

func (sh *SharedHold) releaser(e *sharedEntry) func() error {
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			err = e.h.Check(context.Background())
			sh.leave(e, err)
		})
		return err
	}
}

// leave ends a user of e, whose check of the hold returned err.
func (sh *SharedHold) leave(e *sharedEntry, err error) {
	now := sh.clock()()
	sh.mu.Lock()
	e.users--
	last := e.users == 0
	// A hold past shareFor takes no more operations: no linger.
	current := sh.cur == e && now.Before(e.since.Add(shareFor))
	linger := sh.Linger > 0 && !sh.closed
	if last && current && err == nil && linger {
		e.idle = time.AfterFunc(sh.Linger, func() { sh.expire(e) })
	}
	sh.mu.Unlock()
	if last && (!current || err != nil || !linger) {
		sh.retire(e)
	}
}

// expire releases e if it stayed idle.
func (sh *SharedHold) expire(e *sharedEntry) {
	sh.mu.Lock()
	idle := e.users == 0 && e.idle != nil
	sh.mu.Unlock()
	if idle {
		sh.retire(e)
	}
}

// Close releases the hold if no operation uses it, and waits for the
// releases in progress; an operation that uses it releases it at its
// end. Holds taken after Close (by operations still in flight) do not
// linger.
func (sh *SharedHold) Close() {
	sh.mu.Lock()
	e := sh.cur
	sh.closed = true
	sh.mu.Unlock()
	if e != nil {
		sh.retire(e)
	}
	sh.mu.Lock()
	if sh.released == nil {
		sh.released = sync.NewCond(&sh.mu)
	}
	for sh.releasing > 0 {
		sh.released.Wait()
	}
	sh.mu.Unlock()
}
