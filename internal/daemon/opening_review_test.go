package daemon

import (
	"context"
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestWaiterOfFailedOpen: a client that connects while another client's
// open of the same volume runs, and that open then fails, opens the
// volume itself instead of failing or waiting for good; a handoff
// request meanwhile answers at once that this node holds nothing.
func TestWaiterOfFailedOpen(t *testing.T) {
	ctx := context.Background()
	d, s, ids := newHookDaemon(t, "v")
	stuck, unblock := holdFirst(s, objstore.OpGet, blockmap.HeadName(ids["v"]), errors.New("store unavailable"))
	firstErr := make(chan error, 1)
	go func() {
		_, _, err := d.Open(ctx, "v")
		firstErr <- err
	}()
	within(t, stuck, "the first open")
	waiting := make(chan struct{}, 1)
	d.onWait = func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	}
	type opened struct {
		release func()
		err     error
	}
	second := make(chan opened, 1)
	go func() {
		_, rel, err := d.Open(ctx, "v")
		second <- opened{rel, err}
	}()
	within(t, waiting, "the second open waiting")
	handed := make(chan struct{})
	go func() {
		if ok, err := d.Handoff(ctx, ids["v"]); ok || err != nil {
			t.Errorf("handoff during an open: %v, %v", ok, err)
		}
		close(handed)
	}()
	within(t, handed, "a handoff during an open")
	close(unblock)
	if err := <-firstErr; err == nil {
		t.Fatal("the first open succeeded")
	}
	var o opened
	got := make(chan struct{})
	go func() { o = <-second; close(got) }()
	within(t, got, "the second open")
	if o.err != nil {
		t.Fatalf("the client waiting for a failed open: %v", o.err)
	}
	o.release()
}
