package pools

import (
	"context"

	"github.com/archipelago-go/archip/internal/objstore"
)

// The optional capabilities, each a small type that a combination embeds
// beside *Router, so that a type assertion finds exactly those the parts
// have (STYLE: a wrapper neither hides nor fakes what it wraps).
type (
	rwCap   struct{ r *Router }
	syncCap struct{ r *Router }
	copyCap struct{ r *Router }
	lendCap struct{ r *Router }
)

// wrap returns r in the type of its capabilities.
func (r *Router) wrap() objstore.Store {
	all := append([]objstore.Store{r.meta}, r.pools...)
	rw, sync, cp, lend := true, false, true, true
	for _, s := range all {
		c := objstore.CapabilitiesOf(s)
		rw = rw && c&objstore.CapRangeWrite != 0
		sync = sync || c&objstore.CapSync != 0
	}
	for _, s := range r.pools {
		c := objstore.CapabilitiesOf(s)
		cp = cp && c&objstore.CapCopy != 0
		lend = lend && c&objstore.CapLend != 0
	}
	sync, cp = sync && rw, cp && rw
	w, s, c, l := rwCap{r}, syncCap{r}, copyCap{r}, lendCap{r}
	switch {
	case !rw && !lend:
		return r
	case !rw:
		return struct {
			*Router
			lendCap
		}{r, l}
	case !sync && !cp && !lend:
		return struct {
			*Router
			rwCap
		}{r, w}
	case !sync && !cp:
		return struct {
			*Router
			rwCap
			lendCap
		}{r, w, l}
	case !sync && !lend:
		return struct {
			*Router
			rwCap
			copyCap
		}{r, w, c}
	case !sync:
		return struct {
			*Router
			rwCap
			copyCap
			lendCap
		}{r, w, c, l}
	case !cp && !lend:
		return struct {
			*Router
			rwCap
			syncCap
		}{r, w, s}
	case !cp:
		return struct {
			*Router
			rwCap
			syncCap
			lendCap
		}{r, w, s, l}
	case !lend:
		return struct {
			*Router
			rwCap
			syncCap
			copyCap
		}{r, w, s, c}
	default:
		return struct {
			*Router
			rwCap
			syncCap
			copyCap
			lendCap
		}{r, w, s, c, l}
	}
}

// WriteAt writes in place where the object is (a new one in the default
// pool).
func (c rwCap) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	s, err := c.r.target(ctx, name)
	if err != nil {
		return err
	}
	rw, _ := objstore.AsRangeWriter(s)
	return rw.WriteAt(ctx, name, p, off)
}

// Sync syncs the object where it is; on a part without Syncer, whose
// writes are durable when they return, it only checks that the object
// exists.
func (c syncCap) Sync(ctx context.Context, name string) error {
	s, err := c.r.target(ctx, name)
	if err != nil {
		return err
	}
	if sy, ok := objstore.AsSyncer(s); ok {
		return sy.Sync(ctx, name)
	}
	_, err = s.Stat(ctx, name)
	return err
}

// Copy copies within a pool with the pool's Copy; between two backends
// (a block of one pool copied to a new name in another) it reads src
// and creates dst, so the data passes through this process. src is
// found as a read finds it (a copy remembered in a pool that no longer
// holds it is looked for in the others).
func (c copyCap) Copy(ctx context.Context, src, dst string) error {
	r := c.r
	to := -1 // -1: the metadata backend, else a pool's index
	if r.isData(dst) {
		i, err := r.newIndex(ctx, dst, objstore.ErrExists)
		if err != nil {
			return err
		}
		to = i
	}
	copyFrom := func(from int) error {
		if from == to {
			if cp, ok := objstore.AsCopier(r.at(from)); ok {
				return cp.Copy(ctx, src, dst)
			}
		}
		b, _, err := r.at(from).Get(ctx, src)
		if err != nil {
			return err
		}
		if to < 0 {
			_, err = r.meta.Create(ctx, dst, b)
		} else {
			_, err = r.createIn(ctx, to, dst, b)
		}
		return err
	}
	if !r.isData(src) {
		return copyFrom(-1)
	}
	return r.findIndex(ctx, src, copyFrom)
}

// ReadLend lends the buffers of the pool holding the block; a metadata
// backend that lends none reads into a buffer of its own.
func (c lendCap) ReadLend(ctx context.Context, name string, off int64, n int, fn func(bufs [][]byte) error) error {
	r := c.r
	if r.isData(name) {
		return r.find(ctx, name, func(s objstore.Store) error {
			l, _ := objstore.AsLender(s)
			return l.ReadLend(ctx, name, off, n, fn)
		})
	}
	if l, ok := objstore.AsLender(r.meta); ok {
		return l.ReadLend(ctx, name, off, n, fn)
	}
	buf := make([]byte, n)
	if err := r.meta.ReadAt(ctx, name, buf, off); err != nil {
		return err
	}
	return fn([][]byte{buf})
}
