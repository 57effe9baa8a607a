// Package manage carries out the management operations on a store by
// name: it keeps the catalog and the volumes' maps in step. The CLI and
// the daemon's admin API call it; it prints nothing.
//
// Order of writes: an operation that makes a volume writes its head
// first and its catalog record second; one that removes a volume removes
// the record first. A crash in between leaves a head no name points at,
// which the garbage collector removes; a name never points at a missing
// volume: operations that make a volume hold collections off until its
// record exists (a create that stalled past its hold removes its record
// again). Each of these reads and writes the catalog records of its own
// names only (package catalog), so its cost does not grow with the number
// of volumes; a rename changes catalog records only, and holds garbage
// collections off while it creates the new name's record.
//
// Every operation that writes a volume (snapshot, resize, remove, hash,
// and opening it for writing) first takes the volume's lease (package
// lease): if a daemon on any host holds it, that daemon is asked to flush
// and hand over, so that a snapshot of a volume a running VM uses is
// consistent and the VM's daemon takes the lease back at its next write.
package manage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// Manager runs operations on one store.
type Manager struct {
	Store   objstore.Store
	Catalog *catalog.Catalog
	Now     func() time.Time
	Leases  *lease.Manager // who this process is when it writes a volume
	// AskEpoch asks the daemon that holds a volume's lease to begin a
	// new epoch of it, keeping the lease (a move's cut-over; nil: never
	// ask, take the lease).
	AskEpoch lease.EpochAsk
}

// held runs fn, which copies references to existing objects (snapshot,
// clone, import, hash), while holding garbage collections off (package gc).
// If fn stalled so long that a collection took the hold for dead, it
// fails with gc.ErrHoldLost even though fn succeeded; a result fn
// registered is then removed (dropLost). Hash, which changes a map in
// place, handles its hold itself.
func (m *Manager) held(ctx context.Context, fn func(h *gc.Hold) error) error {
	h, err := gc.AcquireHold(ctx, m.Store, m.Now)
	if err != nil {
		return err
	}
	err = fn(h)
	if rerr := h.Release(); err == nil {
		err = rerr
	}
	return err
}

// GC collects garbage; see package gc.
func (m *Manager) GC(ctx context.Context, opts gc.Options) (gc.Report, error) {
	if opts.Now == nil {
		opts.Now = m.Now
	}
	return gc.Run(ctx, m.Store, opts)
}

// New returns a Manager for s that takes leases as a command-line node
// (named after the host and process, with no admin address: other nodes
// wait for it to finish, which takes moments) and asks daemons holding a
// lease to hand over.
func New(s objstore.Store) *Manager { return NewWithAdminToken(s, "") }

// NewWithAdminToken is New for daemons whose admin API requires a
// bearer token: its handoff requests carry token.
func NewWithAdminToken(s objstore.Store, token string) *Manager {
	host, _ := os.Hostname()
	leases, err := lease.NewManager(s, lease.Config{Node: fmt.Sprintf("cli:%s:%d", host, os.Getpid()), Ask: lease.HTTPAskToken(5*time.Second, token)})
	if err != nil {
		panic(err) // the defaults are valid
	}
	m := &Manager{Store: s, Catalog: catalog.New(s), Now: time.Now, Leases: leases, AskEpoch: lease.HTTPEpochAskToken(5*time.Second, token)}
	m.Catalog.Hold = m.holdRename
	return m
}

// holdRename holds collections off while a rename creates its new
// record (catalog.Catalog.Hold).
func (m *Manager) holdRename(ctx context.Context) (func() error, error) {
	h, err := gc.AcquireHold(ctx, m.Store, m.Now)
	if err != nil {
		return nil, err
	}
	return h.Release, nil
}

