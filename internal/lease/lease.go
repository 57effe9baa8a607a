// Package lease gives at most one node at a time the right to write a
// volume, across every host that shares a store.
//
// A lease is a small record in the store (object "lease/<volume id>"),
// changed only by compare-and-swap: the owner's node id and address (where
// other nodes ask it to hand over), a term that grows by one at every change
// of owner, and an expiry. The owner renews it before it expires; another
// node may take it once it has expired, bumping the term.
//
// # Safety (invariant I5)
//
// Clocks of different hosts may differ by up to MaxDrift (D). An owner
// reads its clock (S) before it writes a renewal, writes the expiry S+TTL,
// and stops writing at S+TTL-2D on its own clock, as Lease.Valid reports. A
// taker treats a record as expired only when its own clock is past
// expiry+D. In real time the owner stops at most at S+TTL-2D-a and the
// taker takes over at the earliest after S+TTL+D-b, where a and b are the
// two clocks' offsets and |a-b| <= D; so the takeover always comes after
// the owner has stopped, with D to spare. The term then fences what the
// clock cannot: the volume's map head is only written by compare-and-swap,
// so a stale owner's late map write fails instead of landing.
//
// # Handoff
//
// A node that must write a volume whose lease another node holds asks
// that node to hand it over (Config.Ask; HTTPAsk posts to HandoffPath at
// the address in the record): the holder finishes its writes, flushes,
// and releases. A holder that does not answer is waited out: its lease
// expires TTL after its last renewal, and it has stopped writing by then.
// A taker that finds a lease expired rather than released says so
// (Lease.TookOver), so that the volume is reopened in a new epoch and a
// late in-place write of the old holder cannot reach the new map.
//
// Time is injected (Clock, and Config.Sleep for waiting), so tests need
// no sleeps.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

// SystemClock is the real clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time { return time.Now() }

// Record is the stored lease.
type Record struct {
	Owner   string    `json:"owner"`   // node id; "" when released
	Addr    string    `json:"addr"`    // the owner's admin address, for handoff requests
	Term    uint64    `json:"term"`    // grows by one at every change of owner
	Expires time.Time `json:"expires"` // by the owner's clock
}

// Errors. Test with errors.Is; ErrHeld errors are *HeldError.
var (
	ErrHeld  = errors.New("lease: held by another node")
	ErrLost  = errors.New("lease: lost (taken over or broken); this node must stop writing")
	ErrStale = errors.New("lease: no longer valid; renew it before writing")
)

// HeldError says who holds the lease.
type HeldError struct{ Record Record }

func (e *HeldError) Error() string {
	return fmt.Sprintf("lease: held by node %q at %s (term %d) until %s", e.Record.Owner, e.Record.Addr, e.Record.Term, e.Record.Expires.Format(time.RFC3339Nano))
}

func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Config describes this node and the timing every node must agree on.
type Config struct {
	Node     string        // this node's id
	Addr     string        // this node's admin address
	TTL      time.Duration // how long a renewal lasts (default 5s)
	MaxDrift time.Duration // the largest clock difference between hosts (default 500ms)
	Clock    Clock         // default SystemClock

	// Ask asks the holder of a lease (rec) to hand volume over, and
	// returns once it has released it or refused; nil: never ask, wait.
	Ask func(ctx context.Context, rec Record, volume string) error
	// Sleep waits for d or until ctx ends (default: a timer). Tests
	// inject one that moves their fake clock.
	Sleep func(ctx context.Context, d time.Duration) error
	// Logf reports what Take and Keep do about trouble (default: silent).
	Logf func(format string, args ...any)
}

