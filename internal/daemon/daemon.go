// Package daemon is the serving core of the node daemon behind 'archip
// serve': it opens the store's volumes by name for frontends, which serve
// them over a protocol (package frontend/nbdfe for NBD), and takes part
// in the lease protocol (package lease) with the other daemons sharing
// the store. Run runs a daemon with its admin API (AdminHandler), its
// periodic flush (FlushLoop) and any number of frontends (Frontend),
// and shuts them down in order: frontends drained, volumes flushed,
// leases released. The core imports no protocol; a frontend knows only
// Daemon.Open, Daemon.List and Volume. The daemon counts its requests,
// lease events and store calls in Metrics (served at /metrics by the
// admin API, which may require a token: RequireToken), with the store's
// running gc and moves read from their records (Operations; package
// progress), serves a web dashboard there if given one (UseDashboard;
// package dashboard) and logs one slog record per event (SetLogger).
//
// Every client of one volume (every NBD connection) shares one open
// handle, so a flush by any client covers the writes of all of them (the
// NBD server advertises multi-conn) and the map is loaded once. A handle
// is opened for the first client and flushed and closed after the last
// one is released. Opening and closing run outside the daemon's lock:
// other clients of the same volume wait for them, and other volumes and
// handoffs go on. A client that comes while the previous client's final
// flush runs (a reconnect) waits for that flush and the release of the
// lease, so it reads what the previous client wrote. A final flush that
// fails (the store is unavailable) keeps the writes and the lease: the
// handle stays open with no client, the next client takes it over, and
// the periodic flush closes it once a flush works.
//
// Opening a volume writes nothing to the store: the handle starts as a
// follower, which holds no lease and rereads the map whenever the stored
// head changed (a stat before each read, shared by concurrent reads), so
// its reads are never older than the writer's last flush, wherever the
// writer runs. A client that only looks (nbdinfo, qemu-img info, a
// SET_META_CONTEXT before GO) leaves no trace. The first write takes the
// lease (asking the holder to hand over: see Handoff and AdminHandler)
// and reopens the volume for writing under it; writes then go straight
// to the volume. When another node asks for the volume, the handle waits
// for the writes in progress, flushes, releases the lease and becomes a
// follower again; its next write waits for the asker to take the lease
// (up to a second) and for a command holding it to release it (up to
// 10 s, not past its expiry), while reads go on. A writer whose lease ran out on its own clock (it
// stalled) renews it before its next request, reads included, and drops
// to a follower if another node took the volume over meanwhile. A handle
// that loses its lease while it holds unflushed writes is fenced: every
// request fails until its clients reconnect, because those writes are
// gone and the client must not go on as if they were not. A mover's ask
// for a new epoch (BeginEpoch, at a move's cut-over) is answered by the
// writer without giving up the lease: writes wait for one flush.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/volume"
)

// Daemon holds the volumes open for the clients of its frontends.
type Daemon struct {
	mgr *manage.Manager
	log *slog.Logger
	// onWait, if set, is called when Open waits for another client's open
	// or close of the same volume (for tests).
	onWait func()
	// promoteAfter is how many reads a follower serves before it takes the
	// volume's lease if it is free: a client that keeps reading then stops
	// paying a head check per read, and a probe (a few reads) writes
	// nothing.
	promoteAfter int64
	// metrics, if set, counts requests and lease events (UseMetrics).
	metrics *Metrics
	// adminToken, if set, is required of admin API requests.
	adminToken string
	// adminHost is the advertised host of the admin API: without a
	// token, requests must name it, an IP or localhost (AdvertiseHost).
	adminHost string
	// dashboard, if set, serves /ui/ on the admin API (UseDashboard).
	dashboard http.Handler
	// ops reads the store's running operations (Operations).
	ops *opsReader
	// loginNow is the clock of the admin API's login limiter (nil:
	// time.Now; tests).
	loginNow func() time.Time
	// handoffYield, handoffHeld: see yield (the constants; tests
	// lengthen them).
	handoffYield, handoffHeld time.Duration

	// mu guards open, closed, and the refs and state of every handle. It
	// is never held across store I/O: a volume being opened or closed has
	// a handle in open that says so, and other clients of that volume wait
	// on it while other volumes and handoffs go on.
	mu     sync.Mutex
	open   map[blockmap.ID]*handle
	closed bool
}

