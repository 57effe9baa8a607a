package gc_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
	"github.com/archipelago-go/archip/internal/objstore/storetest"
)

// TestCollectsFormat1UpgradedDuringRepair: a store of format 1 that a
// binary older than the index upgrades (every record written without its
// key, then the catalog object emptied) while a collection runs, between
// the collection's repair of the index and its mark. The collection must
// count those records: from the catalog object if it read it before the
// upgrade emptied it, else from an index repaired after they were
// written. Before, it read the catalog object after the repair, found it
// empty, listed no record from the index, and swept every volume.
func TestCollectsFormat1UpgradedDuringRepair(t *testing.T) {
	for _, dry := range []bool{false, true} {
		mem := objstore.NewMem()
		m, clk := setup(mem)
		rng := rand.New(rand.NewPCG(5, 6))
		if _, _, err := m.Import(ctx, bytes.NewReader(randBytes(rng, 4*bs)), -1, "img", image.Options{BlockShift: 16}); err != nil {
			t.Fatal(err)
		}
		m.Clone(ctx, "img", "vm", 0)
		manage.WriteT(t, m, "vm", 10, randBytes(rng, bs))
		want := map[string][]byte{}
		var recs []catalog.Record
		m.Catalog.All(ctx, func(r catalog.Record) error {
			recs = append(recs, r)
			want[r.Name] = manage.ReadT(t, m, r.Name, 0, -1)
			return nil
		})
		mem.List(ctx, "cat/", func(in objstore.Info) error { return mem.Delete(ctx, in.Name) })
		b, _ := json.Marshal(map[string]any{"format": 1, "records": recs})
		mem.Put(ctx, catalog.ObjectName, b)

		s := storetest.NewKeyed(mem)
		s.AfterRepair = func() {
			s.AfterRepair = nil
			// The old binary's upgrade, keyless: it writes to the store
			// beneath the index.
			if _, err := catalog.New(mem).Upgrade(ctx); err != nil {
				t.Error(err)
			}
		}
		clk.advance(2 * time.Hour)
		rep, err := gc.Run(ctx, s, gc.Options{Now: clk.now, DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Deleted.Heads != 0 || rep.Deleted.Segments != 0 || rep.Roots != len(recs) {
			t.Fatalf("dry run %v: %d roots (want %d), deleted %+v", dry, rep.Roots, len(recs), rep.Deleted)
		}
		m.Catalog = catalog.New(mem)
		for n, w := range want {
			if !bytes.Equal(manage.ReadT(t, m, n, 0, -1), w) {
				t.Fatalf("%s changed across the collection", n)
			}
		}
	}
}

// TestPoolsRecordWithoutIndexKey: on a store of several pools whose
// metadata backend keeps the catalog's index (RADOS), a record without its
// key is still a volume: gc repairs the index through the router's parts
// before its mark. Before, objstore.RepairIndexes did not reach the
// metadata backend through its part, and the volume was swept.
func TestPoolsRecordWithoutIndexKey(t *testing.T) {
	clk := &clock{t: time.Unix(1_000_000, 0)}
	mems := []*objstore.Mem{objstore.NewMem(), objstore.NewMem(), objstore.NewMem()}
	for _, s := range mems {
		s.Now = clk.now
	}
	meta := storetest.NewKeyed(mems[0])
	s, err := pools.New(meta, []pools.Named{{Name: "a", Store: mems[1]}, {Name: "b", Store: mems[2]}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := manage.New(s)
	m.Now = clk.now
	rng := rand.New(rand.NewPCG(7, 8))
	if _, _, err := m.Import(ctx, bytes.NewReader(randBytes(rng, 4*bs)), -1, "vm", image.Options{BlockShift: 16}); err != nil {
		t.Fatal(err)
	}
	want := manage.ReadT(t, m, "vm", 0, -1)
	meta.DropKey(catalog.NamePrefix + "vm")
	clk.advance(2 * time.Hour)
	rep, err := gc.Run(ctx, s, gc.Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted.Heads != 0 {
		t.Fatalf("deleted %+v", rep.Deleted)
	}
	if !bytes.Equal(manage.ReadT(t, m, "vm", 0, -1), want) {
		t.Fatal("vm changed across the collection")
	}
}
