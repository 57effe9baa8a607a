// Package move moves a volume or an image from one data pool of a store
// of several pools (package objstore/pools) to another, while a writer
// may be writing it through any daemon (docs/pools.md, "Moving a
// volume"):
//
//  1. Start: under a gc hold, swap the placement record place/<id> from
//     {pool: S} to {pool: T, from: S}: new private blocks of the volume go
//     to T, and every collection that marks from then on keeps the
//     volume's blocks in both pools. The hold waits for a running
//     collection, which may have marked before the swap, to end.
//  2. New epoch: make the volume's writer go on in an epoch begun after
//     the swap, so that its private blocks of earlier epochs are sealed
//     (no writer changes them in place any more) and its new ones go to
//     T (a process rereads a placement for a volume's new epoch). The
//     mover asks the daemon holding the lease to begin one, keeping the
//     lease (manage.Manager.AskEpoch; the daemon's writer flushes and
//     swaps in a head of the next epoch), then verifies it in the head.
//     When that does not do (no daemon to ask, no answer in time, an
//     epoch that ended with a takeover, not verified), it reopens: it
//     takes the lease (asking the daemon to hand it over, as a handoff
//     does), opens the volume in a new epoch (and seals the blocks of an
//     epoch that ended with a takeover, whose writer may still land a
//     late write in them), then releases it; the daemon takes it back
//     at its next write, in that epoch.
//  3. Copy: walk the volume's map and its snapshots' maps and copy every
//     block they reference that T does not hold (create-if-absent: a
//     content block shared by many volumes is copied once, and a rerun
//     skips what is there). Walk again until a walk copies nothing.
//  4. Switch: swap the record to {pool: T}, with compare-and-swap. The
//     maps do not change: they name no pool. The copies left in S become
//     garbage for gc once no volume placed in S references them.
//
// A crash at any point leaves a state that a rerun finishes (Move with
// the same target) or that Cancel undoes: a cancel is a move back to S,
// by the same steps, so the blocks written to T meanwhile are copied
// back. Nothing is deleted by a move: only gc deletes copies.
package move

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
	"github.com/archipelago-go/archip/internal/volume"
)

var (
	// ErrNotPools: the store is one backend, which has no pools to move
	// between.
	ErrNotPools = errors.New("move: this store is one backend; moves need a store of several pools (--store pools:///FILE; docs/pools.md)")
	// ErrThere: the volume is in the target pool already.
	ErrThere = errors.New("move: already in that pool")
	// ErrMoving: another move of the volume is in progress.
	ErrMoving = errors.New("move: a move of this volume is in progress")
	// ErrNotMoving: nothing to cancel.
	ErrNotMoving = errors.New("move: no move of this volume is in progress")
	// ErrSnapshot: a snapshot moves with its origin.
	ErrSnapshot = errors.New("move: a snapshot's blocks are its origin volume's; move the origin (it moves its snapshots)")
	// ErrUnsettled: the maps kept naming blocks outside the target.
	ErrUnsettled = errors.New("move: the volume kept referencing blocks outside the target pool; run the move again")
)

// Step names, passed to Options.Hook and Progress.
const (
	StepStart    = "start"    // before the placement swap
	StepReopen   = "reopen"   // the record is swapped, before the cut-over (an epoch asked for, or a reopen)
	StepAsked    = "asked"    // the holder answered the ask for a new epoch, before the head is read to verify it
	StepFallback = "fallback" // the ask did not do (no holder, no answer in time, a takeover to seal, not verified), before the reopen
	StepCopy     = "copy"     // before each walk
	StepCopied   = "copied"   // after each block copied
	StepSwitch   = "switch"   // every block is in the target, before the switch
	StepDone     = "done"     // after the switch
	maxWalks     = 8          // walks before ErrUnsettled
	copyWorkers  = 8          // blocks copied at once
	holdRetries  = 5          // start holds lost before giving up
)

// Options tune a move.
type Options struct {
	// Progress, if set, is called at each step and as blocks are walked,
	// never twice at once.
	Progress func(Progress)
	// Rate limits the bytes copied per second (0: no limit).
	Rate int64
	// Hook, if set, is called at each step (Step*), never twice at once;
	// an error stops the move there, as a crash would (tests).
	Hook func(step string) error
	// Sleep waits for the rate limit (default: a timer); several copies
	// may call it at once.
	Sleep func(ctx context.Context, d time.Duration) error
	// EpochWait bounds the wait for the lease holder's answer to the ask
	// for a new epoch at the cut-over (default DefaultEpochWait); past
	// it the move takes the lease instead.
	EpochWait time.Duration
}

