// Package lease gives at most one node at a time the right to write a
// volume, across every host that shares a store.
//
// A lease is a small record in the store (object "lease/<volume id>"),
// changed only by compare-and-swap: the owner's node id and address (where
// other nodes ask it to hand over), the owning process (Record.Instance)
// and a number for each write (Record.Nonce), a term that grows by one at
// every change of owner, and an expiry. The owner renews it before it
// expires; another node may take it once it has expired, bumping the term.
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
// Valid takes no lock and only reads the clock: a renewal in flight, however
// long the store takes, never delays the check every volume I/O makes. Its
// limit moves forward only after a write succeeded (or was found to have
// landed), to the time read before that write plus TTL-2D.
//
// # Waking up late
//
// Every decision taken on a record read earlier is made by
// compare-and-swap on the version read, so a process that stalls between
// reading and writing (a paused VM, a hung store) acts on nothing that
// changed meanwhile: Acquire reads again, Renew and Release find the lease
// lost (ErrLost), Break breaks the record as it is now. A holder paused
// past its expiry is not valid while paused (its clock ran on), and on
// waking renews only if nobody took the lease meanwhile. A renewal that
// lands after its own validity ran out reports ErrStale.
//
// # Writes whose outcome is unknown
//
// A write that failed with anything but a conflict (a timeout, a lost
// connection) may have landed all the same, now or later. A Lease keeps
// the records of such writes; when a later write conflicts, it reads the
// record back and, if it is one of them (same instance and nonce), adopts
// it and writes again instead of concluding that the lease was lost. A
// Manager whose takeover had an unknown outcome still reports the takeover
// (Lease.TookOver) when it next acquires and finds its own record. A
// holder whose own data writes had an unknown outcome releases with
// ReleaseUnsettled, so that the next taker starts a new epoch out of
// their reach.
//
// # Node ids
//
// Each Manager draws a random instance name: a record with this node's id
// but another instance is another process's (two daemons given the same
// id, or this one before a restart) and is treated as held by another
// node (HeldError.SameNode), until it expires.
//
// # Handoff
//
// A node that must write a volume whose lease another node holds asks
// that node to hand it over (Config.Ask; HTTPAsk posts to HandoffPath at
// the address in the record): the holder finishes its writes, flushes,
// and releases. A holder that does not answer is waited out: its lease
// expires TTL after its last renewal, and it has stopped writing by then.
// A taker that finds a lease expired or broken rather than released says
// so (Lease.TookOver), so that the volume is reopened in a new epoch and a
// late in-place write of the old holder cannot reach the new map.
//
// The same address takes a mover's ask for a new epoch of a volume, which
// the holder begins keeping its lease (EpochPath, HTTPEpochAskToken; a
// move's cut-over, docs/pools.md).
//
// # Fencing
//
// On a store that can fence a client (objstore.Fencer: RADOS blocklists
// it), a record names its holder's connection (Record.Fence), and a taker
// of a lease its holder did not release (expired, or broken) fences that
// connection before it writes the record: from then on the store refuses
// whatever the old holder sends, so a holder under such a lease
// (Lease.Fenced) need not check the map before reporting in-place writes
// durable. A taker that cannot fence such a holder refuses
// (ErrCannotFence) and writes nothing. A clean release names nobody.
//
// # Breaking
//
// Manager.Break (the operator's "archip lease break") replaces the record
// with a broken one: the holder cannot renew it, and whoever takes it next
// takes it over, in a new epoch. Unless told to free it at once, the
// broken record keeps the holder's expiry, so nobody takes it before a
// live holder has stopped writing by its own clock. An undecodable record
// blocks Acquire (it says to break it) and is broken the same way.
//
// Time is injected (Clock, and Config.Sleep for waiting), so tests need
// no sleeps.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
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
	Owner string `json:"owner"` // node id; "" when released or broken
	Addr  string `json:"addr"`  // the owner's admin address, for handoff requests
	Term  uint64 `json:"term"`  // grows by one at every change of owner
	// Expires is by the owner's clock. In a broken record it is the
	// broken holder's expiry (zero: broken at once): nobody may take the
	// lease before it has passed, with the drift allowance.
	Expires time.Time `json:"expires"`
	// Broken: an operator broke the lease (Manager.Break); whoever takes
	// it next takes it over (Lease.TookOver), as from an expired holder.
	Broken bool `json:"broken,omitempty"`
	// Unsettled: released by a holder some of whose writes have an
	// unknown outcome (they may still land, in place, in its epoch's
	// objects); whoever takes it next takes it over, in a new epoch.
	Unsettled bool `json:"unsettled,omitempty"`
	// Instance names the process (the Manager) that wrote the record,
	// and Nonce the write: two daemons given the same node id are told
	// apart, and a node recognises a write of its own whose outcome it
	// did not learn.
	Instance string `json:"instance,omitempty"`
	Nonce    uint64 `json:"nonce,omitempty"`
	// Fence is the holder's store connection as objstore.Fencer names
	// it, when its store can fence: whoever takes the lease over without
	// a clean release (expired or broken) fences it first, so that the
	// store refuses everything the holder sends afterwards. A broken
	// record keeps it.
	Fence string `json:"fence,omitempty"`
}

