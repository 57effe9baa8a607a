package manage

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// TestRemoveRacesRecreate: removers of one name race a process that
// removes it and creates it again. Whatever the order, the name, if it
// exists at the end, opens (its volume was not removed under it), each
// volume is removed at most once, and no record is left without a head.
func TestRemoveRacesRecreate(t *testing.T) {
	s := objstore.NewMem()
	procs := []*Manager{New(s), New(s), New(s)}
	for round := 0; round < 30; round++ {
		if _, err := procs[0].CreateVolume(ctx, "x", 64<<10, 16); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var removed atomic.Int32
		for _, m := range procs[:2] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := m.Remove(ctx, "x"); err == nil {
					removed.Add(1)
				} else if !errors.Is(err, catalog.ErrNotFound) {
					t.Error(err)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := procs[2]
			if err := m.Remove(ctx, "x"); err == nil {
				removed.Add(1)
			} else if !errors.Is(err, catalog.ErrNotFound) {
				t.Error(err)
			}
			if _, err := m.CreateVolume(ctx, "x", 64<<10, 16); err != nil && !errors.Is(err, catalog.ErrExists) {
				t.Error(err)
			}
		}()
		wg.Wait()
		r, err := procs[0].Lookup(ctx, "x")
		if err == nil {
			if _, _, err := volume.ReadHead(ctx, s, r.ID); err != nil {
				t.Fatalf("round %d: %q is listed but its volume is gone: %v", round, "x", err)
			}
			if removed.Load() != 1 {
				t.Fatalf("round %d: %d removals succeeded, and the name was made again once", round, removed.Load())
			}
			procs[0].Remove(ctx, "x")
		} else if !errors.Is(err, catalog.ErrNotFound) {
			t.Fatal(err)
		}
	}
}
