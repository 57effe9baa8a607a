package volume

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestChosenID: a caller-chosen ID (CreateOptions.ID, CloneAs,
// SnapshotAs) that already names a volume is refused and its head left
// as it was; the zero ID means a new one, as in CreateOptions, never a
// head named by the zero ID.
func TestChosenID(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	id, err := Create(ctx, s, CreateOptions{Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	if err := v.WriteAt(ctx, []byte("data"), 0, true); err != nil {
		t.Fatal(err)
	}
	snap, err := v.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	heads := map[blockmap.ID][]byte{}
	for _, x := range []blockmap.ID{id, snap} {
		b, _, err := s.Get(ctx, blockmap.HeadName(x))
		if err != nil {
			t.Fatal(err)
		}
		heads[x] = b
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, objstore.ErrExists) {
			t.Errorf("%s with an ID that exists: %v, want ErrExists", what, err)
		}
		for x, want := range heads {
			if b, _, err := s.Get(ctx, blockmap.HeadName(x)); err != nil || !bytes.Equal(b, want) {
				t.Fatalf("after %s, the head of %s changed (%v)", what, x, err)
			}
		}
	}
	_, err = Create(ctx, s, CreateOptions{Size: 1 << 20, ID: snap})
	check("Create", err)
	_, err = CloneAs(ctx, s, snap, 0, id)
	check("CloneAs", err)
	_, err = v.SnapshotAs(ctx, snap)
	check("SnapshotAs", err)

	zero := blockmap.HeadName(blockmap.ID{})
	c, err := CloneAs(ctx, s, snap, 0, blockmap.ID{})
	if err != nil || c.IsZero() {
		t.Errorf("CloneAs with the zero ID = %s, %v; want a new ID", c, err)
	}
	s2, err := v.SnapshotAs(ctx, blockmap.ID{})
	if err != nil || s2.IsZero() {
		t.Errorf("SnapshotAs with the zero ID = %s, %v; want a new ID", s2, err)
	}
	if _, _, err := s.Get(ctx, zero); !objstore.IsNotExist(err) {
		t.Errorf("a head named by the zero ID: %v", err)
	}
}