// Validate reports every problem of c at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Node == "" {
		errs = append(errs, errors.New("lease: node id is empty"))
	}
	if c.TTL <= 0 {
		errs = append(errs, fmt.Errorf("lease: TTL %s must be positive", c.TTL))
	}
	if c.MaxDrift < 0 || c.MaxDrift*3 >= c.TTL {
		errs = append(errs, fmt.Errorf("lease: clock drift allowance %s must be under a third of the TTL %s", c.MaxDrift, c.TTL))
	}
	return errors.Join(errs...)
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.TTL == 0 {
		d.TTL = 5 * time.Second
	}
	if d.MaxDrift == 0 {
		d.MaxDrift = 500 * time.Millisecond
	}
	if d.Clock == nil {
		d.Clock = SystemClock{}
	}
	if d.Sleep == nil {
		d.Sleep = sleep
	}
	if d.Logf == nil {
		d.Logf = func(string, ...any) {}
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Name is the lease object of a volume.
func Name(volume string) string { return "lease/" + volume }

// Manager acquires leases for this node.
type Manager struct {
	store objstore.Store
	cfg   Config
}

// NewManager checks cfg (after filling defaults) and returns a Manager.
func NewManager(s objstore.Store, cfg Config) (*Manager, error) {
	c := cfg.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &Manager{store: s, cfg: c}, nil
}

// Lease is a lease this node holds. Its methods may be called
// concurrently.
type Lease struct {
	m        *Manager
	name     string
	tookOver bool // taken from a holder that had not released it

	mu     sync.Mutex // guards the fields below
	rec    Record
	ver    objstore.Version
	validT time.Time // by this node's clock: stop writing at this moment
}

func decode(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: lease record: %v", objstore.ErrCorrupt, err)
	}
	return r, nil
}

// Read returns the stored record of volume (zero Record and version 0 if
// there is none).
func (m *Manager) Read(ctx context.Context, volume string) (Record, objstore.Version, error) {
	b, v, err := m.store.Get(ctx, Name(volume))
	if objstore.IsNotExist(err) {
		return Record{}, 0, nil
	}
	if err != nil {
		return Record{}, 0, err
	}
	r, err := decode(b)
	return r, v, err
}

// free reports whether another node may take r now.
func (m *Manager) free(r Record) bool {
	return r.Owner == "" || m.cfg.Clock.Now().After(r.Expires.Add(m.cfg.MaxDrift))
}

// Acquire takes the lease of volume if it is free, released, expired, or
// already this node's; otherwise it returns a *HeldError naming the owner,
// whom the caller may ask to hand over.
func (m *Manager) Acquire(ctx context.Context, volume string) (*Lease, error) {
	name := Name(volume)
	for {
		cur, ver, err := m.Read(ctx, volume)
		if err != nil {
			return nil, err
		}
		if cur.Owner != m.cfg.Node && !m.free(cur) {
			return nil, &HeldError{Record: cur}
		}
		term := cur.Term
		if cur.Owner != m.cfg.Node || ver == 0 {
			term++
		}
		l := &Lease{m: m, name: name, rec: Record{Owner: m.cfg.Node, Addr: m.cfg.Addr, Term: term}, ver: ver,
			tookOver: cur.Owner != "" && cur.Owner != m.cfg.Node}
		l.mu.Lock()
		err = l.write(ctx)
		l.mu.Unlock()
		if errors.Is(err, ErrLost) {
			continue // someone else changed it meanwhile: look again
		}
		if err != nil {
			return nil, err
		}
		return l, nil
	}
}

// Take acquires the lease of volume like Acquire, but when another node
// holds it, asks that node to hand it over (Config.Ask) and, when it
// does not, waits until the lease is released or has expired. It returns
// when it has the lease or ctx ends.
func (m *Manager) Take(ctx context.Context, volume string) (*Lease, error) {
	var pause time.Duration  // between asks that succeed but lose the race to take the lease
	poll := time.Millisecond // between looks at a lease held by a node that cannot be asked: grows to TTL/10
	for {
		l, err := m.Acquire(ctx, volume)
		var held *HeldError
		if !errors.As(err, &held) {
			return l, err
		}
		rec := held.Record
		if m.cfg.Ask != nil && rec.Addr != "" {
			if pause > 0 {
				if err := m.cfg.Sleep(ctx, pause); err != nil {
					return nil, fmt.Errorf("%w (gave up waiting: %v)", held, err)
				}
			}
			err := m.cfg.Ask(ctx, rec, volume)
			if err == nil {
				pause = min(max(2*pause, time.Millisecond), m.cfg.TTL/10)
				continue
			}
			m.cfg.Logf("lease: asking node %q at %s to hand over volume %s: %v; waiting for its lease to expire", rec.Owner, rec.Addr, volume, err)
		}
		wait := min(poll, m.cfg.TTL/10)
		poll *= 2
		if left := rec.Expires.Add(m.cfg.MaxDrift).Sub(m.cfg.Clock.Now()); left > 0 && left < wait {
			wait = left + time.Millisecond
		}
		if err := m.cfg.Sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("%w (gave up waiting: %v)", held, err)
		}
	}
}

