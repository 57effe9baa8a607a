// Package gc reclaims space: it deletes the objects no map references any
// more, on a live store.
//
// A collection marks, then sweeps. Mark: under the collection lock (see
// holds.go), read the records the catalog object still holds if the store
// is not yet upgraded to format 2 (a half-upgraded store is never taken for
// an empty one), then repair the store's index of the catalog if it has one
// (RADOS: a record missing from it would have its volume swept; an upgrade
// by a binary older than the index writes its records without keys before
// it empties the catalog object), read every record and every volume
// head it names, the maps that objects in buckets and uploaded parts name
// (package bucket), and every head younger than the cutoff (a volume being
// created), and collect what they reference: their segments and the
// content and private blocks in their maps. Sweep: list every object and
// delete those older than the cutoff (start of the collection minus the
// grace period) that were not marked, the catalog's hints older than
// the cutoff that no record points back at (package catalog), and the
// part records older than the cutoff of uploads whose record is gone
// (package bucket, Scan). Names it
// does not know are never deleted. On a store of several backends
// (objstore.Parter: package pools) the sweep lists each part on its own
// and deletes a copy of a block by that copy's age, in its part only. A
// copy of a referenced block is also garbage when it is redundant: no
// volume that references the block is placed in that pool (nor moves
// from it), and a pool where one is placed holds a copy, which the same
// collection keeps (marks.redundant; a move's source copies become
// garbage this way, docs/pools.md).
//
// # Why nothing referenced is deleted (invariant I7)
//
// A reference to an object can appear in three ways:
//   - an operation copies references that exist already into a new map
//     (snapshot, clone) or points a map at an object that exists already
//     (dedup in image import and hash). These hold the store off
//     collections (holds.go), so none runs during a collection: a map they
//     made before it started is a root, and they cannot start before it
//     ends;
//   - a writer points its own map at objects it created since its last
//     flush. Those are younger than the grace period (default an hour) as
//     long as writers flush within it: the daemon flushes every few
//     seconds, and a writer whose unflushed data grew older than a quarter
//     of an hour checks that its objects still exist before it swaps its
//     head, holding collections off meanwhile (a hold, as above: a
//     collection already sweeping ends first), so a stalled writer fails
//     its flush instead of persisting a dangling reference. That check is why the grace period may not be
//     shorter than MinGrace (the check's age plus a margin): with a
//     shorter one, a flush that does not check could reference blocks a
//     collection has deleted;
//   - a writer keeps referencing what its head already referenced: the
//     head is a root, and it is read during the mark.
//
// An error while marking (a corrupt head or segment, an unreadable
// catalog) stops the collection before it deletes anything.
//
// # Stalls and clocks (invariant I9)
//
// Any process may stop for any time at any point and then go on (a VM
// pause, an NFS hang, a stalled OSD), and its clock may differ from other
// hosts' and the store's by up to maxDrift (5 s). What each mechanism
// does for a process that wakes up late:
//
//   - The collection lock is valid, for its owner, until the start of its
//     last successful renewal plus its TTL (a minute) minus twice
//     maxDrift, by the owner's clock; others take it for dead only after
//     its expiry plus maxDrift by theirs, so in real time the owner has
//     stopped first. But a process's clock may stop with it: a VM paused
//     by its hypervisor does not see the pause on its clocks (Go compares
//     times by the monotonic clock, which a host suspend does not advance
//     either). So whoever takes the lock for dead writes it: a collection
//     takes it over, an operation taking a hold frees it (both by
//     compare-and-swap). Before every deletion the collector checks that
//     its lock is valid by its clock and still carries its id in the
//     store (one read), and stops (ErrLockLost) once either fails: a
//     collector that wakes up after its lock expired deletes nothing
//     more from its stale mark. It never renews a lock past its clock's
//     limit, renews only by compare-and-swap on the version it wrote,
//     and frees the lock by compare-and-swap too: it never overwrites nor
//     frees a lock another collection took over.
//   - A hold (snapshot, clone, import, hash) is renewed the same way. A
//     collection takes a hold for dead only after its expiry plus
//     maxDrift, and then first swaps it to a dead record before it goes
//     on; so the hold's version is its owner's fence, whatever the
//     clocks say: Hold.Release reports ErrHoldLost if a collection took
//     the hold for dead at any time during the operation. An operation
//     that wakes up late may already have persisted references to objects
//     the collection deleted; it then fails with ErrHoldLost, and its
//     result must not be used: package manage removes the volume,
//     snapshot, clone or image it registered (it checks the hold last
//     before it creates the record, so only after a stall between that
//     check and the record). A hash, which changes a map in place,
//     checks its hold in the store (Hold.Check) last before its head
//     swap and changes nothing if it is lost, and keeps the private
//     blocks it replaced until Release confirms the hold; if Release
//     finds it lost, the hash repairs its map under a new hold (see
//     manage.Manager.Hash). A snapshot after a takeover, which first
//     seals the volume's map in place, seals the same way.
//     Hold.Valid tells an owner, by its clock,
//     that its hold may have lapsed, to stop early.
//   - The grace period: the cutoff is taken when a collection starts, so
//     a collector that wakes up late is only more conservative. A writer
//     that wakes up late with unflushed data older than its check age
//     finds its deleted objects gone at its next flush (see above).
//     MinGrace's margin (5 minutes) covers the clock differences between
//     the writer, the store and the collector, and the time a flush takes
//     between its age check and its head swap; a writer must fail a flush
//     that took longer.
//
// Not covered: a deletion that the collector checked and sent just before
// it stalled, and that the store applies after the lock expired (the
// store has no conditional delete to fence it); at most one per stall,
// and only harmful if an operation deduplicated onto that very object in
// between. The same holds for store requests stuck in flight longer than
// maxDrift in general.
//
// # Memory
//
// The mark set holds 32 bytes of key per referenced block plus Go map
// overhead, about 60 bytes per referenced object, and the names of heads
// and segments (one per 4096 blocks).
package gc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
	"github.com/archipelago-go/archip/internal/volume"
)

