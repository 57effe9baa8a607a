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
	"github.com/archipelago-go/archip/internal/objstore"
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
		b := m.unheld()
		obj, err := b.GetObject(ctx, bkt, key)
		if err != nil {
			return err
		}
		src, err := b.Map(ctx, obj)
		if errors.Is(err, bucket.ErrNotAligned) {
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(b.Read(ctx, obj, 0, obj.Size, pw)) }()
			var st image.ImportStats
			st, err = image.Import(ctx, m.Store, pr, obj.Size, image.Options{})
			pr.Close()
			src = st.ID
		}
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
		src, _, err := volume.ReadHead(ctx, m.Store, r.ID)
		if err != nil {
			return err
		}
		if len(src.Logs) > 0 || src.Unsealed != 0 {
			return fmt.Errorf("manage: %q has unsealed blocks or write logs: it is not a settled snapshot", name)
		}
		c := &blockmap.Head{ID: blockmap.NewID(), Size: src.Size, BlockShift: src.BlockShift, ReadOnly: true,
			SeqReserved: 1, Delta: src.Delta}
		for _, ref := range src.Segments {
			ref.Shared = true
			c.Segments = append(c.Segments, ref)
		}
		if _, err := m.Store.Create(ctx, blockmap.HeadName(c.ID), blockmap.EncodeHead(c)); err != nil {
			return fmt.Errorf("manage: publish: %w", err)
		}
		if err := h.Check(ctx); err != nil {
			m.Store.Delete(ctx, blockmap.HeadName(c.ID))
			return err
		}
		obj, err = m.unheld().PutMap(ctx, bkt, key, c.ID, int64(c.Size), "application/octet-stream")
		if err != nil && !errors.Is(err, objstore.ErrExists) {
			m.Store.Delete(ctx, blockmap.HeadName(c.ID))
		}
		return err
	})
	return obj, err
}
