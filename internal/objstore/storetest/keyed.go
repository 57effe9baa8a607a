package storetest

import (
	"context"
	"sort"
	"strings"
	"sync"

	"github.com/archipelago-go/archip/internal/objstore"
)

// Keyed is a store that lists the catalog (names under cat/) from an
// index its writers keep, as the RADOS store does: an object written
// without its key (by a binary older than the index, writing to the store
// beneath, or the index's uncovered crash state) is not listed until
// RepairIndex. AfterRepair, if set, runs once a repair has set the keys.
type Keyed struct {
	objstore.Store
	AfterRepair func()

	mu   sync.Mutex
	keys map[string]bool
}

// NewKeyed returns s with an empty catalog index.
func NewKeyed(s objstore.Store) *Keyed { return &Keyed{Store: s, keys: map[string]bool{}} }

func (s *Keyed) set(name string) {
	if strings.HasPrefix(name, "cat/") {
		s.mu.Lock()
		s.keys[name] = true
		s.mu.Unlock()
	}
}

func (s *Keyed) Put(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.set(name)
	return s.Store.Put(ctx, name, b)
}

func (s *Keyed) Create(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.set(name)
	return s.Store.Create(ctx, name, b)
}

func (s *Keyed) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (objstore.Version, error) {
	s.set(name)
	return s.Store.Swap(ctx, name, b, old)
}

// DropKey removes name's key, as the index's uncovered crash state leaves
// it: the object stays, unlisted.
func (s *Keyed) DropKey(name string) {
	s.mu.Lock()
	delete(s.keys, name)
	s.mu.Unlock()
}

// ListNames lists the catalog from its keys (absent objects allowed).
func (s *Keyed) ListNames(ctx context.Context, prefix string, fn func(string) error) error {
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

// RepairIndex sets the key of every catalog object.
func (s *Keyed) RepairIndex(ctx context.Context) error {
	err := s.Store.List(ctx, "cat/", func(in objstore.Info) error { s.set(in.Name); return nil })
	if err == nil && s.AfterRepair != nil {
		s.AfterRepair()
	}
	return err
}
