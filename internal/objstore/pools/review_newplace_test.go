package pools

import (
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestReviewNewBlockIgnoresRememberedPool: where a block was last found
// is a hint for finding it, not a placement: once that copy is gone (gc
// deleted it), a new copy goes where new blocks go (the default pool, or
// an import's view's pool), not to the pool a read remembered. (A write
// of an existing object, Put or WriteAt, trusts what it remembers: see
// locateIndex.)
func TestReviewNewBlockIgnoresRememberedPool(t *testing.T) {
	meta, fast, cold := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	s, err := New(meta, []Named{{"fast", fast}, {"cold", cold}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := Of(s)
	view, _ := r.View("fast")
	for i, tc := range []struct {
		what string
		s    objstore.Store
		put  func(s objstore.Store, name string) error
	}{
		{"Create", s, func(s objstore.Store, name string) error { _, err := s.Create(ctx, name, []byte("b")); return err }},
		{"a view's Create", view, func(s objstore.Store, name string) error { _, err := s.Create(ctx, name, []byte("b")); return err }},
	} {
		blk := blockmap.ContentName([32]byte{byte(i + 1)})
		cold.Put(ctx, blk, []byte("b"))
		if _, _, err := s.Get(ctx, blk); err != nil { // remembered in cold
			t.Fatal(err)
		}
		cold.Delete(ctx, blk) // gc, in another process
		if err := tc.put(tc.s, blk); err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		if _, err := fast.Stat(ctx, blk); err != nil {
			t.Errorf("%s of a block a read remembered in another pool: not in the default pool (%v)", tc.what, err)
		}
	}
}
