package bucket

import (
	"container/heap"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// ListOptions select a page of a listing.
type ListOptions struct {
	Prefix    string
	Delimiter string
	After     string // keys (and common prefixes) up to this one are skipped
	Max       int    // at most this many keys and prefixes (0: 1000)
}

// ListPage is one page of a listing, in key order.
type ListPage struct {
	Objects   []Object
	Prefixes  []string // common prefixes (with Delimiter)
	Truncated bool
	Next      string // with Truncated: the last key or prefix of the page (After of the next page)
}

// List lists the objects of bucket. It reads every record name of the
// bucket (the store lists in no order), keeping only the page's entries
// (at most Max+1, in a heap): O(objects) time but O(page) memory, however
// large the bucket.
func (b *Store) List(ctx context.Context, bucket string, o ListOptions) (*ListPage, error) {
	if err := b.HeadBucket(ctx, bucket); err != nil {
		return nil, err
	}
	max := o.Max
	if max <= 0 || max > 1000 {
		max = 1000
	}
	// The smallest max+1 entries (keys, or common prefixes) after
	// o.After: one more than the page tells whether it is truncated.
	h := &entryHeap{}
	seen := map[string]bool{}
	err := b.S.List(ctx, blockmap.ObjectPrefix(bucket), func(in objstore.Info) error {
		n := blockmap.ParseName(in.Name)
		if n.Kind != blockmap.ObjectRecord || !strings.HasPrefix(n.Key, o.Prefix) {
			return nil
		}
		e := listEntry{name: n.Key}
		if o.Delimiter != "" {
			if j := strings.Index(n.Key[len(o.Prefix):], o.Delimiter); j >= 0 {
				e = listEntry{name: n.Key[:len(o.Prefix)+j+len(o.Delimiter)], prefix: true}
			}
		}
		if e.name <= o.After || seen[e.name] {
			return nil
		}
		if h.Len() == max+1 {
			if e.name > (*h)[0].name {
				return nil
			}
			delete(seen, heap.Pop(h).(listEntry).name)
		}
		seen[e.name] = true
		heap.Push(h, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	entries := []listEntry(*h)
	slices.SortFunc(entries, func(x, y listEntry) int { return strings.Compare(x.name, y.name) })
	page := &ListPage{}
	if len(entries) > max {
		entries = entries[:max]
		page.Truncated, page.Next = true, entries[max-1].name
	}
	for _, e := range entries {
		if e.prefix {
			page.Prefixes = append(page.Prefixes, e.name)
			continue
		}
		name, _ := blockmap.ObjectName(bucket, e.name)
		raw, _, err := b.S.Get(ctx, name)
		if objstore.IsNotExist(err) {
			continue // deleted since listed
		}
		if err != nil {
			return nil, err
		}
		var obj Object
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, fmt.Errorf("bucket: record of %s: %w", e.name, err)
		}
		page.Objects = append(page.Objects, obj)
	}
	return page, nil
}

// listEntry is a key or a common prefix of a listing.
type listEntry struct {
	name   string
	prefix bool
}

// entryHeap is a max-heap of entries by name.
type entryHeap []listEntry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].name > h[j].name }
func (h entryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)        { *h = append(*h, x.(listEntry)) }
func (h *entryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Roots calls fn with every map that an object or an uploaded part of an
// upload in progress names: package gc's roots. The parts of an upload
// whose record is gone are not roots: an abort or a complete (which
// claims the upload by deleting its record, under a hold, so not during
// a collection) deletes them, or stopped before it did.
func Roots(ctx context.Context, s objstore.Store, fn func(blockmap.ID)) error {
	return Scan(ctx, s, fn, nil)
}

// Scan is Roots, and calls orphan (if not nil) with the name of every
// part record whose upload record is gone: a complete or abort whose
// delete of it failed, or an UploadPart that raced an abort and has not
// removed it yet. No operation writes a part record of an upload whose
// record is gone and then leaves it (UploadPart and CopyPart check the
// upload after writing and remove their record), nor makes the upload
// record again but a complete that failed, under a hold, so not during a
// collection: package gc deletes orphans once older than its grace
// period, as it deletes other garbage.
func Scan(ctx context.Context, s objstore.Store, fn func(blockmap.ID), orphan func(name string)) error {
	uploads := map[string]bool{} // upload record name: exists
	for _, prefix := range []string{blockmap.ObjectPrefix(""), blockmap.PartPrefix("", "")} {
		var names []string
		err := s.List(ctx, prefix, func(in objstore.Info) error {
			if k := blockmap.ParseName(in.Name).Kind; k == blockmap.ObjectRecord || k == blockmap.PartRecord {
				names = append(names, in.Name)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, n := range names {
			if pn := blockmap.ParseName(n); pn.Kind == blockmap.PartRecord {
				un := blockmap.UploadName(pn.Bucket, pn.Upload)
				live, ok := uploads[un]
				if !ok {
					_, err := s.Stat(ctx, un)
					if err != nil && !objstore.IsNotExist(err) {
						return err
					}
					live = err == nil
					uploads[un] = live
				}
				if !live {
					if orphan != nil {
						orphan(n)
					}
					continue
				}
			}
			raw, _, err := s.Get(ctx, n)
			if objstore.IsNotExist(err) {
				continue // deleted since listed: under a hold if its maps moved elsewhere
			}
			if err != nil {
				return err
			}
			var rec struct {
				Pieces []Piece `json:"pieces"`
			}
			if err := json.Unmarshal(raw, &rec); err != nil {
				return fmt.Errorf("bucket: record %s: %w", n, err)
			}
			for _, p := range rec.Pieces {
				fn(p.Map)
			}
		}
	}
	return nil
}
