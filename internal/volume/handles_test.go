package volume

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// openCounting counts the handles opened on a Mem store.
type openCounting struct {
	*objstore.Mem
	opens atomic.Int64
}

func (s *openCounting) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	s.opens.Add(1)
	return s.Mem.OpenHandle(ctx, name, create, writable)
}

// TestHandleCacheHoldsCloneAndBases: a clone's writer keeps open both the
// objects it writes and the snapshot's objects their first writes read
// from, so that once every block was written once, writes in place open
// nothing. (With room for 256 handles, a clone of 256 blocks or more,
// 1 GiB of 4 MiB blocks, evicted one handle per write: each write then
// listed and opened its object again.)
func TestHandleCacheHoldsCloneAndBases(t *testing.T) {
	const blocks = 300
	s := &openCounting{Mem: objstore.NewMem()}
	id := newClone(t, s, blocks)
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	if v.handles == nil {
		t.Fatal("the store's handles are not used")
	}
	p := pattern(4096, 9)
	for pass := range 2 {
		s.opens.Store(0)
		for b := range int64(blocks) {
			if err := v.WriteAt(ctx, p, b*bs+100, false); err != nil {
				t.Fatal(err)
			}
		}
		if n := s.opens.Load(); pass == 1 && n != 0 {
			t.Errorf("writes in place into the %d blocks of a clone written once opened %d handles, want none", blocks, n)
		}
	}
}