// DefaultGrace is how old an unreferenced object must be to be deleted.
const DefaultGrace = time.Hour

// writerCheckAge is how old a writer's unflushed data may grow before its
// flush checks that the objects still exist, and fails instead of
// persisting a map that points at deleted ones.
const writerCheckAge = volume.MaxUnflushedAge

// graceMargin covers what writerCheckAge does not: clock differences
// between the writer's host, the collector's and the store's, and the
// time a flush takes between its age check and its head swap.
const graceMargin = 5 * time.Minute

// MinGrace is the shortest grace period a collection accepts. A writer's
// unflushed blocks are unreferenced until its next flush; a flush whose
// data is younger than writerCheckAge does not check that its blocks
// still exist, so a grace period shorter than that (plus graceMargin)
// would let a collection delete blocks that the next flush then
// references: a map pointing at nothing.
const MinGrace = writerCheckAge + graceMargin

// ErrGraceTooShort is returned for a grace period below MinGrace.
var ErrGraceTooShort = errors.New("gc: grace period too short")

// CheckGrace refuses a grace period below MinGrace.
func CheckGrace(grace time.Duration) error {
	if grace < MinGrace {
		return fmt.Errorf("%w: %s is below the minimum %s (a writer checks that its unflushed blocks still exist only once they are %s old, and clocks and flushes need %s more): use a grace of at least %s",
			ErrGraceTooShort, grace, MinGrace, writerCheckAge, graceMargin, MinGrace)
	}
	return nil
}

// Options tune a collection.
type Options struct {
	Grace  time.Duration // 0: DefaultGrace; at least MinGrace
	DryRun bool          // report what would be deleted, delete nothing
	Now    Clock         // default time.Now
	// Progress, if set, is called as objects are examined: phase is
	// "mark" (done counts heads) or "sweep" (done counts objects; called
	// with 0 when the sweep starts).
	Progress func(phase string, done int64)

	// shortGrace lets tests that age objects with an injected clock, or
	// that cannot (a real backend), use a grace below MinGrace.
	shortGrace bool
}

// Report says what a collection did.
type Report struct {
	Roots      int     `json:"roots"`      // heads marked from
	Referenced int64   `json:"referenced"` // distinct objects the roots reference
	Examined   int64   `json:"examined"`   // objects listed in the sweep
	Young      int64   `json:"young"`      // kept: younger than the cutoff
	Deleted    Count   `json:"deleted"`    // deleted (or, in a dry run, to delete)
	Failed     int64   `json:"failed"`     // deletions that failed; the next run retries
	DryRun     bool    `json:"dry_run"`
	Seconds    float64 `json:"seconds"`
}

