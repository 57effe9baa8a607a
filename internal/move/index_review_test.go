package move

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/objstore"
)

// keyed is a metadata store that lists the catalog from an index its
// writers keep, as RADOS does: an object without its key (written by a
// binary older than the index, or the index's uncovered crash state) is
// not listed until RepairIndex.
type keyed struct {
	objstore.Store
	mu   sync.Mutex
	keys map[string]bool
}

func (s *keyed) set(name string) {
	if strings.HasPrefix(name, "cat/") {
		s.mu.Lock()
		s.keys[name] = true
		s.mu.Unlock()
	}
}

func (s *keyed) Put(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.set(name)
	return s.Store.Put(ctx, name, b)
}

func (s *keyed) Create(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.set(name)
	return s.Store.Create(ctx, name, b)
}

func (s *keyed) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (objstore.Version, error) {
	s.set(name)
	return s.Store.Swap(ctx, name, b, old)
}

func (s *keyed) ListNames(ctx context.Context, prefix string, fn func(string) error) error {
	if !strings.HasPrefix(prefix, "cat/") {
		return s.Store.List(ctx, prefix, func(in objstore.Info) error { return fn(in.Name) })
	}
	s.mu.Lock()
	var names []string
	for k := range s.keys {
		if strings.HasPrefix(k, prefix) {
			names = append(names, k)
		}
	}
	s.mu.Unlock()
	sort.Strings(names)
	for _, n := range names {
		if err := fn(n); err != nil {
			return err
		}
	}
	return nil
}

func (s *keyed) RepairIndex(ctx context.Context) error {
	return s.Store.List(ctx, "cat/", func(in objstore.Info) error { s.set(in.Name); return nil })
}

// TestMigrateRecordWithoutIndexKey: a volume whose record the catalog's
// index lacks (on RADOS: written by a binary of format 2 still running
// after the upgrade to format 3, or the index's uncovered crash state)
// is still moved out of the pool being emptied: the migration repairs
// the index before it trusts the catalog's listing, as gc does. Before,
// it was left in pool a, which the operator then retires.
func TestMigrateRecordWithoutIndexKey(t *testing.T) {
	_, a, b := stores(t, "mem")
	meta := &keyed{Store: objstore.NewMem(), keys: map[string]bool{}}
	f := newFixture(t, meta, a, b)
	meta.mu.Lock()
	delete(meta.keys, catalog.NamePrefix+"v")
	meta.mu.Unlock()
	if _, err := Migrate(ctx, f.m, "a", "b", Options{}, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"img", "v", "c"} {
		f.inPool(t, n, "b")
	}
	f.check(t)
}