// New returns a daemon serving the volumes of m's store, taking leases
// as m.Leases says. logf (nil: silent) hears its events (see
// SetLogger), one line each.
func New(m *manage.Manager, logf func(format string, args ...any)) *Daemon {
	return &Daemon{mgr: m, log: LogfLogger(logf), promoteAfter: 4096, handoffYield: handoffYield, handoffHeld: handoffHeld, open: map[blockmap.ID]*handle{},
		ops: &opsReader{s: m.Store, maxAge: DefaultOperationsMaxAge, wait: opsWait}}
}

// SetLogger makes d log its events to l instead: volumes opened and
// closed, leases taken, taken over, lost and handed over, fences and
// failed flushes, each one record with the volume's name in "volume".
// Call it before d serves anything.
func (d *Daemon) SetLogger(l *slog.Logger) { d.log = l }

// UseMetrics makes d count its requests and lease events in m, and m
// report d's volumes. Call it before d serves anything; m serves one
// daemon.
func (d *Daemon) UseMetrics(m *Metrics) {
	d.metrics = m
	m.mu.Lock()
	m.status = d.Status
	m.opsRead = d.Operations
	m.mu.Unlock()
}

// Errors of the daemon.
var (
	// ErrLeaseLost is the error of every request to a volume whose lease
	// was lost with unflushed writes.
	ErrLeaseLost = errors.New("daemon: the volume's lease was lost with unflushed writes, which are gone; reconnect")
	// ErrClosed refuses clients once Close has begun.
	ErrClosed = errors.New("daemon: shutting down")
	// ErrNotFound is the error of Open for a name the catalog does not
	// have.
	ErrNotFound = errors.New("daemon: no volume, snapshot or image of that name")
)

// handleState is where a handle is in its life: opening, then serving
// and closing, and back to serving only when finish keeps it.
type handleState int

const (
	opening handleState = iota // first runs, outside d.mu; ready is closed when it ends
	serving                    // clients use it
	closing                    // no client left: the final flush runs; done is closed when it ends
)

// handle is one volume open for any number of connections.
type handle struct {
	d        *Daemon
	id       blockmap.ID
	name     string
	readOnly bool // a snapshot or image: never leased, never changes

	refs  int           // guarded by d.mu
	state handleState   // guarded by d.mu
	ready chan struct{} // closed when opening ends, opened or not
	done  chan struct{} // closed when closing ends (the handle left d.open, or was kept); guarded by d.mu

	// mu: requests hold it shared; becoming writer or follower holds it
	// exclusively. Fields below are set by first before the handle serves.
	mu     sync.RWMutex
	v      *volume.Volume // the writer when lease != nil, else a follower
	lease  *lease.Lease   // renewed until v is closed or discarded, which releases it
	fenced error
	shut   bool // closed: nothing may open a writer on it again
	// yieldFrom, yieldTerm: the last handoff, when this node released
	// the lease at term yieldTerm; its next write first yields (zero once
	// one did). yielding is closed when the write that yields for the
	// others (see write) is done with it.
	yieldFrom time.Time
	yieldTerm uint64
	yielding  chan struct{}

	// isFenced is set with fenced, and read under d.mu: new clients do not
	// join a fenced handle (its own clients must see their writes were
	// lost; a client that connects later starts on a fresh handle).
	isFenced atomic.Bool

	followReads atomic.Int64 // reads served as a follower since the last try to promote

	m *volMetrics // nil without metrics; set before the handle serves
}

