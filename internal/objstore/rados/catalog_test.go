//go:build ceph

package rados

import (
	"fmt"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
)

// TestCatalogOnIndex: the catalog on RADOS finds a volume's children and
// pages through its names from the index, without walking the pool, also
// after renames and removes.
func TestCatalogOnIndex(t *testing.T) {
	s := OpenTestStore(t)
	c := catalog.New(s)
	img := catalog.Record{Name: "img", ID: blockmap.NewID(), Kind: catalog.KindImage}
	if err := c.Create(ctx, img); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		r := catalog.Record{Name: fmt.Sprintf("vm%02d", i), ID: blockmap.NewID(), Kind: catalog.KindVolume}
		if i%2 == 0 {
			r.Parent = img.ID
		}
		if err := c.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Rename(ctx, "vm00", "zz"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Remove(ctx, "vm02"); err != nil {
		t.Fatal(err)
	}
	if err := s.ensureIndex(ctx); err != nil {
		t.Fatal(err)
	}
	walks := s.walks.Load()
	kids, err := c.Children(ctx, img.ID)
	if err != nil || len(kids) != 19 || kids[0].Name != "vm04" || kids[18].Name != "zz" {
		t.Errorf("children of the image: %d, %v", len(kids), err)
	}
	var names []string
	for after := ""; ; {
		p, err := c.List(ctx, catalog.ListOptions{After: after, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Records {
			names = append(names, r.Name)
		}
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	if len(names) != 40 || names[0] != "img" || names[1] != "vm01" || names[39] != "zz" {
		t.Errorf("listed %d names: %v", len(names), names)
	}
	if n := s.walks.Load() - walks; n != 0 {
		t.Errorf("the catalog walked the pool %d times, want 0", n)
	}
}
