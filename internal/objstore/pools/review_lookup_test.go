package pools

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// counting counts the reads a pool answers.
type counting struct {
	objstore.Store
	reads atomic.Int64
}

func (c *counting) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	c.reads.Add(1)
	return c.Store.ReadAt(ctx, name, p, off)
}

// TestReviewPlacedBlockFoundElsewhere: a private block of a volume placed
// in one pool but held by another (written before a move changed the
// placement, or before a Place that a crash delayed) is remembered where
// it was found, as any block is: only the first read misses in the
// volume's pool, not every read (a request to an S3 pool each).
func TestReviewPlacedBlockFoundElsewhere(t *testing.T) {
	a, b := objstore.NewMem(), &counting{Store: objstore.NewMem()}
	s, err := New(objstore.NewMem(), []Named{{"a", a}, {"b", b}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := Of(s)
	id := blockmap.NewID()
	priv := blockmap.PrivateEntry(id, 1, 1).ObjectName()
	a.Put(ctx, priv, []byte("written in a"))
	if err := r.Place(ctx, id, "b"); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4)
	for i := 0; i < 3; i++ {
		if err := s.ReadAt(ctx, priv, p, 0); err != nil || string(p) != "writ" {
			t.Fatalf("read %q %v", p, err)
		}
	}
	if n := b.reads.Load(); n > 1 {
		t.Fatalf("%d reads missed in the volume's pool for a block another pool holds, want 1", n)
	}
	// A new private block of the volume still goes to its pool.
	next := blockmap.PrivateEntry(id, 1, 2).ObjectName()
	if _, err := s.Put(ctx, next, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx, next); err != nil {
		t.Fatalf("a new private block is not in its volume's pool: %v", err)
	}
}