// same reports whether a and b are one write.
func same(a, b Record) bool {
	return a.Owner == b.Owner && a.Addr == b.Addr && a.Term == b.Term && a.Expires.Equal(b.Expires) &&
		a.Broken == b.Broken && a.Unsettled == b.Unsettled && a.Instance == b.Instance && a.Nonce == b.Nonce && a.Fence == b.Fence
}

// Errors. Test with errors.Is; ErrHeld errors are *HeldError.
var (
	ErrHeld  = errors.New("lease: held by another node")
	ErrLost  = errors.New("lease: lost (taken over or broken); this node must stop writing")
	ErrStale = errors.New("lease: no longer valid; renew it before writing")
	// ErrCannotFence: the lease must be taken over from a holder that
	// relies on being fenced (Record.Fence), and this node cannot fence
	// it. Nothing was written.
	ErrCannotFence = errors.New("lease: cannot fence the holder to take its lease over")
)

// HeldError says who holds the lease.
type HeldError struct {
	Record Record
	// SameNode: the holder has this node's id but is another process:
	// two daemons share a node id, or this one restarted before its old
	// lease expired.
	SameNode bool
}

func (e *HeldError) Error() string {
	r := e.Record
	if r.Broken {
		return fmt.Sprintf("lease: broken by an operator (term %d); free once %s has passed, with the clock drift allowance",
			r.Term, r.Expires.Format(time.RFC3339Nano))
	}
	msg := fmt.Sprintf("lease: held by node %q at %s (term %d) until %s", r.Owner, r.Addr, r.Term, r.Expires.Format(time.RFC3339Nano))
	if e.SameNode {
		msg += fmt.Sprintf("; that is another process with this node's id: two daemons share node id %q (give each a unique --node-id), or this one restarted before its old lease expired", r.Owner)
	}
	return msg
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

// prefix is the prefix of every lease object.
const prefix = "lease/"

// Name is the lease object of a volume.
func Name(volume string) string { return prefix + volume }

// ParseName returns the volume whose lease object is name, if it is one.
func ParseName(name string) (volume string, ok bool) {
	return strings.CutPrefix(name, prefix)
}

// Manager acquires leases for this node.
type Manager struct {
	store objstore.Store
	cfg   Config
	// instance tells this process apart from any other started with the
	// same node id; nonce numbers its writes.
	instance string
	nonce    atomic.Uint64

	mu sync.Mutex
	// fenceID is this node's identity in the store (objstore.Fencer),
	// found once (fenceKnown); "" when the store cannot fence (fenceErr
	// says why).
	fenceKnown bool
	fenceID    string
	fenceErr   error
	// fenceRetry: FenceID failed for a passing reason; not asked again
	// before this time (by the Clock), so that Acquires do not each wait
	// for monitors that do not answer.
	fenceRetry time.Time
	fenceLast  error
	// unknownTakeover: volumes whose last Acquire took the lease over
	// and did not learn whether its write landed. If it did, the next
	// Acquire finds the record its own and must still report a takeover.
	unknownTakeover map[string]bool
	warnedSameNode  map[string]bool // volumes whose HeldError.SameNode was logged
}

// NewManager checks cfg (after filling defaults) and returns a Manager.
func NewManager(s objstore.Store, cfg Config) (*Manager, error) {
	c := cfg.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var b [8]byte
	rand.Read(b[:])
	return &Manager{store: s, cfg: c, instance: hex.EncodeToString(b[:]), unknownTakeover: map[string]bool{}, warnedSameNode: map[string]bool{}}, nil
}

// Instance returns the random name of this Manager in the records it
// writes (Record.Instance).
func (m *Manager) Instance() string { return m.instance }

// Lease is a lease this node holds. Its methods may be called
// concurrently.
type Lease struct {
	m        *Manager
	volume   string
	name     string
	tookOver bool // taken from a holder that had not released it

	// validT is when this node must stop writing, by its clock; nil once
	// the lease is lost or released. Valid reads it without a lock, so
	// I/O never waits for a renewal in flight. Only a write that
	// succeeded (or was found to have landed) moves it forward, to the
	// time read before that write plus TTL-2D.
	validT atomic.Pointer[time.Time]

	wmu     sync.Mutex // serializes writes of the record; guards the fields below
	ver     objstore.Version
	unknown []attempt // writes since ver whose outcome is unknown, oldest first
	state   state
	lostErr error // why, in state lost

	mu  sync.Mutex // guards rec, which only the holder of wmu changes
	rec Record
}

type state int

const (
	held state = iota
	releasing
	released
	lost
)

// attempt is a write whose outcome is unknown.
type attempt struct {
	rec   Record
	start time.Time // read before the write
}

// maxUnknown bounds the writes of unknown outcome a lease remembers;
// forgetting one can only make it conclude that the lease is lost.
const maxUnknown = 16

func decode(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: lease record: %v", objstore.ErrCorrupt, err)
	}
	return r, nil
}