// DefaultEpochWait is Options.EpochWait's default: a holder flushes and
// swaps a head in that time unless it stalled.
const DefaultEpochWait = 2 * time.Second

// Progress is where a move is.
type Progress struct {
	Step   string `json:"step"`
	Walk   int    `json:"walk"`   // the walk being done, from 1
	Done   int64  `json:"done"`   // blocks walked in this walk
	Total  int64  `json:"total"`  // blocks to walk in this walk
	Copied int64  `json:"copied"` // blocks copied, all walks
	Bytes  int64  `json:"bytes"`  // bytes copied, all walks
}

// Result says what a move did.
type Result struct {
	Name    string  `json:"name"`
	ID      string  `json:"id"`
	From    string  `json:"from"`
	To      string  `json:"to"`
	Blocks  int64   `json:"blocks"` // distinct blocks referenced
	Copied  int64   `json:"copied"` // blocks copied by this run
	Bytes   int64   `json:"bytes"`  // bytes copied by this run
	Resumed bool    `json:"resumed"`
	Seconds float64 `json:"seconds"`
}

// Move moves the volume or image called name to pool to, or finishes a
// move there that a crash interrupted.
func Move(ctx context.Context, m *manage.Manager, name, to string, opts Options) (Result, error) {
	r, rec, err := lookup(ctx, m, name)
	if err != nil {
		return Result{}, err
	}
	if err := known(r, to); err != nil {
		return Result{}, err
	}
	p, ver, err := r.Record(ctx, rec.ID)
	if err != nil {
		return Result{}, err
	}
	res := Result{Name: name, ID: rec.ID.String(), To: to}
	switch {
	case p.From != "" && p.Pool != to:
		return res, fmt.Errorf("%w: %s moves from pool %s to %s; finish it (--to %s) or undo it (--cancel)", ErrMoving, name, p.From, p.Pool, p.Pool)
	case p.From != "":
		res.From, res.Resumed = p.From, true
	default:
		cur := p.Pool
		if cur == "" {
			cur, _, err = r.Placement(ctx, rec.ID)
			if err != nil {
				return res, err
			}
		}
		if cur == to {
			return res, fmt.Errorf("%w: %s is in pool %s", ErrThere, name, to)
		}
		res.From = cur
		if err := start(ctx, m, r, rec.ID, pools.Record{Pool: to, From: cur}, ver, opts); err != nil {
			return res, err
		}
	}
	return finish(ctx, m, r, rec, res, opts)
}

// Cancel undoes an interrupted move of the volume or image called name:
// it moves it back to the pool it came from, copying back what was
// written to the target meanwhile. Run again after it was interrupted, it
// finishes the cancel (the record says so: pools.Record.Cancel).
func Cancel(ctx context.Context, m *manage.Manager, name string, opts Options) (Result, error) {
	r, rec, err := lookup(ctx, m, name)
	if err != nil {
		return Result{}, err
	}
	p, ver, err := r.Record(ctx, rec.ID)
	if err != nil {
		return Result{}, err
	}
	if p.From == "" {
		return Result{}, fmt.Errorf("%w: %s is in pool %s", ErrNotMoving, name, orDefault(r, p.Pool))
	}
	if p.Cancel {
		// A cancel interrupted: finish it (undoing it would move the
		// volume to where the cancel was asked to take it from).
		res := Result{Name: name, ID: rec.ID.String(), From: p.From, To: p.Pool, Resumed: true}
		return finish(ctx, m, r, rec, res, opts)
	}
	res := Result{Name: name, ID: rec.ID.String(), From: p.Pool, To: p.From}
	if err := start(ctx, m, r, rec.ID, pools.Record{Pool: p.From, From: p.Pool, Cancel: true}, ver, opts); err != nil {
		return res, err
	}
	return finish(ctx, m, r, rec, res, opts)
}

func orDefault(r *pools.Router, pool string) string {
	if pool == "" {
		return r.PoolNames()[0]
	}
	return pool
}

