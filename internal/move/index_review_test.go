package move

import (
	"testing"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/storetest"
)

// TestMigrateRecordWithoutIndexKey: a volume whose record the catalog's
// index lacks (on RADOS: written by a binary of format 2 still running
// after the upgrade to format 3, or the index's uncovered crash state)
// is still moved out of the pool being emptied: the migration repairs
// the index before it trusts the catalog's listing, as gc does. Before,
// it was left in pool a, which the operator then retires.
func TestMigrateRecordWithoutIndexKey(t *testing.T) {
	_, a, b := stores(t, "mem")
	meta := storetest.NewKeyed(objstore.NewMem())
	f := newFixture(t, meta, a, b)
	meta.DropKey(catalog.NamePrefix + "v")
	if _, err := Migrate(ctx, f.m, "a", "b", Options{}, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"img", "v", "c"} {
		f.inPool(t, n, "b")
	}
	f.check(t)
}