// Read returns the stored record of volume (zero Record and version 0 if
// there is none). An undecodable record is an objstore.ErrCorrupt error,
// returned with the record's version.
func (m *Manager) Read(ctx context.Context, volume string) (Record, objstore.Version, error) {
	b, v, err := m.store.Get(ctx, Name(volume))
	if objstore.IsNotExist(err) {
		return Record{}, 0, nil
	}
	if err != nil {
		return Record{}, 0, err
	}
	r, err := decode(b)
	if err != nil {
		return Record{}, v, fmt.Errorf("%w (%s)", err, Name(volume))
	}
	return r, v, nil
}

// ownFence returns this node's fence identity, or "" when its store
// cannot fence. It keeps the store's answer, and logs once why it cannot,
// unless the store failed for a passing reason (its error does not wrap
// objstore.ErrUnsupport): then it asks again once a TTL has passed.
func (m *Manager) ownFence(ctx context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fenceKnown {
		return m.fenceID, m.fenceErr
	}
	if m.cfg.Clock.Now().Before(m.fenceRetry) {
		return "", m.fenceLast
	}
	f, ok := objstore.AsFencer(m.store)
	if !ok {
		m.fenceKnown, m.fenceErr = true, fmt.Errorf("the store cannot fence a client")
		return "", m.fenceErr
	}
	id, err := f.FenceID(ctx)
	if err != nil && (ctx.Err() != nil || !errors.Is(err, objstore.ErrUnsupport)) {
		if ctx.Err() == nil {
			m.fenceRetry, m.fenceLast = m.cfg.Clock.Now().Add(m.cfg.TTL), err
			m.cfg.Logf("lease: %v; for now this node's records name no store connection to fence (their writers check the map head at every flush), and it cannot take over a lease whose holder relies on being fenced; asking again in %s", err, m.cfg.TTL)
		}
		return "", err
	}
	m.fenceKnown, m.fenceID, m.fenceErr = true, id, err
	if err != nil {
		m.cfg.Logf("lease: %v; this node's writers are not fenced when taken over, so their flushes check the map head (one store round trip each), and it cannot take over a lease whose holder relies on being fenced", err)
	}
	return id, err
}