func lookup(ctx context.Context, m *manage.Manager, name string) (*pools.Router, *catalog.Record, error) {
	r, ok := pools.Of(m.Store)
	if !ok {
		return nil, nil, ErrNotPools
	}
	rec, err := m.Lookup(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	if rec.Kind == catalog.KindSnapshot {
		return nil, nil, fmt.Errorf("%w: %s", ErrSnapshot, name)
	}
	return r, rec, nil
}

func known(r *pools.Router, pool string) error {
	for _, n := range r.PoolNames() {
		if n == pool {
			return nil
		}
	}
	return fmt.Errorf("%w: %q (this store has %s)", pools.ErrNoPool, pool, strings.Join(r.PoolNames(), ", "))
}

// start swaps the placement record under a gc hold: a collection that
// marked before the swap (and so may take the target's new copies for
// redundant) has ended once the hold is taken, and one that marks after
// it keeps the volume's blocks in both pools. If the hold lapsed (this
// process stalled), it takes one again, to wait out any collection that
// took it over.
func start(ctx context.Context, m *manage.Manager, r *pools.Router, id blockmap.ID, rec pools.Record, ver objstore.Version, opts Options) error {
	if err := hook(opts, StepStart); err != nil {
		return err
	}
	swapped := false
	for try := 0; ; try++ {
		h, err := gc.AcquireHold(ctx, m.Store, m.Now)
		if err != nil {
			return err
		}
		if !swapped {
			if _, err := r.SwapRecord(ctx, id, rec, ver); err != nil {
				h.Release()
				if errors.Is(err, objstore.ErrConflict) {
					return fmt.Errorf("%w (its placement changed meanwhile; run the move again)", ErrMoving)
				}
				return err
			}
			swapped = true
		}
		err = h.Release()
		if err == nil {
			return nil
		}
		if !errors.Is(err, gc.ErrHoldLost) || try == holdRetries {
			return err
		}
	}
}

// finish reopens the volume in a new epoch, copies what its maps
// reference into the target and switches its placement there.
func finish(ctx context.Context, m *manage.Manager, r *pools.Router, rec *catalog.Record, res Result, opts Options) (_ Result, err error) {
	begin := time.Now()
	res, err = finishSteps(ctx, m, r, rec, res, opts)
	res.Seconds = time.Since(begin).Seconds()
	return res, err
}

func finishSteps(ctx context.Context, m *manage.Manager, r *pools.Router, rec *catalog.Record, res Result, opts Options) (Result, error) {
	report := func(p Progress) {
		if opts.Progress != nil {
			opts.Progress(p)
		}
	}
	if err := hook(opts, StepReopen); err != nil {
		return res, err
	}
	report(Progress{Step: StepReopen})
	// The cut-over and the walks are for this version of the record:
	// the switch is refused if it changed since (a cancel, and maybe a
	// move again, whose writes since are in no walk of this run).
	_, cutVer, err := r.Record(ctx, rec.ID)
	if err != nil {
		return res, err
	}
	if rec.Kind == catalog.KindVolume {
		if err := cutOver(ctx, m, rec.ID, opts); err != nil {
			return res, err
		}
	}
	c := copier{r: r, to: res.To, opts: opts, report: report, start: time.Now()}
	for walk := 1; ; walk++ {
		if walk > maxWalks {
			return res, fmt.Errorf("%w (%s)", ErrUnsettled, res.Name)
		}
		if err := hook(opts, StepCopy); err != nil {
			return res, err
		}
		names, err := referenced(ctx, m, rec.ID)
		if err != nil {
			return res, err
		}
		res.Blocks = int64(len(names))
		copied, err := c.walk(ctx, walk, names)
		res.Copied, res.Bytes = c.copied.Load(), c.bytes.Load()
		if err != nil {
			return res, err
		}
		if copied == 0 {
			break
		}
	}
	if err := hook(opts, StepSwitch); err != nil {
		return res, err
	}
	report(Progress{Step: StepSwitch, Copied: res.Copied, Bytes: res.Bytes})
	p, ver, err := r.Record(ctx, rec.ID)
	if err != nil {
		return res, err
	}
	if p.Pool != res.To || p.From == "" || ver != cutVer {
		return res, fmt.Errorf("%w: the placement of %s changed meanwhile (now %+v); run the move again", ErrMoving, res.Name, p)
	}
	if _, err := r.SwapRecord(ctx, rec.ID, pools.Record{Pool: res.To}, ver); err != nil {
		if errors.Is(err, objstore.ErrConflict) {
			return res, fmt.Errorf("%w: the placement of %s changed meanwhile; run the move again: %w", ErrMoving, res.Name, err)
		}
		return res, err
	}
	report(Progress{Step: StepDone, Copied: res.Copied, Bytes: res.Bytes})
	return res, hook(opts, StepDone)
}

// cutOver makes the writer of volume id, if any, go on in an epoch begun
// after the placement record was swapped (the caller did so, or an
// earlier run): it asks the daemon holding the lease to begin one
// (askEpoch), and when that does not do, it reopens the volume itself.
func cutOver(ctx context.Context, m *manage.Manager, id blockmap.ID, opts Options) error {
	ok, err := askEpoch(ctx, m, id, opts)
	if err != nil || ok {
		return err
	}
	if err := hook(opts, StepFallback); err != nil {
		return err
	}
	return reopen(ctx, m, id)
}

// askEpoch asks the daemon holding volume id's lease to begin a new
// epoch, keeping the lease, and verifies that it did: the answer alone
// proves nothing (the holder may have stalled, been fenced or lost the
// lease since). It reports whether the stored head shows an epoch later
// than the one read before the ask, begun with no takeover since (no
// unsealed epoch, the lease's term not earlier): then every block the
// writer creates from now on is of an epoch begun after the record swap,
// which every process places by the record read again (package pools),
// and no block of an earlier epoch changes in place any more
// (docs/pools.md, "Moving a volume"). It reports false, for the caller
// to reopen the volume, when there is no holder that can be asked, an
// epoch is unsealed (the seal needs the volume held), or the holder
// does not answer within Options.EpochWait.
func askEpoch(ctx context.Context, m *manage.Manager, id blockmap.ID, opts Options) (bool, error) {
	if m.AskEpoch == nil {
		return false, nil
	}
	lr, _, err := m.Leases.Read(ctx, id.String())
	if err != nil {
		return false, err
	}
	if lr.Owner == "" || lr.Addr == "" || m.Leases.Free(lr) {
		return false, nil
	}
	// The record's version names this swap of it: an ask with it begins
	// an epoch after the swap, or finds one begun for an earlier ask
	// with it (a rerun's), never one begun before (BeginEpoch's key).
	r, ok := pools.Of(m.Store)
	if !ok {
		return false, nil
	}
	_, pver, err := r.Record(ctx, id)
	if err != nil {
		return false, err
	}
	h, _, err := volume.ReadHead(ctx, m.Store, id)
	if err != nil {
		return false, err
	}
	if h.Unsealed != 0 {
		return false, nil
	}
	wait := opts.EpochWait
	if wait <= 0 {
		wait = DefaultEpochWait
	}
	actx, cancel := context.WithTimeout(ctx, wait)
	err = m.AskEpoch(actx, lr, id.String(), h.Epoch+1, strconv.FormatUint(uint64(pver), 10))
	cancel()
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		return false, nil
	}
	if err := hook(opts, StepAsked); err != nil {
		return false, err
	}
	nh, _, err := volume.ReadHead(ctx, m.Store, id)
	if err != nil {
		return false, err
	}
	if nh.Epoch <= h.Epoch || nh.Unsealed != 0 {
		return false, nil
	}
	nl, _, err := m.Leases.Read(ctx, id.String())
	if err != nil {
		return false, err
	}
	return nl.Term >= lr.Term, nil
}

