package pools

import (
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestReviewCopyStaleLocation: a process that found a content block
// outside its first pool remembers where; once that copy is gone (gc
// deleted it, unreferenced and old) and the block was stored again in
// another pool, a copy-on-write from it must still find it, as a read
// does, instead of failing with ErrNotFound.
func TestReviewCopyStaleLocation(t *testing.T) {
	meta, a, b := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	s, err := New(meta, []Named{{"a", a}, {"b", b}})
	if err != nil {
		t.Fatal(err)
	}
	blk := blockmap.ContentName([32]byte{7})
	b.Put(ctx, blk, []byte("shared"))
	if _, _, err := s.Get(ctx, blk); err != nil { // found in b: remembered
		t.Fatal(err)
	}
	b.Delete(ctx, blk)                // gc, in another process
	a.Put(ctx, blk, []byte("shared")) // stored again, by an import into a
	dst := blockmap.PrivateEntry(blockmap.NewID(), 1, 1).ObjectName()
	if err := s.(objstore.Copier).Copy(ctx, blk, dst); err != nil {
		t.Fatalf("copy-on-write from a block whose remembered copy is gone: %v", err)
	}
	if got, _, err := s.Get(ctx, dst); err != nil || string(got) != "shared" {
		t.Fatalf("the copy: %q %v", got, err)
	}
}
