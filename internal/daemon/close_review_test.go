package daemon

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// TestCloseDuringFailingFinalFlush: Close finds a handle whose final
// flush is running; that flush fails and keeps the handle (and its
// writes). Close must not return as if the volume were closed: it
// flushes the kept handle itself (here the store works again), or
// reports that it could not.
func TestCloseDuringFailingFinalFlush(t *testing.T) {
	ctx := context.Background()
	d, s, ids := newHookDaemon(t, "v")
	e, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.WriteAt(ctx, []byte("acknowledged"), 8192, false); err != nil {
		t.Fatal(err)
	}
	inFlush, unblock := holdFirst(s, objstore.OpSwap, blockmap.HeadName(ids["v"]), errors.New("store unavailable"))
	released := make(chan struct{})
	go func() { release(); close(released) }()
	within(t, inFlush, "the final flush")
	closed := make(chan error, 1)
	go func() { closed <- d.Close(ctx) }()
	// Close is under way (it has marked the daemon closed) before the
	// final flush fails.
	for {
		d.mu.Lock()
		c := d.closed
		d.mu.Unlock()
		if c {
			break
		}
		runtime.Gosched()
	}
	close(unblock)
	within(t, released, "the release")
	var cerr error
	closeDone := make(chan struct{})
	go func() { cerr = <-closed; close(closeDone) }()
	within(t, closeDone, "Close")
	d.mu.Lock()
	left := len(d.open)
	d.mu.Unlock()
	v, err := volume.Open(ctx, s, ids["v"], volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	got := make([]byte, 12)
	if err := v.ReadAt(ctx, got, 8192); err != nil {
		t.Fatal(err)
	}
	if cerr == nil && (string(got) != "acknowledged" || left != 0) {
		t.Fatalf("Close returned no error, but the store has %q and %d handles are left open", got, left)
	}
}
