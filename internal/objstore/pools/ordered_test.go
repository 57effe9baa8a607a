package pools

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// walks counts the listings of a store that would walk a prefix whole.
type walks struct {
	*objstore.Mem
	n atomic.Int64
}

func (w *walks) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	w.n.Add(1)
	return w.Mem.List(ctx, prefix, fn)
}

// A page of the catalog on a store of several pools is the metadata
// backend's ordered listing: no part walks the catalog's directory, and no
// pool is asked at all.
func TestOrderedCatalogFromMeta(t *testing.T) {
	meta, a, b := &walks{Mem: objstore.NewMem()}, &walks{Mem: objstore.NewMem()}, &walks{Mem: objstore.NewMem()}
	s, err := New(meta, []Named{{Name: "a", Store: a}, {Name: "b", Store: b}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"cat/name/d", "cat/name/a", "cat/name/c", "cat/name/b", "cat/id/x"} {
		if _, err := s.Create(ctx, n, []byte("r")); err != nil {
			t.Fatal(err)
		}
	}
	ol, ok := objstore.AsOrderedLister(s)
	if !ok {
		t.Fatal("a store of pools is no OrderedLister")
	}
	var got []string
	stop := errors.New("enough")
	err = ol.ListNamesAfter(ctx, "cat/name/", "cat/name/a", func(n string) error {
		got = append(got, n)
		if len(got) == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || strings.Join(got, " ") != "cat/name/b cat/name/c" {
		t.Fatalf("ListNamesAfter = %v, %v; want cat/name/b cat/name/c, then the caller's stop", got, err)
	}
	if w := meta.n.Load() + a.n.Load() + b.n.Load(); w != 0 {
		t.Fatalf("a page of the catalog walked a prefix %d times", w)
	}
}

// Blocks are listed from every pool, in order, each once, after the name
// given.
func TestOrderedBlocksFromEveryPool(t *testing.T) {
	a, b := objstore.NewMem(), objstore.NewMem()
	s, err := New(objstore.NewMem(), []Named{{Name: "a", Store: a}, {Name: "b", Store: b}})
	if err != nil {
		t.Fatal(err)
	}
	n := func(i byte) string { return blockmap.ContentName([32]byte{i}) }
	a.Put(ctx, n(3), []byte("x"))
	a.Put(ctx, n(1), []byte("x"))
	b.Put(ctx, n(2), []byte("x"))
	b.Put(ctx, n(3), []byte("x")) // in both pools: named once
	b.Put(ctx, n(0), []byte("x"))
	ol, _ := objstore.AsOrderedLister(s)
	var got []string
	if err := ol.ListNamesAfter(ctx, blockmap.ContentPrefix, n(0), func(s string) error { got = append(got, s); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{n(1), n(2), n(3)}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("ListNamesAfter(blk/) = %v, want %v", got, want)
	}
}
