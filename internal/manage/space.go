package manage

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// Space is what one volume's map takes in the store, in bytes of blocks
// (a block's length, whatever part of it its object stores), map
// segments aside.
//
// A map references content blocks, which any volume may share through
// deduplication, and private objects, each owned by the volume that
// wrote it. A private object owned by X can only be referenced by X's
// map and the maps made from it: snapshots taken of X, clones made from
// those, their snapshots, and so on, removed ones included. So what only
// this volume references is found from its lineage alone, without
// reading every map; content blocks cannot be attributed without reading
// every map, and are counted apart (store stats reads them all).
type Space struct {
	// AllocatedBytes is what the map points at: PrivateBytes plus
	// SharedBytes, ContentBytes among them.
	AllocatedBytes int64 `json:"allocated_bytes"`
	// PrivateBytes is what the volume wrote since its last snapshot:
	// nothing else references it. 0 for a snapshot or an image.
	PrivateBytes int64 `json:"private_bytes"`
	// SharedBytes is the rest: content blocks, and blocks that
	// snapshots, clones or the source of a clone may share.
	SharedBytes int64 `json:"shared_bytes"`
	// ContentBytes is what the map reads from content blocks (made by
	// hash and image import), which any volume may share.
	ContentBytes int64 `json:"content_bytes"`
	// ExclusiveBytes is what the private objects that the map references
	// and no other map does hold: removing the volume and then
	// collecting garbage frees them (and the content blocks only it
	// references, which are not counted), and its write logs (LogBytes).
	ExclusiveBytes int64 `json:"exclusive_bytes"`
	// LogBytes is what the write logs the head names take (a writer's
	// logged writes not yet checkpointed into blocks, and the records
	// before them its log still holds, and on a file store the zeros
	// written up to 1 MiB ahead of its tail); not in AllocatedBytes,
	// which counts blocks.
	LogBytes int64 `json:"log_bytes"`
}

// lineage is what space accounting needs of the catalog: which volumes
// were made from which, and their maps.
type lineage interface {
	// children returns the IDs of the volumes made from id (snapshots
	// taken of it, clones made from it), in any order, whether or not id
	// still has a record. It must also return a removed volume made from
	// id for as long as a volume made from that one remains, recursively:
	// those maps may reference id's blocks, and children is the only way
	// to them. An extra ID only costs a read. A lineage that cannot
	// tell returns errLineageUnknown: then only what the epoch rule
	// proves (see spaceOf) counts as exclusive.
	children(ctx context.Context, id blockmap.ID) ([]blockmap.ID, error)
	// loadMap returns the head and entries of id (the head's delta
	// applied), or an error wrapping volume.ErrNotFound if id has no head
	// (removed).
	loadMap(ctx context.Context, id blockmap.ID) (*blockmap.Head, []blockmap.Entry, error)
}

// errLineageUnknown: a lineage cannot list the volumes made from an ID.
var errLineageUnknown = errors.New("manage: lineage unknown")

// spaceOf measures the map entries of volume id, whose head is h. It
// also returns the exclusive private objects (by key) with the bytes
// counted for each.
//
// Exclusive: a private object of id's current epoch (id writable) is
// referenced by id's map alone, since a snapshot starts a new epoch and
// only snapshots copy a writable map. Any other private object, owned by
// O (id or an ancestor), is exclusive unless a map in O's lineage below
// O references it; those maps are read, from O down, until every such
// object has been found referenced elsewhere or none is left to read.
func spaceOf(ctx context.Context, lin lineage, id blockmap.ID, h *blockmap.Head, entries []blockmap.Entry) (Space, map[[32]byte]int64, error) {
	var sp Space
	current := func(o blockmap.Entry) bool {
		return !h.ReadOnly && o.IsPrivate() && o.Owner() == id && o.Epoch() == h.Epoch
	}
	exclusive := map[[32]byte]int64{}
	maybe := map[[32]byte]int64{} // exclusive unless another map references it
	owners := map[blockmap.ID]bool{}
	object := func(o blockmap.Entry, n int64) {
		switch {
		case o.Kind() != blockmap.Private:
		case current(o):
			exclusive[o.Key()] = n
		default:
			maybe[o.Key()] = n
			owners[o.Owner()] = true
		}
	}
	for b, e := range entries {
		if e.Kind() == blockmap.Zero {
			continue
		}
		n := h.BlockLen(int64(b))
		own := ownBytes(e, n, h.BlockShift)
		sp.AllocatedBytes += n
		switch {
		case e.Kind() == blockmap.Content:
			sp.ContentBytes += n
		case e.Kind() == blockmap.Partial && e.Base().Kind() == blockmap.Content:
			sp.ContentBytes += n - own
		}
		if current(e) {
			sp.PrivateBytes += own
		}
		object(e.Object(), own)
		if e.Kind() == blockmap.Partial {
			object(e.Base(), n) // the base object holds the whole block
		}
	}
	sp.SharedBytes = sp.AllocatedBytes - sp.PrivateBytes

	order := make([]blockmap.ID, 0, len(owners))
	for o := range owners {
		order = append(order, o)
	}
	slices.SortFunc(order, func(a, b blockmap.ID) int { return slices.Compare(a[:], b[:]) })
	seen := map[blockmap.ID]bool{}
	for _, o := range order {
		// Breadth first from o; a volume seen before had its children
		// queued then, in a walk that ran to its end or until nothing
		// was left to look for.
		queue := []blockmap.ID{o}
		for len(queue) > 0 && len(maybe) > 0 {
			v := queue[0]
			queue = queue[1:]
			if seen[v] {
				continue
			}
			seen[v] = true
			if v != id {
				_, es, err := lin.loadMap(ctx, v)
				switch {
				case errors.Is(err, volume.ErrNotFound):
				case err != nil:
					return Space{}, nil, fmt.Errorf("manage: reading the map of %s, of the same lineage: %w", v, err)
				default:
					for _, e := range es {
						if e.IsPrivate() {
							delete(maybe, e.Key())
						}
						if e.Kind() == blockmap.Partial {
							delete(maybe, e.Base().Key())
						}
					}
				}
			}
			kids, err := lin.children(ctx, v)
			if errors.Is(err, errLineageUnknown) {
				clear(maybe)
				break
			}
			if err != nil {
				return Space{}, nil, err
			}
			queue = append(queue, kids...)
		}
	}
	for k, n := range maybe {
		exclusive[k] = n
	}
	for _, n := range exclusive {
		sp.ExclusiveBytes += n
	}
	return sp, exclusive, nil
}

