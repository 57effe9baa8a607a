package catalog

import (
	"context"
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