// fence fences the holder of cur, a record being taken over without a
// clean release, if the holder relies on it (Record.Fence).
func (m *Manager) fence(ctx context.Context, volume string, cur Record) error {
	if cur.Fence == "" {
		return nil
	}
	own, err := m.ownFence(ctx)
	if err == nil && own == cur.Fence {
		err = errors.New("it is this node's own connection to the store (another lease manager in this process)")
	}
	if err == nil {
		f, _ := objstore.AsFencer(m.store) // ownFence found it
		err = f.Fence(ctx, cur.Fence)
	}
	if err != nil {
		return fmt.Errorf("%w: volume %s, held by %q (term %d), whose flushes rely on being fenced when taken over: %v", ErrCannotFence, volume, cur.Owner, cur.Term, err)
	}
	m.cfg.Logf("lease: fenced %s (the store refuses it from now on), the client of node %q, to take over volume %s", cur.Fence, cur.Owner, volume)
	return nil
}

// free reports whether another node may take r now.
func (m *Manager) free(r Record) bool {
	if r.Owner == "" && !r.Broken {
		return true
	}
	return m.cfg.Clock.Now().After(r.Expires.Add(m.cfg.MaxDrift))
}

// Free reports whether this node may take r now, by its clock: r is
// released, or its holder's time ran out (with the drift allowance).
func (m *Manager) Free(r Record) bool { return m.free(r) }

// mine reports whether r was written by this Manager for a lease it holds.
func (m *Manager) mine(r Record) bool {
	return r.Owner == m.cfg.Node && r.Instance == m.instance
}

// Acquire takes the lease of volume if it is free, released, expired, or
// already this Manager's; otherwise it returns a *HeldError naming the
// owner, whom the caller may ask to hand over. A record of another
// process with this node's id is held by another (HeldError.SameNode).
// An undecodable record is an objstore.ErrCorrupt error: only Break
// clears it.
func (m *Manager) Acquire(ctx context.Context, volume string) (*Lease, error) {
	return m.acquire(ctx, volume, false)
}

// AcquireReleased is Acquire that takes nothing over: a lease that is
// held, expired or broken is a *HeldError. For a node that only would
// like the lease (a reader that writes nothing): a takeover fences the
// holder's whole connection (Fencing in the package comment) and starts
// a new epoch, for a holder that may only have been slow to renew.
func (m *Manager) AcquireReleased(ctx context.Context, volume string) (*Lease, error) {
	return m.acquire(ctx, volume, true)
}

