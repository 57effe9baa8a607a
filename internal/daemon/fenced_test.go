package daemon

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestReconnectAfterFence: a handle fenced because its lease was lost with
// unflushed writes fails its own clients' requests, but a client that
// connects afterwards gets a fresh handle: the volume's real size (not 0,
// found by the chaos test) and what was flushed.
func TestReconnectAfterFence(t *testing.T) {
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	a := newNode(t, objstore.NewMem(), "a", ttl)
	r, err := a.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	ea := a.open(t, "v")
	if err := ea.WriteAt(ctx, []byte("flushed"), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := ea.WriteAt(ctx, []byte("unflushed"), 65536, false); err != nil {
		t.Fatal(err)
	}
	if _, err := a.d.mgr.Leases.Break(ctx, r.ID.String(), true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for role(a, "v") != "fenced" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := ea.ReadAt(ctx, make([]byte, 1), 0); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("the fenced client's read: %v", err)
	}
	e2 := a.open(t, "v")
	if got := e2.Size(); got != 1<<20 {
		t.Fatalf("a new client sees size %d", got)
	}
	if got := readBack(t, e2, 0, 7); string(got) != "flushed" {
		t.Fatalf("a new client reads %q", got)
	}
	if err := e2.WriteAt(ctx, []byte("again"), 4096, true); err != nil {
		t.Fatalf("a new client's write: %v", err)
	}
	if err := ea.ReadAt(ctx, make([]byte, 1), 0); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("the fenced client's read after a new client came: %v", err)
	}
}
