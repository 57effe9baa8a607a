//go:build ceph

package gc_test

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"

	"github.com/archipelago-go/archip/internal/objstore/rados"
)

func TestRados(t *testing.T) { collectOn(t, rados.OpenTestStore(t)) }

// TestRadosRecordWithoutIndexKey: a record whose key the catalog's index
// on RADOS lacks (the index's one uncovered crash state, or a record
// written by a binary older than the index) is still a volume: gc, which
// trusts the catalog's listing to name every volume, must not sweep its
// blocks. Before, the volume's head and blocks were collected.
func TestRadosRecordWithoutIndexKey(t *testing.T) {
	s := rados.OpenTestStore(t)
	m := manage.New(s)
	rng := rand.New(rand.NewPCG(13, 14))
	if _, _, err := m.Import(ctx, bytes.NewReader(randBytes(rng, 4*bs)), -1, "vm", image.Options{BlockShift: 16}); err != nil {
		t.Fatal(err)
	}
	want := manage.ReadT(t, m, "vm", 0, -1)
	if err := s.DropIndexKey(ctx, catalog.NamePrefix+"vm"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // object times may have a 1 s granularity
	if _, err := m.GC(ctx, gc.WithShortGrace(gc.Options{Grace: time.Nanosecond})); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(manage.ReadT(t, m, "vm", 0, -1), want) {
		t.Fatal("a volume whose record has no index key changed after gc")
	}
}
