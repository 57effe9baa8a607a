package gc_test

import (
	"bytes"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/move"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
)

// TestPoolsMigrateOrphanSnapshot: a snapshot whose origin volume was
// removed keeps its blocks, named by that origin, in the origin's pool.
// A migration out of that pool, then a collection, must leave the pool
// empty (it is then retired) with the snapshot still readable.
func TestPoolsMigrateOrphanSnapshot(t *testing.T) {
	meta, a, b := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	s, err := pools.New(meta, []pools.Named{{Name: "a", Store: a}, {Name: "b", Store: b}})
	if err != nil {
		t.Fatal(err)
	}
	m := manage.New(s)
	r, _ := pools.Of(s)
	const bs = 1 << blockmap.MinBlockShift
	rec, err := m.CreateVolume(ctx, "v", 4*bs, blockmap.MinBlockShift)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Place(ctx, rec.ID, "b"); err != nil {
		t.Fatal(err)
	}
	manage.WriteT(t, m, "v", 0, bytes.Repeat([]byte("s"), 2*bs))
	if _, err := m.Snapshot(ctx, "v", "v@1"); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	if err := r.Unplace(ctx, rec.ID); err != nil { // as volume remove does
		t.Fatal(err)
	}
	want := map[string][]byte{"v@1": manage.ReadT(t, m, "v@1", 0, -1)}
	if countIn(t, b) == 0 {
		t.Fatal("nothing in b")
	}
	if _, err := move.Migrate(ctx, m, "b", "a", move.Options{}, nil); err != nil {
		t.Fatal(err)
	}
	collect(t, m)
	if n := countIn(t, b); n != 0 {
		t.Errorf("%d copies left in b after migrating it out: the snapshot loses them when b is retired", n)
	}
	// b retired: the snapshot reads from a alone.
	s2, err := pools.New(meta, []pools.Named{{Name: "a", Store: a}, {Name: "b", Store: objstore.NewMem()}})
	if err != nil {
		t.Fatal(err)
	}
	m2 := manage.New(s2)
	for n, w := range want {
		v, _, err := m2.Open(ctx, n, false)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, len(w))
		if err := v.ReadAt(ctx, p, 0); err != nil || !bytes.Equal(p, w) {
			t.Errorf("%s after b is retired: %v", n, err)
		}
	}
}

// TestPoolsMigrateBucketObjects: objects stored in a bucket while pool a
// was the default keep their blocks there; after the default becomes b
// (as docs/pools.md says to do first), a migration from a to b, then a
// collection, must leave a empty with the objects still readable.
func TestPoolsMigrateBucketObjects(t *testing.T) {
	meta, a, b := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	s, err := pools.New(meta, []pools.Named{{Name: "a", Store: a}, {Name: "b", Store: b}})
	if err != nil {
		t.Fatal(err)
	}
	m := manage.New(s)
	if err := m.Buckets().CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("object data "), 50000)
	if _, err := m.Buckets().PutObject(ctx, "bkt", "key", bytes.NewReader(data), int64(len(data)), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if countIn(t, a) == 0 {
		t.Fatal("nothing in a")
	}
	// The default becomes b.
	s2, err := pools.New(meta, []pools.Named{{Name: "b", Store: b}, {Name: "a", Store: a}})
	if err != nil {
		t.Fatal(err)
	}
	m = manage.New(s2)
	if _, err := move.Migrate(ctx, m, "a", "b", move.Options{}, nil); err != nil {
		t.Fatal(err)
	}
	collect(t, m)
	if n := countIn(t, a); n != 0 {
		t.Errorf("%d copies left in a after migrating it out: the objects lose them when a is retired", n)
	}
	s3, err := pools.New(meta, []pools.Named{{Name: "b", Store: b}, {Name: "a", Store: objstore.NewMem()}})
	if err != nil {
		t.Fatal(err)
	}
	bs := manage.New(s3).Buckets()
	obj, err := bs.GetObject(ctx, "bkt", "key")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := bs.Read(ctx, obj, 0, int64(len(data)), &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Errorf("the object after a is retired: %v", err)
	}
}
