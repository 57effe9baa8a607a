package manage

import (
	"bytes"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestInfoDiffPartial: a clone's small write makes a partial block. Info
// counts the sub-block it wrote as its own and the rest of the block as
// shared; Diff finds the block changed against the parent, and unchanged
// against a snapshot of the clone (whose map decodes the same partial
// block separately).
func TestInfoDiffPartial(t *testing.T) {
	m := New(objstore.NewMem())
	if _, err := m.CreateVolume(ctx, "vm", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	WriteT(t, m, "vm", 0, bytes.Repeat([]byte{1}, 4*bs))
	if _, err := m.Snapshot(ctx, "vm", "vm@s"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Clone(ctx, "vm@s", "c", 0); err != nil {
		t.Fatal(err)
	}
	sub := int64(bs / blockmap.SubBlocks)
	WriteT(t, m, "c", 2*bs+10, []byte("x"))
	in, err := m.Info(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if in.AllocatedBytes != 4*bs || in.PrivateBytes != sub || in.SharedBytes != 4*bs-sub || in.ExclusiveBytes != sub {
		t.Fatalf("info of a clone with one partial block: %+v, want %d bytes its own", in, sub)
	}
	d, err := m.Diff(ctx, "vm@s", "c")
	if err != nil || len(d) != 1 || d[0] != (Range{2 * bs, bs}) {
		t.Fatalf("diff with the parent = %v, %v; want block 2", d, err)
	}
	if _, err := m.Snapshot(ctx, "c", "c@s"); err != nil {
		t.Fatal(err)
	}
	if d, err := m.Diff(ctx, "c@s", "c"); err != nil || len(d) != 0 {
		t.Fatalf("diff of a clone and its snapshot = %v, %v; want none", d, err)
	}
}
