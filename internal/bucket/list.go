package bucket

import (
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

// List lists the objects of bucket.
func (b *Store) List(ctx context.Context, bucket string, o ListOptions) (*ListPage, error) {
	if err := b.HeadBucket(ctx, bucket); err != nil {
		return nil, err
	}
	max := o.Max
	if max <= 0 || max > 1000 {
		max = 1000
	}
	var keys []string
	err := b.S.List(ctx, blockmap.ObjectPrefix(bucket), func(in objstore.Info) error {
		if n := blockmap.ParseName(in.Name); n.Kind == blockmap.ObjectRecord && strings.HasPrefix(n.Key, o.Prefix) {
			keys = append(keys, n.Key)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(keys)
	page := &ListPage{}
	var last string
	for i := 0; i < len(keys); i++ {
		k := keys[i]
		if k <= o.After {
			continue
		}
		entry, isPrefix := k, false
		if o.Delimiter != "" {
			if j := strings.Index(k[len(o.Prefix):], o.Delimiter); j >= 0 {
				entry, isPrefix = k[:len(o.Prefix)+j+len(o.Delimiter)], true
				if entry <= o.After {
					continue
				}
			}
		}
		if len(page.Objects)+len(page.Prefixes) == max {
			page.Truncated, page.Next = true, last
			break
		}
		last = entry
		if isPrefix {
			page.Prefixes = append(page.Prefixes, entry)
			for i+1 < len(keys) && strings.HasPrefix(keys[i+1], entry) {
				i++
			}
			continue
		}
		name, _ := blockmap.ObjectName(bucket, k)
		raw, _, err := b.S.Get(ctx, name)
		if objstore.IsNotExist(err) {
			continue // deleted since listed
		}
		if err != nil {
			return nil, err
		}
		var obj Object
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, fmt.Errorf("bucket: record of %s: %w", k, err)
		}
		page.Objects = append(page.Objects, obj)
	}
	return page, nil
}

// Roots calls fn with every map that an object or an uploaded part
// names: package gc's roots.
func Roots(ctx context.Context, s objstore.Store, fn func(blockmap.ID)) error {
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