// reopen opens volume id for writing in a new epoch and closes it: the
// writer that had it hands it over and takes it back at its next write,
// in that epoch, so that its blocks of earlier epochs are sealed. If an
// earlier epoch ended with a takeover (this reopen's, when the writer did
// not hand over, or one before; blockmap.Head.Unsealed), the writer taken
// over may still land a late write in place in its objects, which a copy
// would miss: the two copies of one name would differ, and which one a
// read finds and gc keeps would depend on caches. So reopen first seals
// those blocks into content blocks, as a snapshot does (manage.Snapshot).
func reopen(ctx context.Context, m *manage.Manager, id blockmap.ID) error {
	v, err := m.OpenWriterCopying(ctx, id)
	if errors.Is(err, volume.ErrReadOnly) {
		return nil // no writer, ever
	}
	if err != nil {
		return fmt.Errorf("move: reopening the volume in a new epoch: %w", err)
	}
	serr := seal(ctx, m, v)
	if err := v.Close(ctx); err != nil && serr == nil {
		serr = err
	}
	if serr != nil {
		return fmt.Errorf("move: reopening the volume in a new epoch: %w", serr)
	}
	return nil
}

// seal seals v's blocks of epochs that ended with a takeover, if any,
// under a gc hold (the seal deduplicates onto content blocks a collection
// may be deleting); if the hold turns out lost, it repairs the map under
// a new one, as manage.Hash does.
func seal(ctx context.Context, m *manage.Manager, v *volume.Volume) error {
	if v.Head().Unsealed == 0 {
		return nil
	}
	h, err := gc.AcquireHold(ctx, m.Store, m.Now)
	if err != nil {
		return err
	}
	st, err := v.HashWith(ctx, volume.HashOptions{Unsealed: true, Check: h.Check, KeepReplaced: true})
	rerr := h.Release()
	if err != nil {
		return fmt.Errorf("sealing the blocks of a writer taken over: %w", err)
	}
	for rerr != nil {
		if !errors.Is(rerr, gc.ErrHoldLost) {
			return fmt.Errorf("sealing the blocks of a writer taken over: %w", rerr)
		}
		if h, err = gc.AcquireHold(ctx, m.Store, m.Now); err != nil {
			return err
		}
		lost, err := volume.RepairHash(ctx, m.Store, st.Replaced)
		rerr = h.Release()
		if err != nil {
			return fmt.Errorf("sealing the blocks of a writer taken over, then checking them after a stall: %w", err)
		}
		if len(lost) > 0 {
			return fmt.Errorf("%w: a garbage collection deleted %d blocks while the move stalled sealing them", volume.ErrCorrupt, len(lost))
		}
	}
	return nil
}