// TookOver reports whether the lease was taken from a holder that had
// not released it (it had expired, or was broken): that holder may be
// alive and finishing a write, so the volume must start a new epoch.
func (l *Lease) TookOver() bool { return l.tookOver }

// Keep renews l every third of the TTL until ctx ends or the lease is
// lost; then it calls lost with the reason and returns. A renewal that
// fails for another reason (the store is unreachable) is retried at the
// next tick; meanwhile Valid turns false when the last renewal runs out.
func (l *Lease) Keep(ctx context.Context, lost func(error)) {
	cfg := &l.m.cfg
	for {
		if err := cfg.Sleep(ctx, cfg.TTL/3); err != nil {
			return
		}
		err := l.Renew(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrLost) {
			lost(err)
			return
		}
		if err != nil {
			cfg.Logf("lease: renewing %s: %v", l.name, err)
		}
	}
}

// write stores l.rec with a fresh expiry, by compare-and-swap on l.ver.
// The caller holds l.mu.
func (l *Lease) write(ctx context.Context) error {
	start := l.m.cfg.Clock.Now()
	rec := l.rec
	rec.Expires = start.Add(l.m.cfg.TTL)
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	v, err := l.m.store.Swap(ctx, l.name, b, l.ver)
	if errors.Is(err, objstore.ErrConflict) {
		return fmt.Errorf("%w: %s", ErrLost, l.name)
	}
	if err != nil {
		return err
	}
	l.rec, l.ver = rec, v
	// Self-fencing: stop before the expiry, early enough that no other
	// node can see it expired while this one still writes.
	l.validT = start.Add(l.m.cfg.TTL - 2*l.m.cfg.MaxDrift)
	return nil
}

// Term returns the lease's term.
func (l *Lease) Term() uint64 { l.mu.Lock(); defer l.mu.Unlock(); return l.rec.Term }

// Record returns the lease as stored.
func (l *Lease) Record() Record { l.mu.Lock(); defer l.mu.Unlock(); return l.rec }

// Valid reports whether this node may still write under the lease: it
// is false once the renewal has run out on this node's clock, and stays
// false until a Renew succeeds.
func (l *Lease) Valid() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.validT.IsZero() {
		return ErrLost
	}
	if !l.m.cfg.Clock.Now().Before(l.validT) {
		return ErrStale
	}
	return nil
}

// Renew extends the lease. ErrLost means another node took it (or it was
// broken): the caller must stop writing for good.
func (l *Lease) Renew(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.validT.IsZero() {
		return ErrLost
	}
	err := l.write(ctx)
	if errors.Is(err, ErrLost) {
		l.validT = time.Time{}
	}
	return err
}

// Release gives the lease up at once (after the caller has flushed), so
// another node can take it without waiting for the expiry.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.validT.IsZero() {
		return ErrLost
	}
	l.validT = time.Time{}
	return l.m.clear(ctx, l.name, l.rec.Term, l.ver)
}

// clear releases the record name by compare-and-swap on ver, keeping its
// term; ErrLost if it changed since ver.
func (m *Manager) clear(ctx context.Context, name string, term uint64, ver objstore.Version) error {
	b, err := json.Marshal(Record{Term: term})
	if err != nil {
		return err
	}
	_, err = m.store.Swap(ctx, name, b, ver)
	if errors.Is(err, objstore.ErrConflict) {
		return fmt.Errorf("%w: %s changed meanwhile", ErrLost, name)
	}
	return err
}

// Break removes whatever holds the lease of volume (the manual
// "archip lease break --force" for a node that will never come back).
// The owner, if it is alive after all, finds out at its next renewal.
func (m *Manager) Break(ctx context.Context, volume string) (Record, error) {
	cur, ver, err := m.Read(ctx, volume)
	if err != nil || ver == 0 {
		return cur, err
	}
	return cur, m.clear(ctx, Name(volume), cur.Term, ver)
}