func (m *Manager) acquire(ctx context.Context, volume string, released bool) (*Lease, error) {
	name := Name(volume)
	for {
		cur, ver, err := m.Read(ctx, volume)
		if errors.Is(err, objstore.ErrCorrupt) {
			return nil, fmt.Errorf("%w; nobody can write volume %s until it is cleared: run 'archip lease break' on it", err, volume)
		}
		if err != nil {
			return nil, err
		}
		mine := m.mine(cur)
		if !mine && (!m.free(cur) || released && (cur.Owner != "" || cur.Broken)) {
			held := &HeldError{Record: cur, SameNode: cur.Owner == m.cfg.Node}
			if held.SameNode && m.warnSameNode(volume) {
				m.cfg.Logf("%v", held)
			}
			return nil, held
		}
		term := cur.Term
		if !mine || ver == 0 {
			term++
		}
		m.mu.Lock()
		tookOver := !mine && cur.Owner != "" || cur.Broken || cur.Unsettled || mine && m.unknownTakeover[volume]
		m.mu.Unlock()
		if !mine && (cur.Owner != "" || cur.Broken) {
			// NB: before the record is written: a taker that fails to
			// fence must not hold the lease, and once it holds it, it
			// would no longer know whom to fence.
			if err := m.fence(ctx, volume, cur); err != nil {
				return nil, err
			}
		}
		own, _ := m.ownFence(ctx)
		l := &Lease{m: m, volume: volume, name: name, tookOver: tookOver, ver: ver}
		l.wmu.Lock()
		err = l.write(ctx, Record{Owner: m.cfg.Node, Addr: m.cfg.Addr, Term: term, Instance: m.instance, Fence: own}, false)
		l.wmu.Unlock()
		if errors.Is(err, ErrLost) && !errors.Is(err, objstore.ErrFenced) {
			continue // someone else changed it meanwhile: look again
		}
		m.mu.Lock()
		if err == nil {
			delete(m.unknownTakeover, volume)
		} else if tookOver {
			m.unknownTakeover[volume] = true
		}
		m.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return l, nil
	}
}

