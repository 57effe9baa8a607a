package gc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestCollectsNotUpgraded: on a store whose catalog is still one format 1
// object, or half upgraded (the records frozen in the catalog object,
// some of them written as records), a collection keeps every volume of
// the old catalog: it never takes such a store for an empty one.
func TestCollectsNotUpgraded(t *testing.T) {
	for _, state := range []string{"format1", "half"} {
		t.Run(state, func(t *testing.T) {
			s := objstore.NewMem()
			m, clk := setup(s)
			rng := rand.New(rand.NewPCG(3, 4))
			if _, _, err := m.Import(ctx, bytes.NewReader(randBytes(rng, 4*bs)), -1, "img", image.Options{BlockShift: 16}); err != nil {
				t.Fatal(err)
			}
			m.Clone(ctx, "img", "vm", 0)
			manage.WriteT(t, m, "vm", 10, randBytes(rng, bs))
			m.Snapshot(ctx, "vm", "vm@1")
			manage.WriteT(t, m, "vm", 0, randBytes(rng, 2*bs))
			want := map[string][]byte{}
			var recs []catalog.Record
			m.Catalog.All(ctx, func(r catalog.Record) error {
				recs = append(recs, r)
				want[r.Name] = manage.ReadT(t, m, r.Name, 0, -1)
				return nil
			})
			// Back to what an old binary wrote, or to an upgrade
			// that stopped after writing the first record.
			s.List(ctx, "cat/", func(in objstore.Info) error { return s.Delete(ctx, in.Name) })
			doc := map[string]any{"format": 1, "records": recs}
			if state == "half" {
				doc = map[string]any{"format": 2, "records": []catalog.Record{}, "upgrading": recs}
				c := catalog.New(s)
				if err := c.Create(ctx, recs[0]); err != nil {
					t.Fatal(err)
				}
			}
			b, _ := json.Marshal(doc)
			s.Put(ctx, catalog.ObjectName, b)

			clk.advance(2 * time.Hour)
			rep, err := gc.Run(ctx, s, gc.Options{Now: clk.now})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Deleted.Heads != 0 || rep.Deleted.Segments != 0 || rep.Roots != len(recs) {
				t.Fatalf("collection on a %s store: %d roots (want %d), deleted %+v", state, rep.Roots, len(recs), rep.Deleted)
			}
			m.Catalog = catalog.New(s) // a new process: upgrades
			for n, w := range want {
				if !bytes.Equal(manage.ReadT(t, m, n, 0, -1), w) {
					t.Fatalf("%s changed across the collection", n)
				}
			}
			checkClean(t, m)
		})
	}
}

// TestCollectsStaleHints: hints that no record points back at (left by a
// create that crashed before its record, or a remove after its record)
// go once older than the grace period; the others stay.
func TestCollectsStaleHints(t *testing.T) {
	s := objstore.NewMem()
	m, clk := setup(s)
	m.CreateVolume(ctx, "base", 4*bs, 16)
	m.Snapshot(ctx, "base", "base@1")
	m.Clone(ctx, "base@1", "keep", 0)
	m.Clone(ctx, "base@1", "gone", 0)
	gone, _ := m.Lookup(ctx, "gone")
	// A remove that crashed after deleting the record.
	s.Delete(ctx, catalog.Objects(*gone)[0])
	// A create that crashed before writing its record.
	orphan := catalog.Record{Name: "orphan", ID: blockmap.NewID(), Kind: catalog.KindVolume, Parent: gone.Parent}
	for _, o := range catalog.Objects(orphan)[1:] {
		s.Put(ctx, o, nil)
	}
	clk.advance(2 * time.Hour)
	// A young stale hint stays.
	young := catalog.Record{Name: "young", ID: blockmap.NewID(), Kind: catalog.KindVolume}
	s.Put(ctx, catalog.Objects(young)[1], nil)
	rep, err := m.GC(ctx, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted.Hints != 4 {
		t.Fatalf("deleted %d hints, want 4 (2 of each crash)", rep.Deleted.Hints)
	}
	s.Delete(ctx, catalog.Objects(young)[1])
	checkClean(t, m)
	kids, err := m.Catalog.Children(ctx, gone.Parent)
	if err != nil || len(kids) != 1 || kids[0].Name != "keep" {
		t.Fatalf("children after the collection: %v %v", kids, err)
	}
	for _, n := range []string{"base", "base@1", "keep"} {
		r, _ := m.Lookup(ctx, n)
		if b, err := m.Catalog.ByID(ctx, r.ID); err != nil || b.Name != n {
			t.Fatalf("ByID(%s) after the collection: %v %v", n, b, err)
		}
	}
}

// lockWatch closes seen at the first read of the collection lock: an
// operation waiting to take a hold.
type lockWatch struct {
	objstore.Store
	once sync.Once
	seen chan struct{}
}

func (s *lockWatch) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if name == "gc/lock" {
		s.once.Do(func() { close(s.seen) })
	}
	return s.Store.Get(ctx, name)
}

// TestRenameDuringCollection: a collection that has listed the records
// and stalls before reading one of them must not lose that volume to a
// rename that moves it meanwhile (the new record is not in its listing,
// the old one is gone when it reads it): the rename waits for the
// collection before it creates the new record.
func TestRenameDuringCollection(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	rng := rand.New(rand.NewPCG(5, 6))
	m.CreateVolume(ctx, "a", 4*bs, 16)
	manage.WriteT(t, m, "a", 0, randBytes(rng, 2*bs))
	want := manage.ReadT(t, m, "a", 0, -1)
	clk.advance(2 * time.Hour)

	gst := newStall(mem, func(op, name string) bool { return op == "get" && strings.HasPrefix(name, "cat/name/a") })
	res := runAsync(gst, clk)
	<-gst.hit
	watch := &lockWatch{Store: mem, seen: make(chan struct{})}
	m2 := manage.New(watch)
	m2.Now = clk.now
	done := make(chan error, 1)
	go func() { done <- m2.Rename(ctx, "a", "b") }()
	var renamed bool
	select {
	case <-watch.seen: // the rename waits for the collection
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		renamed = true
	}
	close(gst.release)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !renamed {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if r.rep.Deleted.Heads != 0 {
		t.Fatalf("the collection deleted %d heads: %+v", r.rep.Deleted.Heads, r.rep.Deleted)
	}
	if got := manage.ReadT(t, m, "b", 0, -1); !bytes.Equal(got, want) {
		t.Fatal("the renamed volume changed")
	}
}
