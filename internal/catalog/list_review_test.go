package catalog

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// pauseSwap pauses before the n-th swap of one object until gate closes.
type pauseSwap struct {
	objstore.Store
	name   string
	n      int
	paused chan struct{}
	gate   chan struct{}
	mu     sync.Mutex
}

func (s *pauseSwap) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (objstore.Version, error) {
	if name == s.name {
		s.mu.Lock()
		s.n--
		n := s.n
		s.mu.Unlock()
		if n == 0 {
			close(s.paused)
			<-s.gate
		}
	}
	return s.Store.Swap(ctx, name, b, old)
}

// afterGet runs fn once after the first read of one object.
type afterGet struct {
	objstore.Store
	name string
	fn   func()
	once sync.Once
}

func (s *afterGet) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	b, v, err := s.Store.Get(ctx, name)
	if name == s.name {
		s.once.Do(s.fn)
	}
	return b, v, err
}

// TestListDuringRename: a listing that reads a rename's old name before
// the rename commits and its new name after must not list the volume
// twice.
func TestListDuringRename(t *testing.T) {
	mem := objstore.NewMem()
	a := vol("a")
	if err := New(mem).Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	rs := &pauseSwap{Store: mem, name: recordName("a"), n: 2, paused: make(chan struct{}), gate: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- New(rs).Rename(ctx, "a", "b") }()
	<-rs.paused // the intent and the pending record are written
	var renamed error
	ls := &afterGet{Store: mem, name: recordName("a"), fn: func() {
		close(rs.gate)
		renamed = <-done
	}}
	p, err := New(ls).List(ctx, ListOptions{})
	if err != nil || renamed != nil {
		t.Fatal(err, renamed)
	}
	seen := map[blockmap.ID]string{}
	for _, r := range p.Records {
		if other, dup := seen[r.ID]; dup {
			t.Fatalf("one listing shows %s as %q and %q", r.ID, other, r.Name)
		}
		seen[r.ID] = r.Name
	}
	if len(seen) != 1 {
		t.Fatalf("listed %v", p.Records)
	}
}

// TestPagesDuringRenames: while renames move volumes among names
// interleaved with others, a listing page by page (Limit, After) shows
// every name that no rename touches exactly once, in order, and no
// listing call shows an ID twice.
func TestPagesDuringRenames(t *testing.T) {
	mem := objstore.NewMem()
	c := New(mem)
	stable := map[string]bool{}
	for i := 0; i < 60; i++ {
		n := fmt.Sprintf("n%03d", i*10)
		stable[n] = true
		if err := c.Create(ctx, vol(n)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 8; i++ {
		if err := c.Create(ctx, vol(fmt.Sprintf("n%03d-m", i*70))); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			r := New(mem)
			for {
				select {
				case <-stop:
					return
				default:
				}
				x, y := fmt.Sprintf("n%03d-m", rng.IntN(60)*10), fmt.Sprintf("n%03d-m", rng.IntN(60)*10)
				if err := r.Rename(ctx, x, y); err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrExists) && !errors.Is(err, ErrBusy) {
					t.Error(err)
					return
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for round := 0; round < 20; round++ {
		seen := map[string]int{}
		after := ""
		for {
			p, err := New(mem).List(ctx, ListOptions{After: after, Limit: 7})
			if err != nil {
				t.Fatal(err)
			}
			ids := map[blockmap.ID]bool{}
			for _, r := range p.Records {
				if r.Name <= after {
					t.Fatalf("%q listed after %q", r.Name, after)
				}
				after = r.Name
				if ids[r.ID] {
					t.Fatalf("%s twice in one page", r.ID)
				}
				ids[r.ID] = true
				seen[r.Name]++
			}
			if p.Next == "" {
				break
			}
			after = p.Next
		}
		for n := range stable {
			if seen[n] != 1 {
				t.Fatalf("round %d: %q listed %d times", round, n, seen[n])
			}
		}
	}
}