// warnSameNode reports whether to log that volume's lease is held by
// another process with this node's id: once per volume.
func (m *Manager) warnSameNode(volume string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.warnedSameNode[volume] {
		return false
	}
	m.warnedSameNode[volume] = true
	return true
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
		// A holder with this node's id and address is this node before
		// a restart: asking it would ask this process.
		self := held.SameNode && rec.Addr == m.cfg.Addr
		if m.cfg.Ask != nil && rec.Addr != "" && !self {
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
		poll = min(2*poll, m.cfg.TTL/10)
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

// write stores rec by compare-and-swap on l.ver, with a fresh nonce and
// (unless release) an expiry TTL from now. The caller holds l.wmu.
//
// A write that fails with anything but a conflict may have landed all
// the same (see objstore.Store): it is remembered, and when a later write
// conflicts, the record is read back and, if it is one of those writes,
// adopted, and the write is made again on top of it.
func (l *Lease) write(ctx context.Context, rec Record, release bool) error {
	m := l.m
	for adopted := false; ; adopted = true {
		start := m.cfg.Clock.Now()
		rec.Nonce = m.nonce.Add(1)
		rec.Expires = time.Time{}
		if !release {
			rec.Expires = start.Add(m.cfg.TTL)
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		v, err := m.store.Swap(ctx, l.name, b, l.ver)
		if err == nil {
			l.wrote(rec, v, start, release)
			return nil
		}
		if errors.Is(err, objstore.ErrFenced) {
			// Only a node that took a lease of this one over fences it.
			return fmt.Errorf("%w: %s: this node's client was fenced by a node that took over one of its leases: %w", ErrLost, l.name, err)
		}
		if !errors.Is(err, objstore.ErrConflict) {
			if len(l.unknown) == maxUnknown {
				l.unknown = append(l.unknown[:0], l.unknown[1:]...)
			}
			l.unknown = append(l.unknown, attempt{rec: rec, start: start})
			return fmt.Errorf("lease: writing %s: %w (whether it landed is unknown: the next write finds out)", l.name, err)
		}
		cur, cv, rerr := m.Read(ctx, l.volume)
		if rerr != nil && len(l.unknown) > 0 {
			return fmt.Errorf("lease: %s changed, and reading it back to see whether an earlier write of this node landed failed: %w", l.name, rerr)
		}
		a, ok := l.find(cur)
		if rerr != nil || !ok || adopted {
			return l.lostTo(cur, rerr)
		}
		m.cfg.Logf("lease: %s: an earlier write whose outcome was unknown had landed; carrying on from it", l.name)
		l.wrote(a.rec, cv, a.start, release || a.rec.Owner == "")
		if a.rec.Owner == "" {
			return nil // the release had landed (only Release writes one)
		}
	}
}

// wrote records that rec, written at start, is stored as version v.
func (l *Lease) wrote(rec Record, v objstore.Version, start time.Time, release bool) {
	l.mu.Lock()
	l.rec = rec
	l.mu.Unlock()
	l.ver, l.unknown = v, nil
	if !release {
		// Self-fencing: stop before the expiry, early enough that no
		// other node can see it expired while this one still writes.
		t := start.Add(l.m.cfg.TTL - 2*l.m.cfg.MaxDrift)
		l.validT.Store(&t)
	}
}

// find returns the write of unknown outcome that stored r, if any.
func (l *Lease) find(r Record) (attempt, bool) {
	for _, a := range l.unknown {
		if same(a.rec, r) {
			return a, true
		}
	}
	return attempt{}, false
}

// lostTo is the ErrLost error for a record that changed to cur.
func (l *Lease) lostTo(cur Record, readErr error) error {
	switch {
	case readErr != nil:
		return fmt.Errorf("%w: %s changed", ErrLost, l.name)
	case cur.Broken:
		return fmt.Errorf("%w: %s was broken by an operator", ErrLost, l.name)
	case cur.Owner == l.m.cfg.Node && cur.Instance != l.m.instance:
		return fmt.Errorf("%w: %s was taken by another process with node id %q: give each daemon a unique --node-id", ErrLost, l.name, cur.Owner)
	case cur.Owner == "":
		return fmt.Errorf("%w: %s was released by another", ErrLost, l.name)
	}
	return fmt.Errorf("%w: %s was taken by node %q (term %d)", ErrLost, l.name, cur.Owner, cur.Term)
}

// Fenced reports whether the lease's record names this node's store
// connection (Record.Fence): whoever takes it over without a clean release
// fences that connection first, so the store refuses whatever this node
// sends afterwards. A writer under such a lease need not check, before
// reporting in-place writes durable, that nobody took the volume over.
func (l *Lease) Fenced() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.rec.Fence != "" }

// Term returns the lease's term.
func (l *Lease) Term() uint64 { l.mu.Lock(); defer l.mu.Unlock(); return l.rec.Term }

// Record returns the lease as last stored.
func (l *Lease) Record() Record { l.mu.Lock(); defer l.mu.Unlock(); return l.rec }

// Valid reports whether this node may still write under the lease: it
// is false once the renewal has run out on this node's clock, and stays
// false until a Renew succeeds. It takes no lock: a renewal in flight
// does not delay it.
func (l *Lease) Valid() error {
	t := l.validT.Load()
	if t == nil {
		return ErrLost
	}
	if !l.m.cfg.Clock.Now().Before(*t) {
		return ErrStale
	}
	return nil
}

// Renew extends the lease. ErrLost means another node took it (or it was
// broken, or released): the caller must stop writing for good. ErrStale
// means the renewal landed but took so long that its validity has
// already run out. Any other error leaves the outcome unknown; the next
// renewal finds out.
func (l *Lease) Renew(ctx context.Context) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	switch l.state {
	case lost:
		return l.lostErr
	case releasing, released:
		return fmt.Errorf("%w: %s was released", ErrLost, l.name)
	}
	err := l.write(ctx, l.rec, false)
	if errors.Is(err, ErrLost) {
		l.lose(err)
	}
	if err != nil {
		return err
	}
	if err := l.Valid(); err != nil {
		return fmt.Errorf("%w: the renewal of %s took longer than the lease's validity (TTL - 2 x the clock drift allowance)", err, l.name)
	}
	return nil
}

// lose ends the lease for good. The caller holds l.wmu.
func (l *Lease) lose(why error) {
	l.state, l.lostErr = lost, why
	l.validT.Store(nil)
}

// Release gives the lease up at once (after the caller has flushed), so
// another node can take it without waiting for the expiry. The lease is
// not valid from the moment Release is called. A release that failed
// may be repeated; once one succeeded, Release returns nil.
func (l *Lease) Release(ctx context.Context) error { return l.release(ctx, false) }

// ReleaseUnsettled is Release for a holder some of whose writes failed
// with an unknown outcome (they may still land): the next taker takes
// the lease over (Lease.TookOver), in a new epoch, so that such a late
// write cannot reach what it writes.
func (l *Lease) ReleaseUnsettled(ctx context.Context) error { return l.release(ctx, true) }

func (l *Lease) release(ctx context.Context, unsettled bool) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	switch l.state {
	case lost:
		return l.lostErr
	case released:
		return nil
	}
	l.state = releasing
	l.validT.Store(nil)
	err := l.write(ctx, Record{Term: l.rec.Term, Instance: l.m.instance, Unsettled: unsettled}, true)
	switch {
	case errors.Is(err, ErrLost):
		l.lose(err)
	case err == nil:
		l.state = released
	}
	return err
}