// Count is objects and bytes by kind.
type Count struct {
	Objects  int64 `json:"objects"`
	Bytes    int64 `json:"bytes"`
	Content  int64 `json:"content_blocks"`
	Private  int64 `json:"private_blocks"`
	Segments int64 `json:"map_segments"`
	Heads    int64 `json:"heads"`
	Hints    int64 `json:"catalog_hints"`
	// Redundant: copies of referenced blocks deleted because a pool
	// where a volume referencing them is placed holds another (a store
	// of several pools, after a move), counted in Content or Private too.
	Redundant int64 `json:"redundant_copies"`
}

// marks is what the roots reference.
type marks struct {
	content  map[[32]byte]struct{}
	private  map[[32]byte]struct{} // Entry keys: owner, epoch, seq
	segments map[string]struct{}
	// whole: the segments every entry of which is marked. A head with a
	// delta marks its segments' entries except those its delta
	// overrides (they may be garbage), so another head sharing a
	// segment marks it again.
	whole map[string]struct{}
	heads map[string]struct{}
	logs  map[string]struct{} // write logs the heads name
	// indexes: the write log indexes the heads name; logSegs: the
	// segments of write logs those indexes reference (of logs a head may
	// no longer name: judged per segment, not per log).
	indexes map[string]struct{}
	logSegs map[string]struct{}
	// What the catalog's records name, to judge its hints: the IDs of
	// the records, and the (parent or origin, ID) pairs of lineage.
	catIDs   map[blockmap.ID]struct{}
	catLinks map[[2]blockmap.ID]struct{}
	// orphans: the part records whose upload record is gone (package
	// bucket, Scan), garbage once past the grace period.
	orphans map[string]struct{}

	// On a store of several pools (nil otherwise): for each referenced
	// block, the pools (bits, by index in the router's order) where a
	// volume that references it is placed, its homes (see redundant).
	pools          *pools.Router
	homesC, homesP map[[32]byte]uint64
	wholeHomes     map[string]uint64 // the homes a whole segment was marked with
	cur            uint64            // the homes of the volume being marked
}

// Run collects garbage on s.
func Run(ctx context.Context, s objstore.Store, opts Options) (Report, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	grace := opts.Grace
	if grace == 0 {
		grace = DefaultGrace
	}
	if grace < 0 {
		return Report{}, fmt.Errorf("%w: negative grace period %s", ErrGraceTooShort, grace)
	}
	if err := CheckGrace(grace); err != nil && !opts.shortGrace {
		return Report{}, err
	}
	start := now()
	rep := Report{DryRun: opts.DryRun}
	l, err := acquireLock(ctx, s, now)
	if err != nil {
		return rep, err
	}
	defer l.release()
	cutoff := now().Add(-grace)
	// The records the catalog object still holds (a store of format 1,
	// or one being upgraded), read before the index's repair: an upgrade
	// by a binary older than the index writes records without their keys
	// and then empties the catalog object, so either this read sees them
	// or they were written before the repair, which keys them.
	legacy, err := catalog.New(s).LegacyRecords(ctx)
	if err != nil {
		return rep, fmt.Errorf("gc: mark (nothing was deleted): %w", err)
	}
	// mark trusts the catalog's listing to name every volume: a record
	// missing from an index (RADOS) would have its volume swept.
	if err := objstore.RepairIndexes(ctx, s); err != nil {
		return rep, err
	}
	m, err := mark(ctx, s, legacy, cutoff, &rep, opts.Progress)
	if err != nil {
		return rep, fmt.Errorf("gc: mark (nothing was deleted): %w", err)
	}
	// Each part of a store of several backends on its own (package
	// pools): a copy is deleted on its own age, in its own part only.
	// Parts are the metadata backend, then the pools in order.
	if opts.Progress != nil {
		opts.Progress("sweep", 0)
	}
	for k, p := range objstore.Parts(s) {
		if err = sweep(ctx, p, m, k-1, cutoff, &rep, opts, func() error { return l.check(ctx) }); err != nil {
			break
		}
	}
	rep.Seconds = now().Sub(start).Seconds()
	return rep, err
}

