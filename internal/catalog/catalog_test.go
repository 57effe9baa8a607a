package catalog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

var ctx = context.Background()

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "vm-1", "disk_0.img", "vol@daily", "A9"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-x", ".x", "a b", "a/b", "ä", "x\n", string(make([]byte, 129))} {
		if err := ValidName(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("ValidName(%q) = %v", bad, err)
		}
	}
}

func TestUpdateRenameRemove(t *testing.T) {
	c := New(objstore.NewMem())
	id := blockmap.NewID()
	add := func(name string, id blockmap.ID) error {
		return c.Update(ctx, func(d *Doc) error { return d.Add(Record{Name: name, ID: id, Kind: KindVolume}) })
	}
	if err := add("a", id); err != nil {
		t.Fatal(err)
	}
	if err := add("a", blockmap.NewID()); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	if err := add("bad name", blockmap.NewID()); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
	add("b", blockmap.NewID())
	if err := c.Update(ctx, func(d *Doc) error { return d.Rename("a", "b") }); !errors.Is(err, ErrExists) {
		t.Fatalf("rename onto an existing name: %v", err)
	}
	if err := c.Update(ctx, func(d *Doc) error { return d.Rename("a", "c") }); err != nil {
		t.Fatal(err)
	}
	d, _, _ := c.Load(ctx)
	if r, err := d.ByName("c"); err != nil || r.ID != id {
		t.Fatalf("after rename: %v %v", r, err)
	}
	if err := c.Update(ctx, func(d *Doc) error { _, err := d.Remove("a"); return err }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove of the old name: %v", err)
	}
}

func TestConcurrentUpdates(t *testing.T) {
	c := New(objstore.NewMem())
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.Update(ctx, func(d *Doc) error {
				return d.Add(Record{Name: fmt.Sprintf("v%d", i), ID: blockmap.NewID(), Kind: KindVolume})
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	d, _, _ := c.Load(ctx)
	if len(d.Records) != 20 {
		t.Fatalf("%d records after 20 concurrent adds", len(d.Records))
	}
}

func TestCorruptCatalog(t *testing.T) {
	s := objstore.NewMem()
	for _, b := range []string{"{", `{"format":9}`, `{"format":1,"records":[{"name":"x y","id":"00000000000000000000000000000001","kind":"volume"}]}`,
		`{"format":1,"records":[{"name":"x","id":"00000000000000000000000000000001","kind":"disk"}]}`} {
		s.Put(ctx, ObjectName, []byte(b))
		if _, _, err := New(s).Load(ctx); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Load(%s) = %v, want ErrCorrupt", b, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"format":1,"records":[{"name":"x","id":"00000000000000000000000000000001","kind":"volume"}]}`))
	f.Add([]byte(`{"format":1,"records":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decode(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unmarked error %v", err)
			}
			return
		}
		for _, r := range d.Records {
			if ValidName(r.Name) != nil {
				t.Fatalf("accepted bad name %q", r.Name)
			}
		}
	})
}
