package manage

import (
	"context"
	"errors"
	"strings"
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

// collectFirst deletes an object itself just before this process
// deletes it: a collection that got there first.
type collectFirst struct {
	objstore.Store
	suffix string
}

func (s *collectFirst) Delete(ctx context.Context, name string) error {
	if strings.HasSuffix(name, s.suffix) {
		s.Store.Delete(ctx, name)
	}
	return s.Store.Delete(ctx, name)
}

// TestRemoveRacesCollection: a collection may delete the head of a
// volume whose record a remove has just deleted (nothing names it, and it
// is old) before the remove deletes it: the remove succeeded all the same.
func TestRemoveRacesCollection(t *testing.T) {
	mem := objstore.NewMem()
	if _, err := New(mem).CreateVolume(ctx, "x", 64<<10, 16); err != nil {
		t.Fatal(err)
	}
	if err := New(&collectFirst{Store: mem, suffix: "/head"}).Remove(ctx, "x"); err != nil {
		t.Fatal(err)
	}
}
