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
// the operation. Records carry an expiry that their owner renews; a record
// past its expiry (plus the clock drift allowance) belongs to a process
// that died and is ignored and removed.

const (
	lockName   = "gc/lock"
	holdPrefix = "gc/holds/"
	// recordTTL is how long a lock or hold lasts without renewal; owners
	// renew every third of it.
	recordTTL = 60 * time.Second
	maxDrift  = 5 * time.Second
	pollEvery = 500 * time.Millisecond
)

// ErrBusy is returned when another collection is running.
var ErrBusy = errors.New("gc: another garbage collection is running")

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

func encode(owner string, now time.Time) []byte {
	b, _ := json.Marshal(record{Owner: owner, Expires: now.Add(recordTTL)})
	return b
}

func live(b []byte, now time.Time) bool {
	var r record
	if json.Unmarshal(b, &r) != nil {
		return false // garbage in a record is nobody's
	}
	return now.Before(r.Expires.Add(maxDrift))
}

// renewer keeps one record alive until stopped.
type renewer struct {
	stop chan struct{}
	done chan struct{}
}

func renew(s objstore.Store, name, owner string, now Clock) *renewer {
	r := &renewer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		t := time.NewTicker(recordTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-t.C:
				s.Put(context.Background(), name, encode(owner, now()))
			}
		}
	}()
	return r
}

func (r *renewer) halt() { close(r.stop); <-r.done }

// Hold keeps collections from starting while an operation copies
// references. Release it when the operation has persisted its references.
type Hold struct {
	s    objstore.Store
	name string
	r    *renewer
	once sync.Once
}

// AcquireHold waits until no collection runs, then holds one off until
// Release. It gives up when ctx ends.
func AcquireHold(ctx context.Context, s objstore.Store, now Clock) (*Hold, error) {
	owner := newOwner()
	name := holdPrefix + owner
	for {
		if _, err := s.Put(ctx, name, encode(owner, now())); err != nil {
			return nil, fmt.Errorf("gc: take a hold: %w", err)
		}
		b, _, err := s.Get(ctx, lockName)
		if objstore.IsNotExist(err) || (err == nil && !live(b, now())) {
			return &Hold{s: s, name: name, r: renew(s, name, owner, now)}, nil
		}
		s.Delete(ctx, name)
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

// Release ends the hold.
func (h *Hold) Release() {
	h.once.Do(func() {
		h.r.halt()
		h.s.Delete(context.Background(), h.name)
	})
}

// lock is a running collection's exclusion.
type lock struct {
	s objstore.Store
	r *renewer
}

// acquireLock takes the collection lock, then waits until no hold is
// live. A lock left by a dead collection (expired) is taken over.
func acquireLock(ctx context.Context, s objstore.Store, now Clock) (*lock, error) {
	owner := newOwner()
	if _, err := s.Create(ctx, lockName, encode(owner, now())); err != nil {
		if !errors.Is(err, objstore.ErrExists) {
			return nil, fmt.Errorf("gc: take the lock: %w", err)
		}
		b, v, gerr := s.Get(ctx, lockName)
		if gerr != nil {
			return nil, fmt.Errorf("gc: read the lock: %w", gerr)
		}
		if live(b, now()) {
			return nil, ErrBusy
		}
		if _, err := s.Swap(ctx, lockName, encode(owner, now()), v); err != nil {
			return nil, fmt.Errorf("%w (it was taking over an expired lock too)", ErrBusy)
		}
	}
	l := &lock{s: s, r: renew(s, lockName, owner, now)}
	for {
		busy := false
		err := s.List(ctx, holdPrefix, func(in objstore.Info) error {
			b, _, err := s.Get(ctx, in.Name)
			if objstore.IsNotExist(err) {
				return nil
			}
			if err != nil {
				return err
			}
			if live(b, now()) {
				busy = true
			} else {
				s.Delete(ctx, in.Name) // its owner died
			}
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

func (l *lock) release() {
	l.r.halt()
	l.s.Delete(context.Background(), lockName)
}