// OpenWriter takes the lease of volume id (asking its holder to hand it
// over) and opens the volume for writing under it: every store write
// checks the lease, and a takeover from a holder that did not release it
// starts a new epoch. The lease is renewed while the volume is open (lost,
// if not nil, hears when a renewal finds it gone) and released when the
// volume is closed or discarded.
func (m *Manager) OpenWriter(ctx context.Context, id blockmap.ID, lost func(*lease.Lease, error)) (*volume.Volume, *lease.Lease, error) {
	l, err := m.Leases.Take(ctx, id.String())
	if err != nil {
		return nil, nil, err
	}
	return m.openLeased(ctx, id, l, lost, openWrite)
}

// OpenWriterCopying is OpenWriter that always starts a new epoch, so that
// the handle changes no object in place: every block it writes is copied
// first, and Discard then undoes everything written since the last flush.
// For a writer that must change nothing if it fails part way (volume
// write).
func (m *Manager) OpenWriterCopying(ctx context.Context, id blockmap.ID) (*volume.Volume, error) {
	l, err := m.Leases.Take(ctx, id.String())
	if err != nil {
		return nil, err
	}
	v, _, err := m.openLeased(ctx, id, l, nil, openCopying)
	return v, err
}

// TryOpenWriter is OpenWriter when the lease is free; when another node
// holds it, it returns lease.ErrHeld at once instead of asking. It takes
// nothing over (lease.Manager.AcquireReleased): a lease that expired or
// was broken is held too, since a takeover fences the holder (its whole
// store connection, on RADOS) and starts a new epoch.
func (m *Manager) TryOpenWriter(ctx context.Context, id blockmap.ID, lost func(*lease.Lease, error)) (*volume.Volume, *lease.Lease, error) {
	l, err := m.Leases.AcquireReleased(ctx, id.String())
	if err != nil {
		return nil, nil, err
	}
	return m.openLeased(ctx, id, l, lost, openWrite)
}

// openMode says what a writer opens a volume for.
type openMode int

const (
	openWrite    openMode = iota // to write, with a write log where the store allows one
	openCopying                  // to copy its blocks to another pool (package move)
	openSnapshot                 // to snapshot it: no write log, which it would name in the head at open and drop at close without appending to it
)

// leaseLostInOpen runs when a lease is found lost during an open (tests
// set it).
var leaseLostInOpen = func() {}

func (m *Manager) openLeased(ctx context.Context, id blockmap.ID, l *lease.Lease, lost func(*lease.Lease, error), mode openMode) (*volume.Volume, *lease.Lease, error) {
	kctx, stop := context.WithCancel(context.Background())
	// The lease is kept from before the open: a writer's open replays
	// the write log of the writer before it, and checkpoints it if that
	// writer was taken over (one that released cleanly leaves it to this
	// writer's next checkpoint: volume.OpenOptions.Handover), which on a
	// store without in-place writes can outlast the lease's validity. A
	// loss during the open fails the open (the guard, or the check after
	// it); one after it is reported to lost.
	var (
		mu      sync.Mutex
		opened  bool
		lostErr error // lost during the open
	)
	go l.Keep(kctx, func(err error) {
		mu.Lock()
		if !opened {
			lostErr = err
			mu.Unlock()
			leaseLostInOpen()
			return
		}
		mu.Unlock()
		if lost != nil {
			lost(l, err)
		}
	})
	release := func(ctx context.Context, closeErr error) error {
		stop()
		rel := l.Release
		if errors.Is(closeErr, volume.ErrUnsettled) {
			rel = l.ReleaseUnsettled // the next writer must start a new epoch
		}
		if err := rel(ctx); err != nil && !errors.Is(err, lease.ErrLost) {
			return err
		}
		return nil
	}
	v, err := volume.Open(ctx, m.Store, id, volume.OpenOptions{Writable: true, Guard: l.Valid, NewEpoch: l.TookOver(), Handover: !l.TookOver(), Copying: mode == openCopying, Fenced: l.Fenced(), OnClose: release, Log: mode == openWrite,
		Hold: func(ctx context.Context) (func() error, error) {
			h, err := gc.AcquireHold(ctx, m.Store, m.Now)
			if err != nil {
				return nil, err
			}
			return h.Release, nil
		}})
	if err != nil {
		release(ctx, nil)
		return nil, nil, err
	}
	mu.Lock()
	opened = true
	err = lostErr
	mu.Unlock()
	if err != nil {
		// Lost after the open's last check of it: fail the open, as the
		// guard does earlier. (Not lost(l, err): the caller, which holds
		// no lease yet, may hold the lock its lost takes.)
		v.Discard(ctx) // releases (OnClose)
		return nil, nil, fmt.Errorf("manage: open %s: the lease was lost during the open; open it again: %w", id, err)
	}
	return v, l, nil
}

