package manage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

var ctx = context.Background()

const bs = 1 << 16

func TestLifecycle(t *testing.T) {
	m := New(objstore.NewMem())
	if _, err := m.CreateVolume(ctx, "vm1", 8*bs, 16); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateVolume(ctx, "vm1", bs, 16); !errors.Is(err, catalog.ErrExists) {
		t.Fatalf("second create of vm1: %v", err)
	}
	if _, err := m.CreateVolume(ctx, "bad/name", bs, 16); !errors.Is(err, catalog.ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
	WriteT(t, m, "vm1", 0, bytes.Repeat([]byte{1}, 2*bs))
	if _, err := m.Snapshot(ctx, "vm1", "vm1@s1"); err != nil {
		t.Fatal(err)
	}
	WriteT(t, m, "vm1", bs, bytes.Repeat([]byte{2}, bs))
	if _, err := m.Clone(ctx, "vm1", "c1", 0); err == nil {
		t.Fatal("cloned a writable volume")
	}
	if _, err := m.Clone(ctx, "vm1@s1", "c1", 16*bs); err != nil {
		t.Fatal(err)
	}
	in, err := m.Info(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	// Block 0 is shared with the snapshot; block 1 was rewritten since.
	if in.AllocatedBytes != 2*bs || in.PrivateBytes != bs || in.SharedBytes != bs || in.ExclusiveBytes != bs ||
		len(in.Children) != 1 || in.Children[0] != "vm1@s1" {
		t.Fatalf("info vm1: %+v", in)
	}
	if in, _ := m.Info(ctx, "c1"); in.Parent != "vm1@s1" || in.Size != 16*bs {
		t.Fatalf("info c1: %+v", in)
	}
	d, err := m.Diff(ctx, "vm1@s1", "vm1")
	if err != nil || len(d) != 1 || d[0] != (Range{bs, bs}) {
		t.Fatalf("diff = %v, %v; want one range at block 1", d, err)
	}
	if err := m.Resize(ctx, "vm1", bs, false); !errors.Is(err, ErrShrink) {
		t.Fatalf("shrink without allow: %v", err)
	}
	if err := m.Resize(ctx, "vm1", bs+10, true); err != nil {
		t.Fatal(err)
	}
	if err := m.Resize(ctx, "vm1@s1", 100*bs, false); !errors.Is(err, volume.ErrReadOnly) {
		t.Fatalf("resize of a snapshot: %v", err)
	}
	if err := m.Rename(ctx, "vm1", "vm2"); err != nil {
		t.Fatal(err)
	}
	if got := ReadT(t, m, "vm2", 0, 10); got[0] != 1 {
		t.Fatalf("renamed volume reads %x", got)
	}
	// Remove the snapshot the clone came from: the clone stays whole.
	if err := m.Remove(ctx, "vm1@s1"); err != nil {
		t.Fatal(err)
	}
	if got := ReadT(t, m, "c1", 0, 2*bs); !bytes.Equal(got, bytes.Repeat([]byte{1}, 2*bs)) {
		t.Fatal("clone changed after its snapshot was removed")
	}
	if err := m.Remove(ctx, "vm1@s1"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	list, _ := m.List(ctx)
	if len(list) != 2 || list[0].Name != "c1" || list[1].Name != "vm2" {
		t.Fatalf("list = %+v", list)
	}
}

func TestStatsDedup(t *testing.T) {
	m := New(objstore.NewMem())
	img := bytes.Repeat([]byte("abcdefgh"), 4*bs/8) // 4 identical blocks
	for _, name := range []string{"i1", "i2"} {
		if _, _, err := m.Import(ctx, bytes.NewReader(img), int64(len(img)), name, image.Options{BlockShift: 16}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Clone(ctx, "i1", "vm", 0); err != nil {
		t.Fatal(err)
	}
	st, err := m.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Three maps of 4 blocks each, served by one stored block.
	if st.Images != 2 || st.Volumes != 1 || st.LogicalBytes != 12*bs || st.StoredBytes != bs || st.DedupRatio != 12 {
		t.Fatalf("stats = %+v", st)
	}
	// Hash folds identical private data into the same content block.
	WriteT(t, m, "vm", 0, img[:bs])
	if _, err := m.Hash(ctx, "vm", nil); err != nil {
		t.Fatal(err)
	}
	st, _ = m.Stats(ctx)
	if st.StoredBytes != bs || st.PrivateObjects != 0 {
		t.Fatalf("after hash: %+v", st)
	}
}

// countWrites counts the calls that change a store.
type countWrites struct {
	objstore.Store
	n atomic.Int64
}

func (s *countWrites) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	s.n.Add(1)
	return s.Store.Put(ctx, name, data)
}

func (s *countWrites) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	s.n.Add(1)
	return s.Store.Create(ctx, name, data)
}

func (s *countWrites) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	s.n.Add(1)
	return s.Store.Swap(ctx, name, data, old)
}

func (s *countWrites) Delete(ctx context.Context, name string) error {
	s.n.Add(1)
	return s.Store.Delete(ctx, name)
}

func (s *countWrites) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	s.n.Add(1)
	return s.Store.DeleteVersion(ctx, name, old)
}

// TestLookingWritesNothing: what the CLI does to look at volumes
// (volume list, info, read, diff, image export) writes nothing to the
// store, whether or not anyone holds the volume's lease (issue 10 #16).
func TestLookingWritesNothing(t *testing.T) {
	s := &countWrites{Store: objstore.NewMem()}
	m := New(s)
	if _, err := m.CreateVolume(ctx, "v", 8*bs, 16); err != nil {
		t.Fatal(err)
	}
	WriteT(t, m, "v", bs, []byte("data"))
	if _, err := m.Snapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	before := s.n.Load()
	if _, err := m.List(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"v", "s"} {
		if _, err := m.Info(ctx, name); err != nil {
			t.Fatal(err)
		}
		if got := ReadT(t, m, name, bs, 4); string(got) != "data" {
			t.Fatalf("%s reads %q", name, got)
		}
		v, _, err := m.Open(ctx, name, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := image.ExportStream(ctx, v, io.Discard, image.Options{}); err != nil {
			t.Fatal(err)
		}
		if err := v.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Diff(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	if n := s.n.Load() - before; n != 0 {
		t.Fatalf("looking wrote %d times to the store", n)
	}
}

// TestSnapshotRefusedLeavesNothing: a snapshot that cannot have the
// volume's lease (its holder keeps it) or of a volume that is read-only
// fails, and leaves no snapshot and no hold on collections behind: it
// takes the hold and the lease at once, and gives back the one it got.
func TestSnapshotRefusedLeavesNothing(t *testing.T) {
	s := objstore.NewMem()
	a := New(s)
	rec, err := a.CreateVolume(ctx, "vm1", 8*bs, 16)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Snapshot(ctx, "vm1", "vm1@s1"); err != nil {
		t.Fatal(err)
	}
	va, _, err := a.OpenWriter(ctx, rec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer va.Discard(ctx)
	leases, err := lease.NewManager(s, lease.Config{Node: "b"})
	if err != nil {
		t.Fatal(err)
	}
	b := &Manager{Store: s, Catalog: catalog.New(s), Now: time.Now, Leases: leases}
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := b.Snapshot(tctx, "vm1", "vm1@s2"); err == nil {
		t.Fatal("snapshot of a volume whose holder keeps its lease succeeded")
	}
	if _, err := b.Snapshot(ctx, "vm1@s1", "vm1@s3"); !errors.Is(err, volume.ErrReadOnly) {
		t.Fatalf("snapshot of a snapshot: %v, want volume.ErrReadOnly", err)
	}
	for _, name := range []string{"vm1@s2", "vm1@s3"} {
		if _, err := b.Lookup(ctx, name); !errors.Is(err, catalog.ErrNotFound) {
			t.Errorf("%s after a failed snapshot: %v", name, err)
		}
	}
	s.List(ctx, "gc/holds/", func(in objstore.Info) error {
		t.Errorf("hold %s left behind", in.Name)
		return nil
	})
	if err := va.WriteAt(ctx, []byte("still the writer"), 0, true); err != nil {
		t.Fatalf("the holder lost its volume to a failed snapshot: %v", err)
	}
}
