package manage

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/volume"
)

// Buckets returns the store's buckets and objects (package bucket),
// holding collections off as the manager's own operations do.
func (m *Manager) Buckets() *bucket.Store {
	return &bucket.Store{S: m.Store, Now: m.Now, Hold: func(ctx context.Context) (func() error, error) {
		h, err := gc.AcquireHold(ctx, m.Store, m.Now)
		if err != nil {
			return nil, err
		}
		return h.Release, nil
	}}
}

// unheld is the buckets for use inside m.held.
func (m *Manager) unheld() *bucket.Store { return &bucket.Store{S: m.Store, Now: m.Now} }

// CloneObject makes a writable volume called name from the object key of
// bucket (an uploaded raw image), sharing its blocks: O(map), no data
// copied, when the object is one map or its parts are block-aligned (a
// plain upload, or parts that are multiples of the block size); otherwise
// its data is read and stored again, deduplicated (most blocks then
// exist already only if they happen to be aligned). size 0 keeps the
// object's size.
func (m *Manager) CloneObject(ctx context.Context, bkt, key, name string, size uint64) (*catalog.Record, error) {
	if err := m.checkFree(ctx, name); err != nil {
		return nil, err
	}
	var rec *catalog.Record
	err := m.held(ctx, func(h *gc.Hold) error {
		src, err := m.objectMap(ctx, bkt, key)
		if err != nil {
			return err
		}
		id, err := volume.Clone(ctx, m.Store, src, size)
		if err != nil {
			return err
		}
		rec, err = m.register(ctx, h, catalog.Record{Name: name, ID: id, Kind: catalog.KindVolume})
		return err
	})
	if err != nil {
		return nil, m.dropLost(ctx, rec, err)
	}
	return rec, nil
}

// objectMap returns one read-only map of the object's data (see
// CloneObject), under the caller's hold.
func (m *Manager) objectMap(ctx context.Context, bkt, key string) (blockmap.ID, error) {
	b := m.unheld()
	obj, err := b.GetObject(ctx, bkt, key)
	if err != nil {
		return blockmap.ID{}, err
	}
	src, err := b.Map(ctx, obj)
	if errors.Is(err, bucket.ErrNotAligned) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(b.Read(ctx, obj, 0, obj.Size, pw)) }()
		st, err := image.Import(ctx, m.Store, pr, obj.Size, image.Options{})
		pr.Close()
		return st.ID, err
	}
	return src, err
}

// ImportObject makes the object key of bucket an image called name: a
// read-only map sharing the object's segments and blocks (no data copied
// when CloneObject copies none), which stays when the object is deleted.
func (m *Manager) ImportObject(ctx context.Context, bkt, key, name string) (*catalog.Record, error) {
	if err := m.checkFree(ctx, name); err != nil {
		return nil, err
	}
	var rec *catalog.Record
	err := m.held(ctx, func(h *gc.Hold) error {
		src, err := m.objectMap(ctx, bkt, key)
		if err != nil {
			return err
		}
		id, err := m.readOnlyCopy(ctx, src)
		if err != nil {
			return err
		}
		rec, err = m.register(ctx, h, catalog.Record{Name: name, ID: id, Kind: catalog.KindImage})
		return err
	})
	if err != nil {
		return nil, m.dropLost(ctx, rec, err)
	}
	return rec, nil
}

// readOnlyCopy writes a new read-only head that shares src's segments
// (a settled read-only map), under the caller's hold.
func (m *Manager) readOnlyCopy(ctx context.Context, srcID blockmap.ID) (blockmap.ID, error) {
	src, _, err := volume.ReadHead(ctx, m.Store, srcID)
	if err != nil {
		return blockmap.ID{}, err
	}
	if !src.ReadOnly || len(src.Logs) > 0 || src.Unsealed != 0 {
		return blockmap.ID{}, fmt.Errorf("manage: map %s is not a settled read-only map", srcID)
	}
	c := &blockmap.Head{ID: blockmap.NewID(), Size: src.Size, BlockShift: src.BlockShift, ReadOnly: true,
		SeqReserved: 1, Delta: src.Delta}
	for _, ref := range src.Segments {
		ref.Shared = true
		c.Segments = append(c.Segments, ref)
	}
	if _, err := m.Store.Create(ctx, blockmap.HeadName(c.ID), blockmap.EncodeHead(c)); err != nil {
		return blockmap.ID{}, fmt.Errorf("manage: copy map %s: %w", srcID, err)
	}
	return c.ID, nil
}

// Publish makes the snapshot or image called name the object key of
// bucket: a new read-only map sharing the source's segments and blocks
// (O(map head), no data copied), which stays when the snapshot is
// removed. Its ETag is the new map's ID, not an MD5.
func (m *Manager) Publish(ctx context.Context, name, bkt, key string) (*bucket.Object, error) {
	r, err := m.Lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	if !r.ReadOnly() {
		return nil, fmt.Errorf("manage: %q is a writable volume: snapshot it first (archip volume snapshot %s SNAP) and publish the snapshot", name, name)
	}
	var obj *bucket.Object
	err = m.held(ctx, func(h *gc.Hold) error {
		id, err := m.readOnlyCopy(ctx, r.ID)
		if err != nil {
			return err
		}
		if err := h.Check(ctx); err != nil {
			m.Store.Delete(ctx, blockmap.HeadName(id))
			return err
		}
		head, _, err := volume.ReadHead(ctx, m.Store, id)
		if err == nil {
			obj, err = m.unheld().PutMap(ctx, bkt, key, id, int64(head.Size), "application/octet-stream")
		}
		if err != nil {
			m.Store.Delete(ctx, blockmap.HeadName(id))
		}
		return err
	})
	return obj, err
}
