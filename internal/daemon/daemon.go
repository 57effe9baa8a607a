// Package daemon is the node daemon behind 'archip serve': it serves the
// store's volumes to NBD clients.
//
// Every connection to one volume shares one open handle, so a FLUSH on
// any connection covers the writes of all of them (the server advertises
// multi-conn) and the map is loaded once. A handle is opened on the first
// connection and flushed and closed after the last one ends.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/nbd"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/units"
	"github.com/archipelago-go/archip/internal/volume"
)

// Daemon holds the volumes open for NBD clients.
type Daemon struct {
	mgr *manage.Manager

	mu   sync.Mutex // guards open
	open map[blockmap.ID]*handle
}

type handle struct {
	v    *volume.Volume
	refs int
}

// New returns a daemon serving the volumes of m's store.
func New(m *manage.Manager) *Daemon {
	return &Daemon{mgr: m, open: map[blockmap.ID]*handle{}}
}

var _ nbd.Exports = (*Daemon)(nil)

// Open implements nbd.Exports: name is a volume, snapshot or image.
func (d *Daemon) Open(ctx context.Context, name string) (nbd.Export, func(), error) {
	if name == "" {
		return nil, nil, fmt.Errorf("%w: give the volume's name as the export name", nbd.ErrUnknownExport)
	}
	r, err := d.mgr.Lookup(ctx, name)
	if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrBadName) {
		return nil, nil, fmt.Errorf("%w: %v", nbd.ErrUnknownExport, err)
	}
	if err != nil {
		return nil, nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.open[r.ID]
	if h == nil {
		v, err := volume.Open(ctx, d.mgr.Store, r.ID, volume.OpenOptions{Writable: !r.ReadOnly()})
		if err != nil {
			return nil, nil, err
		}
		h = &handle{v: v}
		d.open[r.ID] = h
	}
	h.refs++
	var once sync.Once
	release := func() { once.Do(func() { d.release(r.ID, h) }) }
	return export{h.v}, release, nil
}

func (d *Daemon) release(id blockmap.ID, h *handle) {
	d.mu.Lock()
	h.refs--
	last := h.refs == 0
	if last {
		delete(d.open, id)
	}
	d.mu.Unlock()
	if last {
		h.v.Close(context.Background())
	}
}

// List implements nbd.Exports.
func (d *Daemon) List(ctx context.Context) ([]nbd.ExportInfo, error) {
	list, err := d.mgr.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]nbd.ExportInfo, 0, len(list))
	for _, e := range list {
		out = append(out, nbd.ExportInfo{Name: e.Name, Description: fmt.Sprintf("%s, %s", e.Kind, units.FormatSize(e.Size))})
	}
	return out, nil
}

// FlushLoop flushes every open volume that holds unflushed writes, every
// interval, until ctx ends. Clients flush when they need durability; this
// bounds how long data written by a client that never flushes stays
// unflushed (and so what a crash of the daemon's host can lose of it).
// Errors are passed to logf, and a volume whose flush fails is retried
// at the next tick.
func (d *Daemon) FlushLoop(ctx context.Context, interval time.Duration, logf func(format string, args ...any)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		var vs []*volume.Volume
		for _, h := range d.open {
			if h.v.Dirty() {
				vs = append(vs, h.v)
			}
		}
		d.mu.Unlock()
		for _, v := range vs {
			if err := v.Flush(ctx); err != nil && !errors.Is(err, volume.ErrClosed) && ctx.Err() == nil {
				logf("archip: periodic flush of volume %s: %v", v.ID(), err)
			}
		}
	}
}

// Close flushes and closes every open volume.
func (d *Daemon) Close(ctx context.Context) error {
	d.mu.Lock()
	hs := d.open
	d.open = map[blockmap.ID]*handle{}
	d.mu.Unlock()
	var errs []error
	for _, h := range hs {
		errs = append(errs, h.v.Close(ctx))
	}
	return errors.Join(errs...)
}

// export adapts a volume to nbd.Export.
type export struct{ v *volume.Volume }

func (e export) Size() int64    { return e.v.Size() }
func (e export) ReadOnly() bool { return e.v.ReadOnly() }

func (e export) ReadAt(ctx context.Context, p []byte, off int64) error {
	return e.v.ReadAt(ctx, p, off)
}

func (e export) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return e.v.WriteAt(ctx, p, off, fua)
}

// errNotFast refuses a FAST_ZERO request that would have to write data.
var errNotFast = errors.New("daemon: zeroing this range would write data")

func (e export) WriteZeroes(ctx context.Context, off, n int64, noHole, fastOnly, fua bool) error {
	if fastOnly {
		bs := e.v.BlockSize()
		aligned := off%bs == 0 && (n%bs == 0 || off+n == e.v.Size())
		if noHole || !aligned {
			return errNotFast
		}
	}
	return e.v.WriteZeroes(ctx, off, n, noHole, fua)
}

func (e export) Trim(ctx context.Context, off, n int64, fua bool) error {
	return e.v.WriteZeroes(ctx, off, n, false, fua)
}

func (e export) Flush(ctx context.Context) error { return e.v.Flush(ctx) }

func (e export) BlockStatus(ctx context.Context, off, n int64) ([]nbd.Extent, error) {
	ext, err := e.v.BlockStatus(ctx, off, n)
	if err != nil {
		return nil, err
	}
	out := make([]nbd.Extent, len(ext))
	for i, x := range ext {
		out[i] = nbd.Extent{Length: x.Length, Hole: x.Zero}
	}
	return out, nil
}

// Errno maps an error from a volume to the errno an NBD reply carries.
func Errno(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNotFast):
		return nbd.ENOTSUP
	case errors.Is(err, volume.ErrReadOnly), errors.Is(err, objstore.ErrReadOnly):
		return nbd.EPERM
	case errors.Is(err, volume.ErrOutOfRange):
		return nbd.EINVAL
	case errors.Is(err, objstore.ErrNoSpace):
		return nbd.ENOSPC
	case errors.Is(err, volume.ErrClosed), errors.Is(err, context.Canceled):
		return nbd.ESHUTDOWN
	}
	return nbd.EIO
}