// Open opens name, a volume, snapshot or image, for one client of a
// frontend, and returns it with the function to call when that client is
// done with it (it may be called more than once). Every client of one
// volume shares one handle. Opening stores nothing: a volume opens as a
// follower, and takes its lease at its first write. A name that is not
// in the catalog gives an error wrapping ErrNotFound.
func (d *Daemon) Open(ctx context.Context, name string) (*Volume, func(), error) {
	if name == "" {
		return nil, nil, fmt.Errorf("%w: no name given", ErrNotFound)
	}
	r, err := d.mgr.Lookup(ctx, name)
	if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrBadName) {
		return nil, nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	if err != nil {
		return nil, nil, err
	}
	h, err := d.acquire(ctx, r, name)
	if err != nil {
		return nil, nil, err
	}
	var once sync.Once
	release := func() { once.Do(func() { d.release(h) }) }
	// A handle kept open for earlier clients may follow a head that
	// another process changed (a resize): this client must see it.
	if err := h.refresh(ctx); err != nil {
		release()
		return nil, nil, err
	}
	return &Volume{h: h}, release, nil
}

// acquire returns the serving handle of r with one more reference,
// opening it if no client has. A client that finds the volume being
// opened waits for that open; one that finds it closing waits for the
// final flush and the release of its lease, so that a reconnecting client
// reads what it wrote before (and does not fence the closing writer).
func (d *Daemon) acquire(ctx context.Context, r *catalog.Record, name string) (*handle, error) {
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, ErrClosed
		}
		h := d.open[r.ID]
		if h == nil {
			h = &handle{d: d, id: r.ID, name: name, readOnly: r.ReadOnly(), refs: 1,
				ready: make(chan struct{}), done: make(chan struct{})}
			d.open[r.ID] = h
			d.mu.Unlock()
			err := h.first(ctx)
			d.mu.Lock()
			late := err == nil && d.closed // Close gave up waiting for this open
			if late {
				err = ErrClosed
			}
			if err != nil {
				delete(d.open, r.ID)
			} else {
				h.state = serving
			}
			close(h.ready)
			d.mu.Unlock()
			if late {
				h.v.Close(ctx) // a follower: nothing to flush
				if h.m != nil {
					d.metrics.release(h.name, h.m)
				}
			}
			if err != nil {
				close(h.done)
				return nil, err
			}
			return h, nil
		}
		var wait chan struct{}
		switch h.state {
		case serving:
			if h.isFenced.Load() {
				delete(d.open, r.ID) // its clients keep failing; finish does not remove the next handle
				d.mu.Unlock()
				continue
			}
			h.refs++
			d.mu.Unlock()
			return h, nil
		case opening:
			wait = h.ready
		case closing:
			wait = h.done
		}
		d.mu.Unlock()
		if d.onWait != nil {
			d.onWait()
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// release drops a client's reference; the last one closes the handle.
func (d *Daemon) release(h *handle) {
	d.mu.Lock()
	h.refs--
	d.mu.Unlock()
	d.retire(h)
}

// retire closes h if no client uses it (see finish).
func (d *Daemon) retire(h *handle) {
	d.mu.Lock()
	idle := h.refs == 0 && h.state == serving
	if idle {
		h.state = closing
	}
	d.mu.Unlock()
	if idle {
		if err := d.finish(h, true); err != nil {
			d.log.Error("closing the volume failed; its writes are kept and the flush retried", "volume", h.name, "err", err)
		}
	}
}

// finish flushes and closes a handle in state closing, and removes it.
// With keep, a handle whose final flush fails while it still holds the
// lease keeps its writes instead: it serves again with no client, and
// the next client takes it over, or FlushLoop retires it once a flush
// works (a handoff request flushes it too).
func (d *Daemon) finish(h *handle, keep bool) error {
	kept, err := h.close(context.Background(), keep)
	d.mu.Lock()
	done := h.done
	if kept {
		h.state = serving
		h.done = make(chan struct{})
	} else if d.open[h.id] == h {
		delete(d.open, h.id)
	}
	d.mu.Unlock()
	if !kept && h.m != nil {
		d.metrics.release(h.name, h.m)
	}
	if !kept {
		d.log.Info("volume closed", "volume", h.name, "ok", err == nil)
	}
	close(done) // waiting clients look again
	return err
}

// serving returns the handles that serve clients.
func (d *Daemon) serving() []*handle {
	d.mu.Lock()
	defer d.mu.Unlock()
	var hs []*handle
	for _, h := range d.open {
		if h.state == serving {
			hs = append(hs, h)
		}
	}
	return hs
}

// first opens the volume, writing nothing: read-only for a snapshot or
// image, and as a follower for a volume (see write for the lease).
func (h *handle) first(ctx context.Context) error {
	v, err := volume.Open(ctx, h.d.mgr.Store, h.id, volume.OpenOptions{Follow: !h.readOnly})
	if err != nil {
		return err
	}
	h.v = v
	if mx := h.d.metrics; mx != nil {
		h.m = mx.volume(h.name)
	}
	h.d.log.Info("volume opened", "volume", h.name, "id", h.id.String(), "read_only", h.readOnly)
	return nil
}

// close flushes and closes the handle, releasing its lease. With keep,
// a flush that fails without losing the lease leaves the handle open
// (kept) with its writes.
func (h *handle) close(ctx context.Context, keep bool) (kept bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if keep && h.lease != nil && h.fenced == nil {
		err := h.v.Flush(ctx)
		if err != nil && !errors.Is(err, volume.ErrFenced) && !errors.Is(err, lease.ErrLost) {
			return true, fmt.Errorf("%w; its writes are kept, and the flush is retried", err)
		}
	}
	h.lease, h.shut = nil, true
	return false, h.v.Close(ctx)
}

// read runs a request that does not write. A writer whose lease ran out
// on this node's clock first renews it: if this process stalled and
// another node took the volume over meanwhile, its map is stale.
func (h *handle) read(ctx context.Context, fn func(v *volume.Volume) error) error {
	h.mu.RLock()
	if h.fenced == nil && (h.lease == nil || h.lease.Valid() == nil) {
		promote := h.lease == nil && !h.readOnly && h.followReads.Add(1) == h.d.promoteAfter
		err := fn(h.v)
		h.mu.RUnlock()
		if promote {
			h.promote(ctx)
		}
		return err
	}
	h.mu.RUnlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.revalidate(ctx); err != nil {
		return err
	}
	return fn(h.v)
}

// refresh brings a follower's head up to date (volume.Volume.Refresh);
// unlike a read it does not count towards promote.
func (h *handle) refresh(ctx context.Context) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.v.Refresh(ctx)
}