// mark marks what the roots reference: the records of the catalog (legacy:
// those its catalog object held, read by the caller before the index's
// repair) and young heads.
func mark(ctx context.Context, s objstore.Store, legacy []catalog.Record, cutoff time.Time, rep *Report, progress func(string, int64)) (*marks, error) {
	m := &marks{content: map[[32]byte]struct{}{}, private: map[[32]byte]struct{}{},
		segments: map[string]struct{}{}, whole: map[string]struct{}{}, heads: map[string]struct{}{},
		logs: map[string]struct{}{}, orphans: map[string]struct{}{},
		indexes: map[string]struct{}{}, logSegs: map[string]struct{}{},
		catIDs: map[blockmap.ID]struct{}{}, catLinks: map[[2]blockmap.ID]struct{}{}}
	home, err := m.placements(ctx, s)
	if err != nil {
		return nil, err
	}
	origin := map[blockmap.ID]blockmap.ID{} // snapshot → origin: its blocks' owner
	// The legacy records were read before the record objects: an upgrade
	// writes every record before it empties the catalog object, so one of
	// the two reads sees each name. Every record counts, in whatever
	// state of a rename: a rename holds collections off while it creates
	// a record (manage), so a listing cannot miss an ID that moves.
	cat := catalog.New(s)
	roots := map[blockmap.ID]bool{}
	add := func(r catalog.Record) error {
		roots[r.ID] = true
		if r.Kind == catalog.KindSnapshot && !r.Origin.IsZero() {
			origin[r.ID] = r.Origin
		}
		m.catIDs[r.ID] = struct{}{}
		for _, p := range []blockmap.ID{r.Parent, r.Origin} {
			if !p.IsZero() {
				m.catLinks[[2]blockmap.ID{p, r.ID}] = struct{}{}
			}
		}
		return nil
	}
	for _, r := range legacy {
		add(r)
	}
	if err := cat.Scan(ctx, add); err != nil {
		return nil, err
	}
	// The link of a removed volume to what it was made from stays while
	// a link below it does: volume info walks down through it to what
	// was made from it (package catalog, ChildIDs).
	var links [][2]blockmap.ID
	err = s.List(ctx, catalog.ChildPrefix, func(in objstore.Info) error {
		if id, parent, ok := catalog.ParseHint(in.Name); ok && !parent.IsZero() {
			links = append(links, [2]blockmap.ID{parent, id})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	above := map[blockmap.ID]bool{} // IDs with a kept link below them
	for l := range m.catLinks {
		above[l[0]] = true
	}
	for kept := true; kept; {
		kept = false
		for _, l := range links {
			if _, ok := m.catLinks[l]; !ok && above[l[1]] {
				m.catLinks[l] = struct{}{}
				above[l[0]] = true
				kept = true
			}
		}
	}
	// The maps of objects in buckets and of uploaded parts.
	orphan := func(name string) { m.orphans[name] = struct{}{} }
	if err := bucket.Scan(ctx, s, func(id blockmap.ID) { roots[id] = true }, orphan); err != nil {
		return nil, err
	}
	// Heads not in the catalog but young: volumes being made right now.
	err = s.List(ctx, blockmap.VolumesPrefix, func(in objstore.Info) error {
		if n := blockmap.ParseName(in.Name); n.Kind == blockmap.HeadObject && !in.ModTime.Before(cutoff) {
			roots[n.Volume] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Segments are immutable and shared by snapshots and clones: each is
	// read and marked once, so the cost is that of the distinct segments,
	// not of the maps.
	seg := make([]blockmap.Entry, blockmap.SegmentEntries)
	for id := range roots {
		if o, ok := origin[id]; ok {
			m.cur = home(o)
		} else {
			m.cur = home(id)
		}
		marked, err := m.markVolume(ctx, s, id, seg)
		if err != nil {
			return nil, err
		}
		if marked {
			rep.Roots++
			if progress != nil {
				progress("mark", int64(rep.Roots))
			}
		}
	}
	rep.Referenced = int64(len(m.content) + len(m.private) + len(m.segments) + len(m.heads) + len(m.logs) + len(m.indexes) + len(m.logSegs))
	return m, nil
}

// markVolume marks what volume id's head references. A writer may
// replace a segment and delete the old one while this reads them: then it
// reads the head again (what it marked from the older head stays marked,
// which is only ever safe). It reports false if the volume is gone.
func (m *marks) markVolume(ctx context.Context, s objstore.Store, id blockmap.ID, seg []blockmap.Entry) (bool, error) {
	for try := 0; ; try++ {
		h, _, err := volume.ReadHead(ctx, s, id)
		if errors.Is(err, volume.ErrNotFound) {
			return false, nil // removed since the catalog was read
		}
		if err != nil {
			return false, err
		}
		m.heads[blockmap.HeadName(id)] = struct{}{}
		for _, l := range h.Logs {
			m.logs[blockmap.LogName(id, l.Epoch, l.Seq)] = struct{}{}
		}
		if !h.Index.IsZero() {
			// The write log index, and every segment it references. A
			// writer deletes an index only after storing a head that
			// names another: read the head again if it is gone.
			name := blockmap.IndexName(id, h.Index.Epoch, h.Index.Seq)
			b, _, err := s.Get(ctx, name)
			if objstore.IsNotExist(err) && try < 10 {
				continue
			}
			if err != nil {
				return false, fmt.Errorf("write log index %s of volume %s: %w", name, id, err)
			}
			x, err := blockmap.DecodeIndex(b, id, h.Index)
			if err != nil {
				return false, fmt.Errorf("volume %s: %w", id, err)
			}
			m.indexes[name] = struct{}{}
			for _, sg := range x.Segs {
				m.logSegs[sg.Name(id)] = struct{}{}
			}
		}
		overridden := map[int64]bool{}
		for _, d := range h.Delta {
			overridden[d.Block] = true
		}
		vanished := false
		for _, ref := range h.Segments {
			name := ref.Name()
			if _, done := m.whole[name]; done && m.wholeHomes[name]&m.cur == m.cur {
				continue
			}
			b, _, err := s.Get(ctx, name)
			if objstore.IsNotExist(err) && try < 10 {
				vanished = true
				break
			}
			if err != nil {
				return false, fmt.Errorf("segment %s of volume %s: %w", name, id, err)
			}
			if err := blockmap.DecodeSegment(b, ref, seg); err != nil {
				return false, fmt.Errorf("volume %s: %w", id, err)
			}
			m.segments[name] = struct{}{}
			if len(overridden) == 0 {
				m.whole[name] = struct{}{}
				if m.pools != nil {
					m.wholeHomes[name] |= m.cur
				}
			}
			lo := int64(ref.Index) * blockmap.SegmentEntries
			for i, e := range seg {
				if !overridden[lo+int64(i)] {
					m.markEntry(e)
					m.markEntry(e.Base()) // a partial block reads from its base too
				}
			}
		}
		if vanished {
			continue
		}
		for _, d := range h.Delta {
			m.markEntry(d.Entry)
			m.markEntry(d.Entry.Base())
		}
		return true, nil
	}
}

// markEntry marks the object of e (a partial block's own object).
func (m *marks) markEntry(e blockmap.Entry) {
	switch e.Kind() {
	case blockmap.Content:
		m.content[e.Hash()] = struct{}{}
		if m.pools != nil {
			m.homesC[e.Hash()] |= m.cur
		}
	case blockmap.Private, blockmap.Partial:
		m.private[e.Key()] = struct{}{}
		if m.pools != nil {
			m.homesP[e.Key()] |= m.cur
		}
	}
}

// placements prepares m for a store of several pools (package pools),
// and returns the homes of a volume: the bit of its pool, and of the pool
// it moves from during a move (docs/pools.md). On other stores it does
// nothing and every volume's homes are 0. A move swaps a record from one
// pool to two under a hold (no collection runs), and from two to one
// only once the copies are made: a collection never sees fewer homes
// than a block's copies need.
func (m *marks) placements(ctx context.Context, s objstore.Store) (func(blockmap.ID) uint64, error) {
	r, ok := pools.Of(s)
	none := func(blockmap.ID) uint64 { return 0 }
	if !ok || len(r.PoolNames()) < 2 || len(r.PoolNames()) > 64 {
		return none, nil
	}
	bit := map[string]uint64{}
	for i, n := range r.PoolNames() {
		bit[n] = 1 << i
	}
	homes := map[blockmap.ID]uint64{}
	err := s.List(ctx, pools.PlacementPrefix, func(in objstore.Info) error {
		id, ok := pools.ParsePlacementName(in.Name)
		if !ok {
			return nil
		}
		rec, _, err := r.Record(ctx, id)
		if err != nil {
			return err
		}
		if h := bit[rec.Pool] | bit[rec.From]; h != 0 {
			homes[id] = h
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading placements: %w", err)
	}
	m.pools, m.homesC, m.homesP, m.wholeHomes = r, map[[32]byte]uint64{}, map[[32]byte]uint64{}, map[string]uint64{}
	return func(id blockmap.ID) uint64 {
		if h, ok := homes[id]; ok {
			return h
		}
		return 1 // the default pool, first in order
	}, nil
}

// redundant reports whether the copy in pool i of the referenced block
// name may go: no volume that references it is placed in pool i, and a
// pool where one is placed (its home) holds a copy, which this collection
// keeps (a copy in a home is never redundant). So a block keeps at least
// one copy, in a home if it had one there, and lookup order, which tries
// every pool, finds it.
func (m *marks) redundant(ctx context.Context, name string, i int) bool {
	if m.pools == nil || i < 0 {
		return false
	}
	var homes uint64
	switch n := blockmap.ParseName(name); n.Kind {
	case blockmap.ContentObject:
		homes = m.homesC[n.Hash]
	case blockmap.PrivateObject:
		homes = m.homesP[n.Entry.Key()]
	default:
		return false
	}
	if homes == 0 || homes&(1<<i) != 0 {
		return false
	}
	ps := m.pools.PoolNames()
	for q := range ps {
		if homes&(1<<q) == 0 {
			continue
		}
		if ok, err := m.pools.Holds(ctx, ps[q], name); ok && err == nil {
			return true
		}
	}
	return false
}

// garbage classifies an object for the sweep: whether it is garbage, and
// what kind it is. Unknown names are never garbage.
func (m *marks) garbage(name string) (garbage bool, kind string) {
	if id, parent, ok := catalog.ParseHint(name); ok {
		// A hint is stale once no record points back at it.
		if parent.IsZero() {
			_, ref := m.catIDs[id]
			return !ref, "hint"
		}
		_, ref := m.catLinks[[2]blockmap.ID{parent, id}]
		return !ref, "hint"
	}
	if idStr, ok := lease.ParseName(name); ok {
		// A lease record outlives its volume only when a removal was
		// interrupted.
		id, err := blockmap.ParseID(idStr)
		if err != nil {
			return false, ""
		}
		_, ref := m.heads[blockmap.HeadName(id)]
		return !ref, "lease"
	}
	if id, ok := pools.ParsePlacementName(name); ok {
		// Likewise a volume's placement in a pool.
		_, ref := m.heads[blockmap.HeadName(id)]
		return !ref, "placement"
	}
	switch n := blockmap.ParseName(name); n.Kind {
	case blockmap.ContentObject:
		_, ref := m.content[n.Hash]
		return !ref, "content"
	case blockmap.HeadObject:
		_, ref := m.heads[name]
		return !ref, "head"
	case blockmap.SegmentObject:
		_, ref := m.segments[name]
		return !ref, "segment"
	case blockmap.LogObject:
		_, ref := m.logs[n.Log] // (a log, or a segment of one)
		if _, seg := m.logSegs[name]; seg {
			ref = true
		}
		return !ref, "log"
	case blockmap.IndexObject:
		_, ref := m.indexes[name]
		return !ref, "index"
	case blockmap.PrivateObject:
		_, ref := m.private[n.Entry.Key()]
		return !ref, "private"
	case blockmap.PartRecord:
		_, orphan := m.orphans[name]
		return orphan, "part"
	}
	return false, ""
}

// sweep deletes what m does not reference and is older than cutoff.
// Before each deletion it checks that the lock is still valid (see
// "Stalls and clocks" in the package doc).
func sweep(ctx context.Context, s objstore.Store, m *marks, pool int, cutoff time.Time, rep *Report, opts Options, valid func() error) error {
	return s.List(ctx, "", func(in objstore.Info) error {
		rep.Examined++
		if opts.Progress != nil && rep.Examined%1024 == 0 {
			opts.Progress("sweep", rep.Examined)
		}
		garbage, kind := m.garbage(in.Name)
		redundant := false
		if !garbage && (kind == "content" || kind == "private") && m.redundant(ctx, in.Name, pool) {
			garbage, redundant = true, true
		}
		if !garbage {
			return nil
		}
		if !in.ModTime.Before(cutoff) {
			rep.Young++
			return nil
		}
		if !opts.DryRun {
			if err := valid(); err != nil {
				return err
			}
			del := s.Delete
			if kind == "hint" || kind == "part" {
				// Only the version listed: a rename may point a hint anew
				// (a part record is written again only while its upload
				// record exists, under a hold, but the fence costs nothing).
				del = func(ctx context.Context, name string) error { return s.DeleteVersion(ctx, name, in.Version) }
			}
			if err := del(ctx, in.Name); err != nil && !objstore.IsNotExist(err) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				rep.Failed++
				return nil
			}
		}
		c := &rep.Deleted
		if redundant {
			c.Redundant++
		}
		c.Objects++
		c.Bytes += in.Size
		switch kind {
		case "content":
			c.Content++
		case "private":
			c.Private++
		case "segment":
			c.Segments++
		case "head":
			c.Heads++
		case "hint":
			c.Hints++
		}
		return nil
	})
}
