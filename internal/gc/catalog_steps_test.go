package gc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// pauseAt pauses before its k-th write until resumed, and every write
// after it too: the whole process stalls, as a paused VM does. (Pausing
// only the k-th left the operation's hold renewing itself meanwhile, on
// its real-time ticker, at the test's advanced clock: a collection then
// waited for a live hold whose owner waited for the collection.)
type pauseAt struct {
	objstore.Store
	k      int
	mu     sync.Mutex
	n      int
	paused chan struct{}
	resume chan struct{}
}

func (s *pauseAt) gate() {
	s.mu.Lock()
	s.n++
	n := s.n
	s.mu.Unlock()
	if n == s.k {
		close(s.paused)
	}
	if n >= s.k {
		<-s.resume
	}
}

func (s *pauseAt) Put(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.gate()
	return s.Store.Put(ctx, name, b)
}
func (s *pauseAt) Create(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.gate()
	return s.Store.Create(ctx, name, b)
}
func (s *pauseAt) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (objstore.Version, error) {
	s.gate()
	return s.Store.Swap(ctx, name, b, old)
}
func (s *pauseAt) Delete(ctx context.Context, name string) error {
	s.gate()
	return s.Store.Delete(ctx, name)
}
func (s *pauseAt) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	s.gate()
	return s.Store.DeleteVersion(ctx, name, old)
}

// TestCollectionAtEveryStep: a catalog operation (create, rename,
// remove, snapshot, clone, upgrade from format 1) stalls before each of its writes in turn,
// past its hold and the grace period, while a collection runs; then it
// goes on. It succeeds or fails (the hold lost), and either way every
// name left reads what it held, and goes on doing so after another
// collection.
func TestCollectionAtEveryStep(t *testing.T) {
	ops := map[string]func(m *manage.Manager) error{
		"create":   func(m *manage.Manager) error { _, err := m.CreateVolume(ctx, "n", 4*bs, 16); return err },
		"rename":   func(m *manage.Manager) error { return m.Rename(ctx, "a", "b") },
		"remove":   func(m *manage.Manager) error { return m.Remove(ctx, "a") },
		"snapshot": func(m *manage.Manager) error { _, err := m.Snapshot(ctx, "a", "a@2"); return err },
		"clone":    func(m *manage.Manager) error { _, err := m.Clone(ctx, "a@1", "c", 0); return err },
		"upgrade":  func(m *manage.Manager) error { _, err := m.Catalog.Upgrade(ctx); return err },
	}
	for name, op := range ops {
		for k := 1; ; k++ {
			label := fmt.Sprintf("%s stalled before write %d", name, k)
			mem := objstore.NewMem()
			m, clk := setup(mem)
			rng := rand.New(rand.NewPCG(uint64(k), 1))
			if _, err := m.CreateVolume(ctx, "a", 4*bs, 16); err != nil {
				t.Fatal(err)
			}
			manage.WriteT(t, m, "a", 0, randBytes(rng, 2*bs))
			if _, err := m.Snapshot(ctx, "a", "a@1"); err != nil {
				t.Fatal(err)
			}
			manage.WriteT(t, m, "a", bs, randBytes(rng, 2*bs))
			if name == "upgrade" {
				formatOneStore(t, mem)
			}
			clk.advance(2 * time.Hour)
			want := map[string][]byte{}
			list, err := m.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range list {
				want[e.ID.String()] = manage.ReadT(t, m, e.Name, 0, -1)
			}
			ps := &pauseAt{Store: mem, k: k, paused: make(chan struct{}), resume: make(chan struct{})}
			mp := manage.New(ps)
			mp.Now = clk.now
			done := make(chan error, 1)
			go func() { done <- op(mp) }()
			var opErr error
			paused := false
			select {
			case opErr = <-done:
			case <-ps.paused:
				paused = true
				clk.advance(2 * time.Hour)
				if _, err := gc.Run(ctx, mem, gc.Options{Now: clk.now}); err != nil {
					t.Fatalf("%s: gc: %v", label, err)
				}
				close(ps.resume)
				opErr = <-done
			}
			if opErr != nil && !errors.Is(opErr, gc.ErrHoldLost) {
				t.Fatalf("%s: %v", label, opErr)
			}
			check := func(when string) {
				list, err := m.List(ctx)
				if err != nil {
					t.Fatalf("%s, %s: %v", label, when, err)
				}
				for _, e := range list {
					if e.Error != "" {
						t.Fatalf("%s, %s: %q: %s", label, when, e.Name, e.Error)
					}
					got := manage.ReadT(t, m, e.Name, 0, -1)
					if w, ok := want[e.ID.String()]; ok && !bytes.Equal(got, w) {
						t.Fatalf("%s, %s: %q changed", label, when, e.Name)
					}
					if r, err := m.Catalog.ByID(ctx, e.ID); err != nil || r.Name != e.Name {
						t.Fatalf("%s, %s: %q by ID: %v %v", label, when, e.Name, r, err)
					}
				}
			}
			check("after the operation")
			clk.advance(2 * time.Hour)
			if _, err := gc.Run(ctx, mem, gc.Options{Now: clk.now}); err != nil {
				t.Fatalf("%s: gc: %v", label, err)
			}
			check("after another collection")
			if _, err := m.Lookup(ctx, "a@1"); err != nil {
				t.Fatalf("%s: %v", label, err)
			}
			if !paused {
				t.Logf("%s: %d writes", name, k-1)
				break
			}
			if k > 60 {
				t.Fatalf("%s: still not done", name)
			}
		}
	}
}

// formatOneStore turns the catalog of s back into format 1: one object
// holding every record, as a store written before format 2.
func formatOneStore(t *testing.T, s objstore.Store) {
	t.Helper()
	var recs []catalog.Record
	if err := catalog.New(s).All(ctx, func(r catalog.Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	var names []string
	s.List(ctx, "cat/", func(in objstore.Info) error { names = append(names, in.Name); return nil })
	for _, n := range names {
		s.Delete(ctx, n)
	}
	b, _ := json.Marshal(map[string]any{"format": 1, "records": recs})
	if _, err := s.Put(ctx, catalog.ObjectName, b); err != nil {
		t.Fatal(err)
	}
}