// ErrShrink refuses a shrink that was not asked for explicitly.
var ErrShrink = errors.New("manage: new size is smaller than the volume; allow the shrink (--allow-shrink) to drop the data past it")

// Lookup returns the record called name.
func (m *Manager) Lookup(ctx context.Context, name string) (*catalog.Record, error) {
	return m.Catalog.Lookup(ctx, name)
}

// checkFree fails early if name is invalid or taken, before any object is
// written.
func (m *Manager) checkFree(ctx context.Context, name string) error {
	_, err := m.Catalog.Lookup(ctx, name)
	switch {
	case err == nil:
		return fmt.Errorf("%w: %q", catalog.ErrExists, name)
	case errors.Is(err, catalog.ErrNotFound):
		return nil
	}
	return err
}

// register adds a catalog record for a volume just made under hold h;
// if that fails it removes the volume again. It checks the hold first: a
// process that stalled past it (a collection may have deleted what the
// volume references) creates no record, rather than one it must remove
// again once Release tells it, which it cannot if it dies first.
func (m *Manager) register(ctx context.Context, h *gc.Hold, r catalog.Record) (*catalog.Record, error) {
	return m.registerHinted(ctx, h, r, false)
}

// registerHinted is register; hinted says that r's catalog hints are
// written (catalog.Catalog.Hints).
func (m *Manager) registerHinted(ctx context.Context, h *gc.Hold, r catalog.Record, hinted bool) (*catalog.Record, error) {
	r.Created = m.Now().UTC()
	if err := h.Check(ctx); err != nil {
		volume.Remove(ctx, m.Store, r.ID)
		return nil, err
	}
	create := m.Catalog.Create
	if hinted {
		create = m.Catalog.CreateHinted
	}
	if err := create(ctx, r); err != nil {
		switch created, known := m.recorded(ctx, r); {
		case created:
			return &r, nil // applied, its answer lost
		case known:
			volume.Remove(ctx, m.Store, r.ID)
		}
		// Else whether the record exists is unknown: the volume stays,
		// and a collection removes it if no record names it.
		return nil, err
	}
	return &r, nil
}

// recorded reports, after the create of r failed, whether r's record
// exists all the same (a write the store applied though its answer was
// an error, as a timeout that fired late), and whether that is known: a
// record of the name with another ID, or none, is a create that did not
// take effect.
func (m *Manager) recorded(ctx context.Context, r catalog.Record) (created, known bool) {
	got, err := m.Catalog.Lookup(context.WithoutCancel(ctx), r.Name)
	switch {
	case err == nil:
		return got.ID == r.ID, true
	case errors.Is(err, catalog.ErrNotFound):
		return false, true
	}
	return false, false
}

// hintMeanwhile starts writing the catalog hints of want, the record of
// an object not made yet under an ID the caller chose (blockmap.NewID):
// the hints need the ID, not the object, so they are written while the
// object is made (one round of durable writes fewer before the record;
// the record, the commit point, still comes after both). The caller
// holds collections off already, as for the object itself: a collection
// deletes hints that no record points back at once they are older than
// its grace period, and the hold makes one that took too long fail
// instead of creating a record whose hints are gone. wait waits for
// them; done, called once the operation has ended, drops them unless the
// record was created (hints without a record are stale hints, which a
// collection would delete later).
func (m *Manager) hintMeanwhile(ctx context.Context, want catalog.Record) (wait func() error, done func(created bool)) {
	ch := make(chan error, 1)
	go func() { ch <- m.Catalog.Hints(ctx, want) }()
	wait = sync.OnceValue(func() error { return <-ch })
	done = func(created bool) {
		if created || wait() != nil {
			return
		}
		// A record whose create failed may exist all the same, or
		// whether it does be unknown (see registerHinted): its hints
		// stay then (stale ones are a collection's).
		if exists, known := m.recorded(ctx, want); exists || !known {
			return
		}
		m.Catalog.DropHints(context.WithoutCancel(ctx), want)
	}
	return wait, done
}

