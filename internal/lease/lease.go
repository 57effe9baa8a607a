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
// Time is injected (Clock), so tests need no sleeps.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	return d
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

// Lease is a lease this node holds.
type Lease struct {
	m      *Manager
	name   string
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
		l := &Lease{m: m, name: name, rec: Record{Owner: m.cfg.Node, Addr: m.cfg.Addr, Term: term}, ver: ver}
		err = l.write(ctx)
		if errors.Is(err, ErrLost) {
			continue // someone else changed it meanwhile: look again
		}
		if err != nil {
			return nil, err
		}
		return l, nil
	}
}

// write stores l.rec with a fresh expiry, by compare-and-swap on l.ver.
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
func (l *Lease) Term() uint64 { return l.rec.Term }

// Record returns the lease as stored.
func (l *Lease) Record() Record { return l.rec }

// Valid reports whether this node may still write under the lease: it
// is false once the renewal has run out on this node's clock, and stays
// false until a Renew succeeds.
func (l *Lease) Valid() error {
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
	if l.validT.IsZero() {
		return ErrLost
	}
	rec := Record{Term: l.rec.Term}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = l.m.store.Swap(ctx, l.name, b, l.ver)
	l.validT = time.Time{}
	if errors.Is(err, objstore.ErrConflict) {
		return fmt.Errorf("%w: %s", ErrLost, l.name)
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
	b, err := json.Marshal(Record{Term: cur.Term})
	if err != nil {
		return cur, err
	}
	_, err = m.store.Swap(ctx, Name(volume), b, ver)
	if errors.Is(err, objstore.ErrConflict) {
		return cur, fmt.Errorf("%w: the lease changed while breaking it; look again", ErrLost)
	}
	return cur, err
}
