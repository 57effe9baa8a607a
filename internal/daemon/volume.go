package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// Volume is a volume, snapshot or image as one client of a frontend sees
// it, from Open until its release. Every method may be called
// concurrently. Reads never return data older than the last flush of
// the volume's writer, wherever it runs; the first write takes the lease
// (see the package doc). Errors wrap the sentinels of package volume and
// objstore, ErrLeaseLost and ErrNotFast, which frontends map to their
// protocol's errors.
type Volume struct{ h *handle }

// ErrNotFast refuses a WriteZeroes with fastOnly that would have to
// write data.
var ErrNotFast = errors.New("daemon: zeroing this range would write data")

// Name is the name the volume was opened by.
func (c *Volume) Name() string { return c.h.name }

// Size is the volume's size in bytes (as of its last flush, for a
// follower).
func (c *Volume) Size() int64 {
	var n int64
	c.h.read(context.Background(), func(v *volume.Volume) error { n = v.Size(); return nil })
	return n
}

// ReadOnly reports whether the volume refuses writes: a snapshot or an
// image.
func (c *Volume) ReadOnly() bool { return c.h.readOnly }

// ReadAt fills p from off; p must lie within Size.
func (c *Volume) ReadAt(ctx context.Context, p []byte, off int64) error {
	if m := c.h.m; m != nil {
		t := time.Now()
		err := c.h.read(ctx, func(v *volume.Volume) error { return v.ReadAt(ctx, p, off) })
		m.read(len(p), t, err)
		return err
	}
	return c.h.read(ctx, func(v *volume.Volume) error { return v.ReadAt(ctx, p, off) })
}

// Lends reports whether ReadTo passes the store's own buffers (the store
// is an objstore.Lender), so that a frontend gains by using it instead
// of ReadAt.
func (c *Volume) Lends() bool {
	_, ok := objstore.AsLender(c.h.d.mgr.Store)
	return ok
}

// ReadTo reads n bytes at off and calls fn with them, in buffers valid
// until fn returns. It does not call fn if the read fails.
func (c *Volume) ReadTo(ctx context.Context, off, n int64, fn func(bufs [][]byte) error) error {
	if m := c.h.m; m != nil {
		t := time.Now()
		err := c.h.read(ctx, func(v *volume.Volume) error { return v.ReadTo(ctx, off, n, fn) })
		m.read(int(n), t, err)
		return err
	}
	return c.h.read(ctx, func(v *volume.Volume) error { return v.ReadTo(ctx, off, n, fn) })
}

// WriteAt writes p at off; with fua it is durable when WriteAt returns.
func (c *Volume) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if m := c.h.m; m != nil {
		t := time.Now()
		err := c.h.write(ctx, func(v *volume.Volume) error { return v.WriteAt(ctx, p, off, fua) })
		m.write(len(p), fua, t, err)
		return err
	}
	return c.h.write(ctx, func(v *volume.Volume) error { return v.WriteAt(ctx, p, off, fua) })
}

// WriteZeroes makes [off, off+n) read as zeros; noHole keeps it
// allocated. With fastOnly it fails with ErrNotFast unless it can do so
// without writing data (whole blocks, and no noHole).
func (c *Volume) WriteZeroes(ctx context.Context, off, n int64, noHole, fastOnly, fua bool) (err error) {
	if m := c.h.m; m != nil {
		t := time.Now()
		defer func() {
			if !errors.Is(err, ErrNotFast) {
				m.zero(n, fua, t, err)
			}
		}()
	}
	return c.h.write(ctx, func(v *volume.Volume) error {
		if fastOnly {
			bs := v.BlockSize()
			aligned := off%bs == 0 && (n%bs == 0 || off+n == v.Size())
			if noHole || !aligned {
				return ErrNotFast
			}
		}
		return v.WriteZeroes(ctx, off, n, noHole, fua)
	})
}

// Trim drops the data of [off, off+n): it reads as zeros after.
func (c *Volume) Trim(ctx context.Context, off, n int64, fua bool) error {
	if m := c.h.m; m != nil {
		t := time.Now()
		err := c.h.write(ctx, func(v *volume.Volume) error { return v.WriteZeroes(ctx, off, n, false, fua) })
		m.zero(n, fua, t, err)
		return err
	}
	return c.h.write(ctx, func(v *volume.Volume) error { return v.WriteZeroes(ctx, off, n, false, fua) })
}

// Flush makes the writes of every client of the volume on this node
// durable; a follower has nothing to flush.
func (c *Volume) Flush(ctx context.Context) error {
	t := time.Now()
	err := c.h.read(ctx, func(v *volume.Volume) error { return v.Flush(ctx) })
	if m := c.h.m; m != nil {
		m.flush(t, err)
	}
	if err != nil && ctx.Err() == nil {
		c.h.d.log.Error("flush failed", "volume", c.h.name, "err", err)
	}
	return err
}

// BlockStatus describes [off, off+n) from off on as extents; it may
// cover less than n but at least one byte.
func (c *Volume) BlockStatus(ctx context.Context, off, n int64) ([]volume.Extent, error) {
	var out []volume.Extent
	err := c.h.read(ctx, func(v *volume.Volume) error {
		ext, err := v.BlockStatus(ctx, off, n)
		out = ext
		return err
	})
	return out, err
}
