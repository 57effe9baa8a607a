package catalog

import (
	"context"
	"fmt"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// countedMem is a Mem that counts the names its listings pass on.
type countedMem struct {
	*objstore.Mem
	names int
}

func (m *countedMem) ListNamesAfter(ctx context.Context, prefix, after string, fn func(string) error) error {
	return m.Mem.ListNamesAfter(ctx, prefix, after, func(n string) error {
		m.names++
		return fn(n)
	})
}

func (m *countedMem) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	return m.Mem.List(ctx, prefix, func(in objstore.Info) error {
		m.names++
		return fn(in)
	})
}

// unordered hides the Mem's ordered listing.
type unordered struct{ objstore.Store }

// TestListPageCostsThePage: from a store that lists in order from a name
// on (RADOS's index), a page of the listing takes the page's names from
// it, not every name; and its pages equal those of a store that lists in
// no order, names with @ and _ included.
func TestListPageCostsThePage(t *testing.T) {
	m := &countedMem{Mem: objstore.NewMem()}
	c := New(m)
	for i := range 300 {
		name := fmt.Sprintf("v%03d", i)
		switch i % 3 {
		case 1:
			name = fmt.Sprintf("v%03d@s", i-1)
		case 2:
			name = fmt.Sprintf("v%03d_x", i-2)
		}
		if err := c.Create(ctx, vol(name)); err != nil {
			t.Fatal(err)
		}
	}
	pages := func(c *Catalog) (all []string) {
		for after := ""; ; {
			p, err := c.List(ctx, ListOptions{After: after, Limit: 25})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Records {
				all = append(all, r.Name)
			}
			if p.Next == "" {
				return all
			}
			after = p.Next
		}
	}
	m.names = 0
	p, err := c.List(ctx, ListOptions{Limit: 10})
	if err != nil || len(p.Records) != 10 || p.Next != p.Records[9].Name {
		t.Fatalf("first page: %v, next %q, %v", p.Records, p.Next, err)
	}
	if m.names > 11 {
		t.Errorf("a page of 10 took %d names from the store, want at most 11", m.names)
	}
	ordered, plain := pages(c), pages(New(unordered{m.Mem}))
	if len(ordered) != 300 || fmt.Sprint(ordered) != fmt.Sprint(plain) {
		t.Errorf("pages from the ordered listing:\n%v\nfrom the plain one:\n%v", ordered, plain)
	}
	for i := 1; i < len(ordered); i++ {
		if recordName(ordered[i-1]) >= recordName(ordered[i]) {
			t.Errorf("%q listed before %q", ordered[i-1], ordered[i])
		}
	}
}

// countedFile is a file store that counts the names its ordered listing
// passes on.
type countedFile struct {
	*objstore.File
	names int
}

func (f *countedFile) ListNamesAfter(ctx context.Context, prefix, after string, fn func(string) error) error {
	return f.File.ListNamesAfter(ctx, prefix, after, func(n string) error {
		f.names++
		return fn(n)
	})
}

// TestFileListPageCostsThePage: on the file store, a page of the listing
// takes the page's names from the store's index, not every name (before:
// the file store listed in no order, and every name was listed and
// sorted), and its pages equal those of the unordered listing.
func TestFileListPageCostsThePage(t *testing.T) {
	f, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	m := &countedFile{File: f}
	c := New(m)
	for i := range 120 {
		if err := c.Create(ctx, vol(fmt.Sprintf("v%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	m.names = 0
	p, err := c.List(ctx, ListOptions{Limit: 10})
	if err != nil || len(p.Records) != 10 || p.Next != p.Records[9].Name {
		t.Fatalf("first page: %v, next %q, %v", p.Records, p.Next, err)
	}
	if m.names > 11 {
		t.Errorf("a page of 10 took %d names from the store, want at most 11", m.names)
	}
	pages := func(c *Catalog) (all []string) {
		for after := ""; ; {
			p, err := c.List(ctx, ListOptions{After: after, Limit: 25})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Records {
				all = append(all, r.Name)
			}
			if p.Next == "" {
				return all
			}
			after = p.Next
		}
	}
	ordered, plain := pages(c), pages(New(unordered{f}))
	if len(ordered) != 120 || fmt.Sprint(ordered) != fmt.Sprint(plain) {
		t.Errorf("pages from the ordered listing:\n%v\nfrom the plain one:\n%v", ordered, plain)
	}
}