// referenced returns the names of the blocks that volume id's map and
// its snapshots' maps reference.
func referenced(ctx context.Context, m *manage.Manager, id blockmap.ID) ([]string, error) {
	ids := []blockmap.ID{id}
	kids, err := m.Catalog.Children(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, k := range kids {
		if k.Kind == catalog.KindSnapshot && k.Origin == id {
			ids = append(ids, k.ID)
		}
	}
	seen := map[string]bool{}
	var names []string
	add := func(e blockmap.Entry) {
		if n := e.ObjectName(); n != "" && !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	for _, vid := range ids {
		v, err := volume.Open(ctx, m.Store, vid, volume.OpenOptions{})
		if errors.Is(err, volume.ErrNotFound) && vid != id {
			continue // a snapshot removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		for _, e := range v.Entries() {
			add(e)
			add(e.Base())
		}
		v.Close(ctx)
	}
	return names, nil
}

// copier copies blocks into one pool, at most at a rate.
type copier struct {
	r      *pools.Router
	to     string
	opts   Options
	report func(Progress)
	start  time.Time

	copied, bytes atomic.Int64
	hookMu        sync.Mutex // Options.Hook and Progress are called by one copy at a time
}

// walk copies the names the target lacks and returns how many it copied.
func (c *copier) walk(ctx context.Context, walk int, names []string) (int64, error) {
	var done, copied atomic.Int64
	total := int64(len(names))
	c.report(Progress{Step: StepCopy, Walk: walk, Total: total, Copied: c.copied.Load(), Bytes: c.bytes.Load()})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(copyWorkers)
	for _, name := range names {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			n, err := c.r.CopyTo(gctx, name, c.to)
			if objstore.IsNotExist(err) {
				// Gone since the map was read: a writer replaced it (the
				// next walk reads its new map), or the map is broken,
				// which the next walk reports again.
				err = nil
			}
			if err != nil {
				return fmt.Errorf("move: copying %s to pool %s: %w", name, c.to, err)
			}
			d := done.Add(1)
			if n > 0 {
				copied.Add(1)
				c.copied.Add(1)
				b := c.bytes.Add(n)
				c.hookMu.Lock()
				err := hook(c.opts, StepCopied)
				c.hookMu.Unlock()
				if err != nil {
					return err
				}
				if err := c.limit(gctx, b); err != nil {
					return err
				}
			}
			if d%256 == 0 || d == total {
				c.hookMu.Lock()
				c.report(Progress{Step: StepCopy, Walk: walk, Done: d, Total: total, Copied: c.copied.Load(), Bytes: c.bytes.Load()})
				c.hookMu.Unlock()
			}
			return nil
		})
	}
	err := g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	return copied.Load(), err
}

// limit sleeps while the bytes copied since the start run ahead of the
// rate.
func (c *copier) limit(ctx context.Context, bytes int64) error {
	if c.opts.Rate <= 0 {
		return nil
	}
	ahead := time.Duration(float64(bytes)/float64(c.opts.Rate)*float64(time.Second)) - time.Since(c.start)
	if ahead <= 0 {
		return nil
	}
	sleep := c.opts.Sleep
	if sleep == nil {
		sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return sleep(ctx, ahead)
}

func hook(opts Options, step string) error {
	if opts.Hook == nil {
		return nil
	}
	return opts.Hook(step)
}
