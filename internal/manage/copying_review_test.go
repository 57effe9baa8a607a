package manage

import (
	"bytes"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// A writer that starts a new epoch only to copy what it writes (volume
// write) takes over from nobody: the epoch it ends was released cleanly,
// so the next snapshot must copy no data (invariant I6), as after any
// clean handover.
func TestCopyingWriterLeavesNothingUnsealed(t *testing.T) {
	m := New(objstore.NewMem())
	rec, err := m.CreateVolume(ctx, "vm1", 8*bs, 16)
	if err != nil {
		t.Fatal(err)
	}
	WriteT(t, m, "vm1", 0, bytes.Repeat([]byte{1}, 4*bs))
	v, err := m.OpenWriterCopying(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, bytes.Repeat([]byte{2}, bs), 4*bs, false); err != nil {
		t.Fatal(err)
	}
	if h := v.Head(); h.Unsealed != 0 {
		t.Errorf("head of the copying writer: unsealed from epoch %d after a clean release", h.Unsealed)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Snapshot(ctx, "vm1", "vm1@s1"); err != nil {
		t.Fatal(err)
	}
	w, _, err := m.Open(ctx, "vm1@s1", false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	for b, e := range w.Entries() {
		if e.Kind() == blockmap.Content {
			t.Errorf("block %d was copied into a content block by the snapshot", b)
		}
	}
}