// BreakResult says what Manager.Break did.
type BreakResult struct {
	Prev    Record // the record found; zero if there was none or it was undecodable
	Found   bool   // there was a record
	Corrupt error  // the record could not be decoded (an objstore.ErrCorrupt error)
	Changed bool   // Break wrote a broken record (not when there was none, or it was released)
	// FreeAt is when (by this node's clock) another node may take the
	// lease; a live holder has stopped writing by then.
	FreeAt time.Time
}

// Break breaks the lease of volume, whoever holds it: the manual
// "archip lease break" for a node that will never come back. It replaces
// the record with a broken one (Record.Broken), which its holder cannot
// renew (its next renewal finds the lease lost) and which the next taker
// takes over, in a new epoch (Lease.TookOver). A released lease, or none,
// is left as it is.
//
// Unless now, nobody may take a broken lease before the holder's expiry
// plus the drift allowance (FreeAt), when a live holder has stopped
// writing by its own clock. With now, the lease is free at once: a holder
// still alive may go on writing until its validity runs out (the new
// epoch keeps those late writes out of the new holder's map) and what it
// had not flushed is lost.
//
// An undecodable record is broken too. Its expiry is unknown, but its
// holder has not renewed since Break read it (else the compare-and-swap
// fails and Break reads again), so it stops within one TTL of that read.
// Its term is unknown too: the broken record's term is the corrupt
// record's version, which no term of it can exceed (a term grows by at
// most one per write of the record, a version by at least one).
func (m *Manager) Break(ctx context.Context, volume string, now bool) (BreakResult, error) {
	name := Name(volume)
	for tries := 0; ; tries++ {
		cur, ver, err := m.Read(ctx, volume)
		res := BreakResult{Prev: cur, Found: ver != 0}
		if errors.Is(err, objstore.ErrCorrupt) {
			res.Corrupt = err
		} else if err != nil {
			return res, err
		}
		start := m.cfg.Clock.Now()
		res.FreeAt = start
		if !res.Found || res.Corrupt == nil && cur.Owner == "" && !cur.Broken {
			return res, nil
		}
		rec := Record{Broken: true, Term: cur.Term, Expires: cur.Expires, Instance: m.instance, Nonce: m.nonce.Add(1), Fence: cur.Fence}
		if res.Corrupt != nil {
			rec.Term, rec.Expires = uint64(ver), start.Add(m.cfg.TTL)
		}
		if now {
			rec.Expires = time.Time{}
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return res, err
		}
		_, err = m.store.Swap(ctx, name, b, ver)
		if errors.Is(err, objstore.ErrConflict) && tries < 10 {
			continue // renewed or taken meanwhile: break what is there now
		}
		if err != nil {
			return res, fmt.Errorf("lease: breaking %s: %w (run it again)", name, err)
		}
		res.Changed = true
		if t := rec.Expires.Add(m.cfg.MaxDrift); !rec.Expires.IsZero() && t.After(start) {
			res.FreeAt = t
		}
		return res, nil
	}
}
