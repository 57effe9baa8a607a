package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// TestLateWriteAfterCleanRelease: a writer's in-place write times out
// (its outcome unknown: it may still land), its client disconnects, and
// the daemon flushes and releases the lease as if all were settled. The
// next node takes the lease as released, not over, so it stays in the
// same epoch and writes the same object in place; the old write then
// lands on top of the new node's flushed write. A holder that has a
// write of unknown outcome outstanding must hand over as taken over (new
// epoch), as a stalled holder does (issue 10 #1, #7).
func TestLateWriteAfterCleanRelease(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewMem()
	ls := volume.NewLateStore(mem)
	a, b := newNode(t, ls, "a", time.Hour), newNode(t, mem, "b", time.Hour)
	if _, err := a.d.mgr.CreateVolume(ctx, "v", 1<<20, 16); err != nil {
		t.Fatal(err)
	}
	ea, releaseA, err := a.d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if err := ea.WriteAt(ctx, []byte("a's first"), 0, true); err != nil {
		t.Fatal(err)
	}
	ls.Arm()
	if err := ea.WriteAt(ctx, []byte("a's late!"), 0, false); err == nil {
		t.Fatal("the write that timed out succeeded")
	}
	releaseA()
	eb := b.open(t, "v")
	if err := eb.WriteAt(ctx, []byte("b's write"), 0, true); err != nil {
		t.Fatal(err)
	}
	ls.Land()
	r := newNode(t, mem, "reader", time.Hour).open(t, "v")
	if got := readBack(t, r, 0, 9); string(got) != "b's write" {
		t.Fatalf("b's flushed write reads %q after a's timed-out write landed", got)
	}
}
