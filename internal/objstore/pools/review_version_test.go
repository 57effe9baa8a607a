package pools

import (
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestReviewVersionAcrossPools: a version names one write of an object
// (objstore.Store), also across Delete and re-Create; a block created
// again in another pool after a version was read (each backend numbers
// its own writes: the first write of a name in a file or mem store is
// version 1 in each) must not be deleted or replaced by a DeleteVersion
// or Swap from that version.
func TestReviewVersionAcrossPools(t *testing.T) {
	meta, fast, cold := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	open := func() objstore.Store {
		s, err := New(meta, []Named{{"fast", fast}, {"cold", cold}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	for i, op := range []struct {
		what string
		fn   func(s objstore.Store, name string, v objstore.Version) error
	}{
		{"DeleteVersion", func(s objstore.Store, name string, v objstore.Version) error { return s.DeleteVersion(ctx, name, v) }},
		{"Swap", func(s objstore.Store, name string, v objstore.Version) error {
			_, err := s.Swap(ctx, name, []byte("swapped"), v)
			return err
		}},
	} {
		blk := blockmap.ContentName([32]byte{byte(i + 1)})
		cold.Put(ctx, blk, []byte("old"))
		in, err := s.Stat(ctx, blk)
		if err != nil {
			t.Fatal(err)
		}
		cold.Delete(ctx, blk)
		fast.Put(ctx, blk, []byte("new"))    // created again, in another pool
		err = op.fn(open(), blk, in.Version) // another process
		if got, _, _ := fast.Get(ctx, blk); string(got) != "new" {
			t.Errorf("%s from the version of a deleted copy changed the block created again in another pool (%v): %q", op.what, err, got)
		} else if !errors.Is(err, objstore.ErrConflict) && !objstore.IsNotExist(err) {
			t.Errorf("%s from a stale version: %v, want ErrConflict", op.what, err)
		}
	}
}
