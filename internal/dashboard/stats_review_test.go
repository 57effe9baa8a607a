package dashboard

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFiguresWaitHonorsContext: while one request computes the store's
// figures on a stalled store, another that waits for them gives up when
// its own request ends (a closed tab), instead of piling up until the
// store answers.
func TestFiguresWaitHonorsContext(t *testing.T) {
	ctx := context.Background()
	store := objstore.NewFaulty(objstore.NewMem())
	m := manage.New(store)
	if _, err := m.CreateVolume(ctx, "a", 1<<20, 16); err != nil {
		t.Fatal(err)
	}
	d := New(Config{Manager: m, Node: "n"})
	hit, unblock := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	store.Add(objstore.Rule{Op: objstore.OpList, Hook: func(context.Context, objstore.Op, string) {
		if first.CompareAndSwap(false, true) {
			close(hit)
			<-unblock
		}
	}})
	defer close(unblock)
	go d.figures(ctx)
	<-hit
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan *storeFigures, 1)
	go func() { done <- d.figures(wctx) }()
	cancel()
	select {
	case f := <-done:
		if f.Err == nil {
			t.Fatalf("figures for a canceled request: %+v, want its context's error", f)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a request waiting for the figures outlived its context")
	}
}
