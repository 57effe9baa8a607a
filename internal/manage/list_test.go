package manage

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/objstore"
)

// headGate holds Gets of heads until want of them are in flight at once
// (or, so that a sequential reader fails instead of hanging, until one
// has waited 10 s), and records the most in flight.
type headGate struct {
	objstore.Store
	want           int
	mu             sync.Mutex
	inflight, most int
	enough         chan struct{}
	closed, gaveUp bool
}

func (g *headGate) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if strings.HasSuffix(name, "/head") {
		g.mu.Lock()
		g.inflight++
		g.most = max(g.most, g.inflight)
		if g.most == g.want && !g.closed {
			close(g.enough)
			g.closed = true
		}
		wait := g.most < g.want && !g.gaveUp
		g.mu.Unlock()
		if wait {
			select {
			case <-g.enough:
			case <-time.After(10 * time.Second):
				g.mu.Lock()
				g.gaveUp = true
				g.mu.Unlock()
			}
		}
		defer func() { g.mu.Lock(); g.inflight--; g.mu.Unlock() }()
	}
	return g.Store.Get(ctx, name)
}

// TestListReadsHeadsInParallel: the heads of a listed page are read
// several at a time (one round trip each), and each entry gets its own.
func TestListReadsHeadsInParallel(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewMem()
	m := New(mem)
	for i := range 20 {
		if _, err := m.CreateVolume(ctx, fmt.Sprintf("vm-%02d", i), uint64(i+1)<<20, 16); err != nil {
			t.Fatal(err)
		}
	}
	g := &headGate{Store: mem, want: 4, enough: make(chan struct{})}
	page, next, err := New(g).ListPage(ctx, catalog.ListOptions{Limit: 15})
	if err != nil || len(page) != 15 || next != "vm-14" {
		t.Fatalf("page: %d entries, next %q, %v", len(page), next, err)
	}
	for i, e := range page {
		if e.Name != fmt.Sprintf("vm-%02d", i) || e.Size != int64(i+1)<<20 || e.Error != "" {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	if g.most < g.want {
		t.Fatalf("at most %d heads read at once, want %d", g.most, g.want)
	}
}