// promote makes a follower that keeps reading the writer if the lease
// is released (it asks no holder, and takes no lease over), so that its
// reads stop checking the head;
// it tries again after as many reads.
func (h *handle) promote(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.followReads.Store(0)
	if h.shut || h.fenced != nil || h.lease != nil || time.Since(h.yieldFrom) < h.d.handoffYield {
		return
	}
	v, l, err := h.d.mgr.TryOpenWriter(ctx, h.id, h.lost)
	if err != nil {
		if !errors.Is(err, lease.ErrHeld) {
			h.d.log.Warn("taking a free lease for a reader failed", "volume", h.name, "err", err)
		}
		return
	}
	h.v.Close(ctx) // the follower
	h.v, h.lease = v, l
	h.leased(v)
	h.d.log.Info("lease taken for a reader", "volume", h.name, "term", l.Term())
}

// write runs a request that writes, taking the lease first if this node
// does not hold it.
func (h *handle) write(ctx context.Context, fn func(v *volume.Volume) error) error {
	h.mu.RLock()
	if h.lease != nil && h.fenced == nil && h.lease.Valid() == nil {
		defer h.mu.RUnlock()
		return fn(h.v)
	}
	h.mu.RUnlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.readOnly {
		return fn(h.v) // refused by the volume, with the right error
	}
	if err := h.revalidate(ctx); err != nil {
		return err
	}
	// After a handoff, one write yields (without h.mu: the follower
	// serves reads meanwhile, and Handoff and Close go on) while the
	// others wait for it.
	for h.lease == nil && !h.yieldFrom.IsZero() {
		if ch := h.yielding; ch != nil {
			h.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
			}
			h.mu.Lock()
		} else {
			ch := make(chan struct{})
			start, term := h.yieldFrom, h.yieldTerm
			h.yielding = ch
			h.mu.Unlock()
			h.yield(ctx, start, term)
			h.mu.Lock()
			h.yielding = nil
			close(ch)
			if ctx.Err() == nil && h.yieldFrom.Equal(start) {
				h.yieldFrom = time.Time{}
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := h.revalidate(ctx); err != nil {
			return err
		}
	}
	if h.lease == nil {
		if err := h.becomeWriter(ctx); err != nil {
			if errors.Is(err, volume.ErrSeqExhausted) {
				h.d.log.Error("taking the lease failed", "volume", h.name, "err", err)
			}
			return err
		}
	}
	// NB: the request runs before the lock is given up, so a node that
	// took the lease makes progress even if it is asked for it at once.
	return fn(h.v)
}

// handoffYield bounds how long a node that handed a lease over waits
// for the asker to take it before its next write takes it back;
// handoffHeld how long it then waits for an asker with no admin address
// (a command: a mover's reopen, a snapshot) to release it.
const (
	handoffYield = time.Second
	handoffHeld  = 10 * time.Second
)

// yield waits, after a handoff, until the node that asked took the lease
// or handoffYield passed. Without it a writer that writes back to back
// takes the lease back at once, before the asker has the answer to its
// request, and the asker asks again and again, pausing longer each time
// (a move's reopen under a busy writer took a minute). An asker that
// keeps the lease (a daemon: a handoff) is asked for it back by the
// write that follows; one that cannot be asked (a command, which holds it
// for a few store operations) is watched closely until it releases it,
// for up to handoffHeld and no longer than its lease lasts (a command
// that died holding it is taken over at once), so that this node's
// write goes on at once rather than after lease.Manager.Take's growing
// pauses. start and term are the handoff's (yieldFrom, yieldTerm); the
// caller does not hold h.mu.
func (h *handle) yield(ctx context.Context, start time.Time, term uint64) {
	for d := 500 * time.Microsecond; ; d = min(2*d, 8*time.Millisecond) {
		rec, _, err := h.d.mgr.Leases.Read(ctx, h.id.String())
		if err != nil {
			return
		}
		var until time.Time
		switch {
		case rec.Owner == "" && rec.Term == term: // not taken yet
			until = start.Add(h.d.handoffYield)
		case rec.Owner != "" && rec.Addr == "" && !h.d.mgr.Leases.Free(rec): // held by a command
			until = start.Add(h.d.handoffHeld)
		default: // released again, held by a node that can be asked, or run out
			return
		}
		wait := min(d, time.Until(until))
		if wait <= 0 {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// revalidate checks the handle's role before a request: a writer whose
// renewal is late (this process or its host stalled, or the store is
// unreachable) renews now, or learns that the lease is gone and drops
// the writer. It returns the error the request must fail with, if any.
// The caller holds h.mu exclusively.
func (h *handle) revalidate(ctx context.Context) error {
	if h.shut {
		return volume.ErrClosed
	}
	if h.fenced != nil {
		return h.fenced
	}
	if h.lease == nil || h.lease.Valid() == nil {
		return nil
	}
	err := h.lease.Renew(ctx)
	if err == nil || !errors.Is(err, lease.ErrLost) {
		return err
	}
	h.dropLease(err)
	return h.fenced
}

// becomeWriter takes the lease and reopens the volume for writing. The
// caller holds h.mu exclusively.
func (h *handle) becomeWriter(ctx context.Context) error {
	v, l, err := h.d.mgr.OpenWriter(ctx, h.id, h.lost)
	if err != nil {
		return err
	}
	if l.TookOver() {
		h.d.log.Warn("took over an expired lease", "volume", h.name, "term", l.Term(), "epoch", v.Head().Epoch)
	}
	h.v.Close(ctx) // the follower
	h.v, h.lease = v, l
	h.leased(v)
	h.d.log.Info("lease taken", "volume", h.name, "term", l.Term())
	if l.TookOver() && h.d.metrics != nil {
		h.d.metrics.leaseTakeovers.Inc()
	}
	return nil
}

// leased counts a lease taken for the writer v. The caller holds h.mu
// exclusively.
func (h *handle) leased(v *volume.Volume) {
	if h.m == nil {
		return
	}
	h.d.metrics.leaseAcquired.Inc()
	v.SetOnCopy(h.m.cow.Inc)
}

// release flushes and releases the lease; the caller opens the follower
// next (follow), before it serves again. The caller holds h.mu
// exclusively. When the flush fails the node keeps the lease and the
// writer.
func (h *handle) release(ctx context.Context) error {
	if err := h.v.Flush(ctx); err != nil {
		return err
	}
	// Flushed: discarding drops nothing, and releases the lease.
	if err := h.v.Discard(ctx); err != nil {
		h.d.log.Warn("releasing the lease failed; it expires by itself", "volume", h.name, "err", err)
	}
	h.lease = nil
	return nil
}

// followTries is how many times follow tries to open the follower, the
// first retry followWait after the first failure, each next one twice
// as long after the one before.
const (
	followTries = 5
	followWait  = 10 * time.Millisecond
)

// follow opens the follower once the lease went with nothing unflushed
// (a handoff, a lease lost while clean). It tries again after a failure
// (a store's timeout): failing fences the handle, and its clients' every
// request fails until they reconnect, though nothing was lost. The
// caller holds h.mu exclusively.
func (h *handle) follow(ctx context.Context) error {
	wait := followWait
	for i := 1; ; i, wait = i+1, 2*wait {
		v, err := volume.Open(ctx, h.d.mgr.Store, h.id, volume.OpenOptions{Follow: true})
		if err == nil {
			h.v = v
			return nil
		}
		if i < followTries {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
			}
		}
		h.fence(fmt.Errorf("daemon: volume %s: reopening after the lease went: %w; reconnect its clients", h.name, err))
		h.d.log.Error("opening the follower after the lease went failed; fenced until its clients reconnect", "volume", h.name, "err", err)
		return h.fenced
	}
}

// fence makes every request on h fail with err. The caller holds h.mu
// exclusively.
func (h *handle) fence(err error) {
	h.fenced = err
	h.isFenced.Store(true)
}

// lost is called when l's renewal finds it taken over or broken.
func (h *handle) lost(l *lease.Lease, why error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lease == l {
		h.dropLease(why)
	}
}

// dropLease gives up the writer after the lease was lost: the handle is
// fenced if writes were lost with it, and a follower otherwise. The
// caller holds h.mu exclusively.
func (h *handle) dropLease(why error) {
	ctx := context.Background()
	dirty := h.v.Dirty()
	h.v.Discard(ctx)
	h.lease = nil
	if mx := h.d.metrics; mx != nil {
		mx.leaseLost.WithLabelValues(map[bool]string{false: "false", true: "true"}[dirty]).Inc()
	}
	if dirty {
		h.fence(fmt.Errorf("%w (volume %s: %v)", ErrLeaseLost, h.name, why))
		h.d.log.Error("lease lost with unflushed writes; fenced until its clients reconnect", "volume", h.name, "err", why)
		return
	}
	h.d.log.Warn("lease lost; nothing was unflushed, serving reads", "volume", h.name, "err", why)
	h.follow(ctx)
}

// opened returns the handle of volume id, if this node has one that is
// not being opened.
func (d *Daemon) opened(id blockmap.ID) *handle {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h := d.open[id]; h != nil && h.state != opening {
		return h
	}
	return nil
}

// Handoff is what the admin API runs when another node asks for volume
// id: if this node writes it, it waits for the writes in progress,
// flushes, and releases the lease. It reports whether it released one,
// once it did: the follower that serves the volume next opens after
// that, and the handle serves again once it is open.
// A handle being opened holds no lease; one being closed releases it
// when its final flush ends, which Handoff waits for.
func (d *Daemon) Handoff(ctx context.Context, id blockmap.ID) (bool, error) {
	h := d.opened(id)
	if h == nil {
		return false, nil
	}
	h.mu.Lock()
	if h.lease == nil {
		h.mu.Unlock()
		return false, nil
	}
	t := time.Now()
	term := h.lease.Term()
	if err := h.release(ctx); err != nil {
		h.mu.Unlock()
		if mx := d.metrics; mx != nil {
			mx.handoffErrs.Inc()
		}
		return false, err
	}
	h.yieldFrom, h.yieldTerm = time.Now(), term
	if mx := d.metrics; mx != nil {
		mx.handoffs.Inc()
		mx.handoffDur.Observe(time.Since(t).Seconds())
	}
	d.log.Info("handed over", "volume", h.name)
	// The asker has its answer while the follower opens: its writes (a
	// move's reopen, another node's first write) and this node's own
	// writes' wait (they wait for h.mu, then yield) overlap that open
	// rather than follow it.
	go func() {
		h.follow(context.WithoutCancel(ctx))
		h.mu.Unlock()
		d.retire(h) // one kept after its final flush failed
	}()
	return true, nil
}

// ErrEpochBehind: asked for an epoch more than one past the one its
// writer is in, BeginEpoch began one but not the one asked for.
var ErrEpochBehind = errors.New("daemon: the writer's epoch is behind the one asked for: the asker reads the head and asks again")

// BeginEpoch is what the admin API runs when a mover asks for a new
// epoch of volume id at its cut-over (docs/pools.md, "Moving a volume"):
// if this node writes it, the writer flushes and swaps in a head of a
// new epoch (volume.Volume.BeginEpoch), keeping the lease, and
// BeginEpoch returns that epoch. Writes wait only for that flush and
// swap. A node that does not hold the lease (or holds one that ran out:
// it may be taken over) answers lease.ErrNotHolder, and the mover falls
// back to taking the lease. It begins at most one epoch per ask, and
// fails with ErrEpochBehind if that is below atLeast.
func (d *Daemon) BeginEpoch(ctx context.Context, id blockmap.ID, atLeast uint64, key string) (uint64, error) {
	h := d.opened(id)
	if h == nil {
		return 0, lease.ErrNotHolder
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.lease == nil || h.fenced != nil || h.lease.Valid() != nil {
		return 0, lease.ErrNotHolder
	}
	t := time.Now()
	e, err := h.v.BeginEpoch(ctx, atLeast, key)
	if err != nil {
		return 0, err
	}
	d.log.Info("began a new epoch", "volume", h.name, "epoch", e, "took", time.Since(t))
	if e < atLeast {
		// It begins one epoch per ask: an asker that read a head more
		// than one ahead of this writer's epoch saw another writer's.
		return 0, fmt.Errorf("%w: volume %s: began epoch %d, below the %d asked for (another writer's head?)", ErrEpochBehind, h.name, e, atLeast)
	}
	return e, nil
}

// VolumeStatus describes an open volume, for the admin API.
type VolumeStatus struct {
	Name    string      `json:"name"`
	ID      blockmap.ID `json:"id"`
	Clients int         `json:"clients"`
	Role    string      `json:"role"` // "writer" (holds the lease), "follower", "read-only", "fenced", "opening", "closing" or "busy" (changing its role)
	Term    uint64      `json:"lease_term,omitempty"`
	Error   string      `json:"error,omitempty"`
}

// Status lists the open volumes.
func (d *Daemon) Status() []VolumeStatus {
	d.mu.Lock()
	var out []VolumeStatus
	hs := map[*handle]int{}
	for _, h := range d.open {
		if h.state != serving {
			role := map[handleState]string{opening: "opening", closing: "closing"}[h.state]
			out = append(out, VolumeStatus{Name: h.name, ID: h.id, Clients: h.refs, Role: role})
			continue
		}
		hs[h] = h.refs
	}
	d.mu.Unlock()
	for h, refs := range hs {
		st := VolumeStatus{Name: h.name, ID: h.id, Clients: refs}
		// A handle changing its role (taking its lease, revalidating it)
		// holds mu across store calls: Status, which /metrics and the
		// dashboard show, must not wait for a stalled store.
		if !h.mu.TryRLock() {
			st.Role = "busy"
			out = append(out, st)
			continue
		}
		switch {
		case h.fenced != nil:
			st.Role, st.Error = "fenced", h.fenced.Error()
		case h.lease != nil:
			st.Role, st.Term = "writer", h.lease.Term()
		case h.readOnly:
			st.Role = "read-only"
		default:
			st.Role = "follower"
		}
		h.mu.RUnlock()
		out = append(out, st)
	}
	return out
}

// List returns every volume, snapshot and image of the store, by name:
// what Open can open.
func (d *Daemon) List(ctx context.Context) ([]manage.Entry, error) {
	return d.mgr.List(ctx)
}

// Manager returns the manager of the daemon's store, for frontends that
// serve more than volumes (package s3fe's buckets).
func (d *Daemon) Manager() *manage.Manager { return d.mgr }

// FlushLoop flushes every open volume that holds unflushed writes, every
// interval, until ctx ends. Clients flush when they need durability; this
// bounds how long data written by a client that never flushes stays
// unflushed (and so what a crash of the daemon's host can lose of it).
// Errors are passed to logf (nil: logged as the daemon's events), and a
// volume whose flush fails is retried at the next tick.
func (d *Daemon) FlushLoop(ctx context.Context, interval time.Duration, logf func(format string, args ...any)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, h := range d.serving() {
			h.mu.RLock()
			var err error
			if h.lease != nil && h.v.Dirty() {
				err = h.v.Flush(ctx)
				if mx := d.metrics; mx != nil {
					mx.periodic.Inc()
					if err != nil {
						mx.periodicErrs.Inc()
					}
				}
			}
			h.mu.RUnlock()
			if err != nil && !errors.Is(err, volume.ErrClosed) && ctx.Err() == nil {
				if logf != nil {
					logf("archip: periodic flush of volume %s: %v", h.name, err)
				} else {
					d.log.Error("periodic flush failed", "volume", h.name, "err", err)
				}
			}
			if err == nil {
				d.retire(h) // one kept after its final flush failed
			}
		}
	}
}

// Close flushes and closes every open volume, releasing their leases,
// and refuses new clients. Clients still connected get errors.
func (d *Daemon) Close(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	var hs []*handle
	for _, h := range d.open {
		hs = append(hs, h)
	}
	d.mu.Unlock()
	wait := func(ch chan struct{}) error {
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var errs []error
	for _, h := range hs {
		if err := wait(h.ready); err != nil {
			errs = append(errs, fmt.Errorf("daemon: volume %s is still opening: %w", h.name, err))
			continue
		}
		// A final flush running meanwhile may fail and keep the handle
		// (serving again, with its writes): then it is Close's to finish.
		for {
			d.mu.Lock()
			gone := d.open[h.id] != h
			mine := !gone && h.state == serving
			if mine {
				h.state = closing
			}
			done := h.done
			d.mu.Unlock()
			if gone {
				break
			}
			if mine {
				errs = append(errs, d.finish(h, false))
				break
			}
			if err := wait(done); err != nil {
				errs = append(errs, fmt.Errorf("daemon: volume %s is still closing: %w", h.name, err))
				break
			}
		}
	}
	return errors.Join(errs...)
}