// logBytes returns the size of the write logs that h, the head of id,
// names: each log's object (one Stat) and its segments (one listing), and
// its write log index with the segments that references. A
// log is stored as segments on a store without in-place writes, else as
// one object; both are counted, since the form follows the store's
// capabilities, which a store of several pools changes with its
// configuration. A log not found takes nothing: not written yet, or
// deleted after a later head no longer named it.
func logBytes(ctx context.Context, s objstore.Store, id blockmap.ID, h *blockmap.Head) (int64, error) {
	var n int64
	for _, ref := range h.Logs {
		name := blockmap.LogName(id, ref.Epoch, ref.Seq)
		err := s.List(ctx, name+"/", func(in objstore.Info) error {
			n += in.Size
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("manage: size of the write log of %s: %w", id, err)
		}
		in, err := s.Stat(ctx, name)
		switch {
		case objstore.IsNotExist(err):
		case err != nil:
			return 0, fmt.Errorf("manage: size of the write log of %s: %w", id, err)
		default:
			n += in.Size
		}
	}
	if !h.Index.IsZero() {
		// The write log index and the segments it references of logs the
		// head no longer names (those of the logs it names are listed
		// above). An index gone means the head moved on: counted as
		// nothing, as a log not found.
		name := blockmap.IndexName(id, h.Index.Epoch, h.Index.Seq)
		b, _, err := s.Get(ctx, name)
		switch {
		case objstore.IsNotExist(err):
		case err != nil:
			return 0, fmt.Errorf("manage: size of the write log index of %s: %w", id, err)
		default:
			x, err := blockmap.DecodeIndex(b, id, h.Index)
			if err != nil {
				return 0, fmt.Errorf("manage: write log index of %s: %w", id, err)
			}
			n += int64(len(b))
			for _, sg := range x.Segs {
				if !slices.ContainsFunc(h.Logs, func(r blockmap.LogRef) bool { return r.Epoch == sg.Epoch && r.Seq == sg.Seq }) {
					n += int64(sg.Len)
				}
			}
		}
	}
	return n, nil
}

// ownBytes returns how many of the n bytes of a block e's own object
// holds: all of them, or a partial block's sub-blocks.
func ownBytes(e blockmap.Entry, n int64, shift uint8) int64 {
	if e.Kind() != blockmap.Partial {
		return n
	}
	sbs := int64(1) << blockmap.SubBlockShift(shift)
	own := int64(0)
	for i := int64(0); i < blockmap.SubBlocks && i*sbs < n; i++ {
		if e.Mask()>>i&1 == 1 {
			own += min(n, (i+1)*sbs) - i*sbs
		}
	}
	return own
}

// catLineage is the lineage the catalog's child hints give.
type catLineage struct{ m *Manager }

func (l catLineage) children(ctx context.Context, id blockmap.ID) ([]blockmap.ID, error) {
	return l.m.Catalog.ChildIDs(ctx, id)
}

func (l catLineage) loadMap(ctx context.Context, id blockmap.ID) (*blockmap.Head, []blockmap.Entry, error) {
	return l.m.loadMap(ctx, id)
}
