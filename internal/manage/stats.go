package manage

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// StoreStats describe a whole store.
type StoreStats struct {
	Volumes   int `json:"volumes"`
	Snapshots int `json:"snapshots"`
	Images    int `json:"images"`
	// ProvisionedBytes is the sum of all sizes.
	ProvisionedBytes int64 `json:"provisioned_bytes"`
	// LogicalBytes is the allocated bytes summed over every map: what
	// the data would take if nothing were shared. A block the map has as
	// zero counts if its write log index has bytes in it (on a store
	// without in-place writes, written data can stay there).
	LogicalBytes int64 `json:"logical_bytes"`
	// StoredBytes is what data objects take: ContentBytes + PrivateBytes
	// + LogBytes.
	StoredBytes    int64 `json:"stored_bytes"`
	ContentObjects int64 `json:"content_objects"`
	ContentBytes   int64 `json:"content_bytes"`
	PrivateObjects int64 `json:"private_objects"`
	PrivateBytes   int64 `json:"private_bytes"`
	// LogObjects and LogBytes are the write logs, their segments and
	// their indexes: written data not yet in blocks, and records that a
	// checkpoint has not dropped yet.
	LogObjects      int64 `json:"log_objects"`
	LogBytes        int64 `json:"log_bytes"`
	MetadataObjects int64 `json:"metadata_objects"`
	MetadataBytes   int64 `json:"metadata_bytes"`
	// DedupRatio is LogicalBytes / StoredBytes: how many bytes of volume
	// data each stored byte serves, through clones, snapshots and dedup.
	DedupRatio float64 `json:"dedup_ratio"`
	// VolumeSpace is, by name, what each volume, snapshot and image
	// alone references (StatsOptions.Volumes).
	VolumeSpace []VolumeSpace `json:"volume_space,omitempty"`
}

// VolumeSpace is what one volume, snapshot or image alone references,
// found by reading every map: what removing it and then collecting
// garbage frees, in bytes of blocks (as Space counts them).
type VolumeSpace struct {
	Name string       `json:"name"`
	ID   blockmap.ID  `json:"id"`
	Kind catalog.Kind `json:"kind"`
	// ExclusiveBytes: private objects no other map references (Info
	// tells the same from the volume's lineage alone).
	ExclusiveBytes int64 `json:"exclusive_bytes"`
	// ExclusiveContentBytes: content blocks no other map references.
	ExclusiveContentBytes int64 `json:"exclusive_content_bytes"`
}

// StatsOptions choose what Stats computes beyond the store-wide figures.
type StatsOptions struct {
	// Volumes fills StoreStats.VolumeSpace. It holds about 100 bytes per
	// block object the maps reference while it reads them.
	Volumes bool
}

// Stats walks the catalog, every map and every object.
func (m *Manager) Stats(ctx context.Context) (*StoreStats, error) {
	return m.StatsWith(ctx, StatsOptions{})
}

// refCount is how many maps reference one block object, and the last of them
// (an index in the catalog's records) with the bytes it counts for it.
type refCount struct {
	maps  int32
	last  int32
	bytes int64
}

// addUses counts the block objects the entries of map i, whose head is
// h, reference (a partial block's base included) into users, keyed as
// blockmap.Entry.Object gives them.
func addUses(users map[blockmap.Entry]refCount, i int32, h *blockmap.Head, entries []blockmap.Entry) {
	note := func(o blockmap.Entry, n int64) {
		u, ok := users[o]
		switch {
		case !ok:
			users[o] = refCount{maps: 1, last: i, bytes: n}
		case u.last != i:
			users[o] = refCount{maps: u.maps + 1, last: i, bytes: n}
		}
	}
	for b, e := range entries {
		if e.Kind() == blockmap.Zero {
			continue
		}
		n := h.BlockLen(int64(b))
		note(e.Object(), ownBytes(e, n, h.BlockShift))
		if e.Kind() == blockmap.Partial {
			note(e.Base(), n) // the base object holds the whole block
		}
	}
}

// StatsWith is Stats with options.
func (m *Manager) StatsWith(ctx context.Context, opts StatsOptions) (*StoreStats, error) {
	st := &StoreStats{}
	var users map[blockmap.Entry]refCount
	if opts.Volumes {
		users = map[blockmap.Entry]refCount{}
	}
	err := m.Catalog.All(ctx, func(r catalog.Record) error {
		switch r.Kind {
		case catalog.KindVolume:
			st.Volumes++
		case catalog.KindSnapshot:
			st.Snapshots++
		case catalog.KindImage:
			st.Images++
		}
		h, entries, err := m.loadMap(ctx, r.ID)
		if err != nil {
			return err
		}
		st.ProvisionedBytes += int64(h.Size)
		for b, e := range entries {
			if e.Kind() != blockmap.Zero {
				st.LogicalBytes += h.BlockLen(int64(b))
			}
		}
		indexed, err := m.indexedBytes(ctx, h, entries)
		if err != nil {
			return err
		}
		st.LogicalBytes += indexed
		if users != nil {
			addUses(users, int32(len(st.VolumeSpace)), h, entries)
			st.VolumeSpace = append(st.VolumeSpace, VolumeSpace{Name: r.Name, ID: r.ID, Kind: r.Kind})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for o, u := range users {
		switch {
		case u.maps != 1:
		case o.Kind() == blockmap.Content:
			st.VolumeSpace[u.last].ExclusiveContentBytes += u.bytes
		default:
			st.VolumeSpace[u.last].ExclusiveBytes += u.bytes
		}
	}
	slices.SortFunc(st.VolumeSpace, func(a, b VolumeSpace) int { return strings.Compare(a.Name, b.Name) })
	err = m.Store.List(ctx, "", func(in objstore.Info) error {
		switch blockmap.ParseName(in.Name).Kind {
		case blockmap.ContentObject:
			st.ContentObjects++
			st.ContentBytes += in.Size
		case blockmap.PrivateObject:
			st.PrivateObjects++
			st.PrivateBytes += in.Size
		case blockmap.LogObject, blockmap.IndexObject:
			st.LogObjects++
			st.LogBytes += in.Size
		default:
			st.MetadataObjects++
			st.MetadataBytes += in.Size
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	st.StoredBytes = st.ContentBytes + st.PrivateBytes + st.LogBytes
	if st.StoredBytes > 0 {
		st.DedupRatio = float64(st.LogicalBytes) / float64(st.StoredBytes)
	}
	return st, nil
}

// indexedBytes returns the bytes of the blocks that h's write log index
// has bytes in and its map has as zero (a block the map allocates counts
// already). An index gone since h was read (a writer's checkpoint
// replaced it) counts nothing: these are a walk's figures, not a
// snapshot's.
func (m *Manager) indexedBytes(ctx context.Context, h *blockmap.Head, entries []blockmap.Entry) (int64, error) {
	if h.Index.IsZero() {
		return 0, nil
	}
	name := blockmap.IndexName(h.ID, h.Index.Epoch, h.Index.Seq)
	b, _, err := m.Store.Get(ctx, name)
	if objstore.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	x, err := blockmap.DecodeIndex(b, h.ID, h.Index)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", volume.ErrCorrupt, name, err)
	}
	var n int64
	last := int64(-1)
	for _, e := range x.Exts { // sorted by block
		if e.Block != last && e.Block < int64(len(entries)) && entries[e.Block].Kind() == blockmap.Zero {
			n += h.BlockLen(e.Block)
		}
		last = e.Block
	}
	return n, nil
}