// CreateVolume makes an empty volume. It holds collections off from
// writing the head to creating the record: a collection keeps a head no
// record names only while it is young, and a create that stalled past
// the grace period would name a deleted head.
func (m *Manager) CreateVolume(ctx context.Context, name string, size uint64, blockShift uint8) (*catalog.Record, error) {
	if err := m.checkFree(ctx, name); err != nil {
		return nil, err
	}
	want := catalog.Record{Name: name, ID: blockmap.NewID(), Kind: catalog.KindVolume}
	var rec *catalog.Record
	done := func(bool) {}
	err := m.held(ctx, func(h *gc.Hold) error {
		var hinted func() error
		hinted, done = m.hintMeanwhile(ctx, want)
		id, err := volume.Create(ctx, m.Store, volume.CreateOptions{Size: size, BlockShift: blockShift, ID: want.ID})
		if err != nil {
			return err
		}
		if err := hinted(); err != nil {
			volume.Remove(ctx, m.Store, id)
			return err
		}
		rec, err = m.registerHinted(ctx, h, want, true)
		return err
	})
	done(rec != nil)
	if err != nil {
		return nil, m.dropLost(ctx, rec, err)
	}
	return rec, nil
}

// Open opens the volume, snapshot or image called name.
func (m *Manager) Open(ctx context.Context, name string, writable bool) (*volume.Volume, *catalog.Record, error) {
	r, err := m.Lookup(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	if writable && r.ReadOnly() {
		return nil, nil, fmt.Errorf("%w: %q is a %s", volume.ErrReadOnly, name, r.Kind)
	}
	if writable {
		v, _, err := m.OpenWriter(ctx, r.ID, nil)
		return v, r, err
	}
	v, err := volume.Open(ctx, m.Store, r.ID, volume.OpenOptions{Follow: !r.ReadOnly()})
	return v, r, err
}

// Snapshot takes a read-only, crash-consistent snapshot of volume vol.
//
// A snapshot is a chain of durable writes, each waiting for the last; the
// hold on collections and the volume's lease are independent of each
// other, so it takes them at once, and gives them back at once; the
// catalog's hints are written meanwhile too (hintMeanwhile).
func (m *Manager) Snapshot(ctx context.Context, vol, snap string) (*catalog.Record, error) {
	if err := m.checkFree(ctx, snap); err != nil {
		return nil, err
	}
	r, err := m.Lookup(ctx, vol)
	if err != nil {
		return nil, err
	}
	if r.ReadOnly() {
		return nil, fmt.Errorf("%w: %q is a %s", volume.ErrReadOnly, vol, r.Kind)
	}
	want := catalog.Record{Name: snap, ID: blockmap.NewID(), Kind: catalog.KindSnapshot, Origin: r.ID}
	var (
		h *gc.Hold
		l *lease.Lease
		g errgroup.Group
	)
	g.Go(func() (err error) { h, err = gc.AcquireHold(ctx, m.Store, m.Now); return err })
	g.Go(func() (err error) { l, err = m.Leases.Take(ctx, r.ID.String()); return err })
	if err := g.Wait(); err != nil {
		if h != nil {
			h.Release()
		}
		if l != nil {
			l.Release(ctx)
		}
		return nil, err
	}
	hinted, done := m.hintMeanwhile(ctx, want)
	created := false
	defer func() { done(created) }()
	v, _, err := m.openLeased(ctx, r.ID, l, nil, openSnapshot) // releases l if it fails
	if err != nil {
		h.Release()
		return nil, err
	}
	var rec *catalog.Record
	var sealed []volume.Replaced
	err = func() error {
		if v.Head().Unsealed != 0 {
			// After a takeover the snapshot must first seal the old
			// writer's blocks into content blocks, deduplicating onto
			// objects a collection may be deleting: seal as a hash does,
			// checking the hold before the swap and keeping what to
			// repair from should the hold turn out lost (see Hash).
			st, err := v.HashWith(ctx, volume.HashOptions{Unsealed: true, Check: h.Check, KeepReplaced: true})
			if err != nil {
				return err
			}
			sealed = st.Replaced
		}
		if _, err := v.SnapshotAs(ctx, want.ID); err != nil {
			return err
		}
		if err := hinted(); err != nil {
			volume.Remove(ctx, m.Store, want.ID)
			return err
		}
		var err error
		rec, err = m.registerHinted(ctx, h, want, true)
		created = rec != nil
		return err
	}()
	var closed errgroup.Group
	closed.Go(func() error { return v.Close(ctx) })
	if rerr := h.Release(); err == nil {
		err = rerr
	}
	closed.Wait()
	if errors.Is(err, gc.ErrHoldLost) && len(sealed) > 0 {
		if rerr := m.repairHash(ctx, vol, sealed); rerr != nil {
			err = fmt.Errorf("%w (and sealing %q before the snapshot: %v)", err, vol, rerr)
		}
	}
	if err != nil {
		return nil, m.dropLost(ctx, rec, err)
	}
	return rec, nil
}

// Clone makes a writable volume from a snapshot or image. size 0 keeps
// the source's size.
func (m *Manager) Clone(ctx context.Context, src, name string, size uint64) (*catalog.Record, error) {
	r, err := m.Lookup(ctx, src)
	if err != nil {
		return nil, err
	}
	if !r.ReadOnly() {
		return nil, fmt.Errorf("manage: %q is a writable volume: snapshot it first (archip volume snapshot %s SNAP) and clone the snapshot", src, src)
	}
	if err := m.checkFree(ctx, name); err != nil {
		return nil, err
	}
	want := catalog.Record{Name: name, ID: blockmap.NewID(), Kind: catalog.KindVolume, Parent: r.ID}
	var rec *catalog.Record
	done := func(bool) {}
	err = m.held(ctx, func(h *gc.Hold) error {
		var hinted func() error
		hinted, done = m.hintMeanwhile(ctx, want)
		id, err := volume.CloneAs(ctx, m.Store, r.ID, size, want.ID)
		if err != nil {
			return err
		}
		if err := hinted(); err != nil {
			volume.Remove(ctx, m.Store, id)
			return err
		}
		rec, err = m.registerHinted(ctx, h, want, true)
		return err
	})
	done(rec != nil)
	if err != nil {
		return nil, m.dropLost(ctx, rec, err)
	}
	return rec, nil
}

// Resize changes a volume's size; shrinking needs allowShrink.
func (m *Manager) Resize(ctx context.Context, name string, size uint64, allowShrink bool) error {
	v, _, err := m.Open(ctx, name, true)
	if err != nil {
		return err
	}
	defer v.Close(ctx)
	if size < uint64(v.Size()) && !allowShrink {
		return fmt.Errorf("%w (%d < %d)", ErrShrink, size, v.Size())
	}
	return v.Resize(ctx, size)
}

// Rename changes a name; the volume and everything that refers to it by
// ID are untouched.
func (m *Manager) Rename(ctx context.Context, old, new string) error {
	return m.Catalog.Rename(ctx, old, new)
}

// Remove deletes the volume, snapshot or image called name. Snapshots
// and clones made from it stay valid: blocks they share stay until the
// garbage collector finds them unreferenced.
func (m *Manager) Remove(ctx context.Context, name string) error {
	rec, err := m.Catalog.Remove(ctx, name)
	if err != nil {
		return err
	}
	return m.removeData(ctx, rec)
}

// removeData deletes what rec, no longer in the catalog, names.
func (m *Manager) removeData(ctx context.Context, rec catalog.Record) error {
	name := rec.Name
	if !rec.ReadOnly() {
		// Whoever writes it must stop first: ask for its lease, then
		// drop the lease with the volume.
		l, err := m.Leases.Take(ctx, rec.ID.String())
		if err != nil {
			return fmt.Errorf("manage: %q is no longer listed, but removing its data waits for its writer: %w", name, err)
		}
		defer func() {
			l.Release(ctx)
			m.Store.Delete(ctx, lease.Name(rec.ID.String()))
		}()
	}
	err := volume.Remove(ctx, m.Store, rec.ID)
	if errors.Is(err, volume.ErrNotFound) || objstore.IsNotExist(err) {
		return nil // a collection got there first: nothing names it
	}
	return err
}

// dropLost undoes the registration of rec, the result of an operation
// that failed with gc.ErrHoldLost: a collection ran while it copied
// references and may have deleted objects rec references, so rec must not
// stay listed for clones and clients to use. Other errors, and a nil rec,
// are returned as they are.
func (m *Manager) dropLost(ctx context.Context, rec *catalog.Record, err error) error {
	if rec == nil || !errors.Is(err, gc.ErrHoldLost) {
		return err
	}
	found, uerr := m.Catalog.RemoveRecord(ctx, *rec)
	if errors.Is(uerr, catalog.ErrNotFound) {
		uerr = nil
	} else if uerr == nil {
		uerr = m.removeData(ctx, found)
	}
	if uerr != nil {
		return fmt.Errorf("manage: %q may reference deleted objects, and removing it failed (%v): remove it (archip volume remove %s) and run the operation again: %w", rec.Name, uerr, rec.Name, err)
	}
	return fmt.Errorf("manage: %q was removed, as it may reference deleted objects: run the operation again: %w", rec.Name, err)
}

// Entry is a record with its geometry, for listings.
type Entry struct {
	catalog.Record
	Size      int64  `json:"size"`
	BlockSize int64  `json:"block_size"`
	Error     string `json:"error,omitempty"` // the head could not be read
}

// List returns every record, by name.
func (m *Manager) List(ctx context.Context) ([]Entry, error) {
	var out []Entry
	_, err := m.Walk(ctx, catalog.ListOptions{}, 1000, func(page []Entry) error {
		out = append(out, page...)
		return nil
	})
	return out, err
}

// ListPage returns the records opts selects, by name, and the token that
// continues the listing (opts.After; empty at the end).
func (m *Manager) ListPage(ctx context.Context, opts catalog.ListOptions) ([]Entry, string, error) {
	var out []Entry
	next, err := m.Walk(ctx, opts, 0, func(page []Entry) error {
		out = append(out, page...)
		return nil
	})
	return out, next, err
}

// Walk calls fn with the records opts selects, by name, pageSize at a
// time (0: all at once), each with its geometry (the heads of a page are
// read just before fn gets it), and returns the continuation token (see
// catalog.Catalog.Walk).
func (m *Manager) Walk(ctx context.Context, opts catalog.ListOptions, pageSize int, fn func([]Entry) error) (string, error) {
	return m.Catalog.Walk(ctx, opts, pageSize, func(recs []catalog.Record) error {
		out := make([]Entry, len(recs))
		var g errgroup.Group
		g.SetLimit(headReaders)
		for k, r := range recs {
			g.Go(func() error {
				out[k] = Entry{Record: r}
				if h, _, err := volume.ReadHead(ctx, m.Store, r.ID); err != nil {
					out[k].Error = err.Error()
				} else {
					out[k].Size, out[k].BlockSize = int64(h.Size), h.BlockSize()
				}
				return nil
			})
		}
		g.Wait()
		return fn(out)
	})
}

// headReaders is how many heads of a listed page are read at once (one
// store round trip each).
const headReaders = 16

// Info describes one volume, snapshot or image.
type Info struct {
	Entry
	Epoch    uint64   `json:"epoch"`
	Parent   string   `json:"parent_name,omitempty"`
	Origin   string   `json:"origin_name,omitempty"`
	Children []string `json:"children"`
	Space
}

// loadMap reads the head and map of id.
func (m *Manager) loadMap(ctx context.Context, id blockmap.ID) (*blockmap.Head, []blockmap.Entry, error) {
	h, _, err := volume.ReadHead(ctx, m.Store, id)
	if err != nil {
		return nil, nil, err
	}
	entries, err := volume.LoadMap(ctx, m.Store, h)
	return h, entries, err
}

// Info returns what there is to know about name. It reads the maps of
// name's lineage, not every map: see Space.
func (m *Manager) Info(ctx context.Context, name string) (*Info, error) {
	r, err := m.Lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	h, entries, err := m.loadMap(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	in := &Info{Entry: Entry{Record: *r, Size: int64(h.Size), BlockSize: h.BlockSize()}, Epoch: h.Epoch, Children: []string{}}
	for _, x := range []struct {
		id   blockmap.ID
		name *string
	}{{r.Parent, &in.Parent}, {r.Origin, &in.Origin}} {
		if x.id.IsZero() {
			continue
		}
		p, err := m.Catalog.ByID(ctx, x.id)
		if err == nil {
			*x.name = p.Name
		} else if !errors.Is(err, catalog.ErrNotFound) {
			return nil, err
		}
	}
	children, err := m.Catalog.Children(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	for _, c := range children {
		in.Children = append(in.Children, c.Name)
	}
	in.Space, _, err = spaceOf(ctx, catLineage{m}, r.ID, h, entries)
	if err != nil {
		return nil, err
	}
	if in.LogBytes, err = logBytes(ctx, m.Store, r.ID, h); err != nil {
		return nil, err
	}
	in.ExclusiveBytes += in.LogBytes
	return in, nil
}

// Range is a byte range of a volume.
type Range struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// Diff returns the block ranges where a and b may differ. It compares
// map entries, not data, so it costs one pass over two maps: blocks that
// point at the same object (or are both zero) are equal.
func (m *Manager) Diff(ctx context.Context, a, b string) ([]Range, error) {
	load := func(name string) (*blockmap.Head, []blockmap.Entry, error) {
		r, err := m.Lookup(ctx, name)
		if err != nil {
			return nil, nil, err
		}
		return m.loadMap(ctx, r.ID)
	}
	ha, ea, err := load(a)
	if err != nil {
		return nil, err
	}
	hb, eb, err := load(b)
	if err != nil {
		return nil, err
	}
	if ha.BlockShift != hb.BlockShift {
		return nil, fmt.Errorf("manage: %q and %q have different block sizes (%d, %d); diff compares maps block by block", a, b, ha.BlockSize(), hb.BlockSize())
	}
	bs := ha.BlockSize()
	size := int64(max(ha.Size, hb.Size))
	var out []Range
	for i := int64(0); i < max(int64(len(ea)), int64(len(eb))); i++ {
		var x, y blockmap.Entry
		if i < int64(len(ea)) {
			x = ea[i]
		}
		if i < int64(len(eb)) {
			y = eb[i]
		}
		if x.Equal(y) {
			continue
		}
		off := i * bs
		n := min(bs, size-off)
		if k := len(out) - 1; k >= 0 && out[k].Offset+out[k].Length == off {
			out[k].Length += n
		} else {
			out = append(out, Range{off, n})
		}
	}
	return out, nil
}

// Import stores a raw image as a new image called name.
func (m *Manager) Import(ctx context.Context, r io.Reader, size int64, name string, opts image.Options) (*catalog.Record, image.ImportStats, error) {
	if err := m.checkFree(ctx, name); err != nil {
		return nil, image.ImportStats{}, err
	}
	var st image.ImportStats
	var rec *catalog.Record
	err := m.held(ctx, func(h *gc.Hold) error {
		var err error
		if st, err = image.Import(ctx, m.Store, r, size, opts); err != nil {
			return err
		}
		rec, err = m.register(ctx, h, catalog.Record{Name: name, ID: st.ID, Kind: catalog.KindImage})
		return err
	})
	if err != nil {
		return nil, st, m.dropLost(ctx, rec, err)
	}
	return rec, st, nil
}

// Hash turns the private blocks of name into content blocks, so that
// identical data stored elsewhere is shared.
//
// The hash points the map at content objects that may be old garbage, so
// it holds collections off, and it must not lose data if the hold is lost
// (the process stalled past its expiry and a collection took it for
// dead, then deleted such objects). So: the hash checks its hold in the
// store last before its head swap, and changes nothing if it was lost; it
// keeps the private objects it replaced until Release confirms that no
// collection ran; and if Release finds the hold lost (a stall between
// the check and the swap, or after the swap), it takes a new hold, under
// which no collection runs, and stores again any content object that is
// gone from the private object it replaced (RepairHash) before deleting
// those. It does the same when Release cannot tell (a store error). A collection marks either the old map (the private objects stay)
// or the new one (the content objects stay), so one of the two is there
// for each block. Not covered: a stall between the check and the swap
// during which a collection deletes the content objects, then a second
// collection that starts in the moments between the swap and the new
// hold and deletes the private objects; the repair then reports the
// blocks lost (volume.ErrCorrupt).
func (m *Manager) Hash(ctx context.Context, name string, progress func(done, total int64)) (volume.HashStats, error) {
	r, err := m.Lookup(ctx, name)
	if err != nil {
		return volume.HashStats{}, err
	}
	h, err := gc.AcquireHold(ctx, m.Store, m.Now)
	if err != nil {
		return volume.HashStats{}, err
	}
	var v *volume.Volume
	if r.ReadOnly() {
		v, err = volume.Open(ctx, m.Store, r.ID, volume.OpenOptions{Remap: true})
	} else {
		v, _, err = m.OpenWriter(ctx, r.ID, nil)
	}
	if err != nil {
		h.Release()
		return volume.HashStats{}, err
	}
	st, err := v.HashWith(ctx, volume.HashOptions{Progress: progress, Check: h.Check, KeepReplaced: true})
	cerr := v.Close(ctx)
	rerr := h.Release()
	if err != nil {
		if errors.Is(err, gc.ErrHoldLost) {
			err = fmt.Errorf("manage: %q: the hash changed nothing, run it again: %w", name, err)
		}
		return volume.HashStats{}, err // the map is as it was
	}
	if rerr != nil { // lost, or not known to be held
		if err := m.repairHash(ctx, name, st.Replaced); err != nil {
			return volume.HashStats{}, err
		}
	}
	for _, o := range st.Freed {
		m.Store.Delete(ctx, o) // best effort: a leftover is an orphan for GC
	}
	st.Replaced, st.Freed = nil, nil
	return st, cerr
}

// repairHash makes sound a map a hash (or a snapshot's seal) stored after
// its hold was lost: see Hash.
func (m *Manager) repairHash(ctx context.Context, name string, repl []volume.Replaced) error {
	for {
		h, err := gc.AcquireHold(ctx, m.Store, m.Now)
		if err != nil {
			return fmt.Errorf("manage: %q: it stalled past its hold on garbage collections, and checking the map it stored failed (%w): read the volume to check it", name, err)
		}
		lost, err := volume.RepairHash(ctx, m.Store, repl)
		rerr := h.Release()
		switch {
		case err != nil:
			return fmt.Errorf("manage: %q: it stalled past its hold on garbage collections, and checking the map it stored failed (%w): read the volume to check it", name, err)
		case len(lost) > 0:
			return fmt.Errorf("%w: %q: a garbage collection deleted %d blocks while it stalled (the first: %s, which replaced %s)", volume.ErrCorrupt, name, len(lost), repl[lost[0]].New.ObjectName(), repl[lost[0]].Old.ObjectName())
		case errors.Is(rerr, gc.ErrHoldLost):
			continue // stalled again: check again
		case rerr != nil:
			return fmt.Errorf("manage: %q: could not confirm the check of the map it stored (%w): read the volume to check it", name, rerr)
		}
		return nil
	}
}
