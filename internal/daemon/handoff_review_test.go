package daemon

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestReviewHandoffFollowerOpenFails: a handoff answers, then the
// follower it leaves fails to open once (a store error on the head's
// read: a timeout). The handoff flushed everything and lost nothing, so
// the handle must not be fenced: this node's clients (an NBD connection
// that stays open) read, and their next write takes the lease back,
// instead of failing until they reconnect.
func TestReviewHandoffFollowerOpenFails(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, objstore.NewMem(), "n", time.Hour)
	n.d.handoffYield = time.Millisecond
	r, err := n.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	e := n.open(t, "v")
	if err := e.WriteAt(ctx, []byte("one"), 0, true); err != nil {
		t.Fatal(err)
	}
	n.store.Add(objstore.Rule{Op: objstore.OpGet, Prefix: "vol/" + r.ID.String() + "/head", Count: 1,
		Err: errors.New("test: operation timed out")})
	if ok, err := n.d.Handoff(ctx, r.ID); !ok || err != nil {
		t.Fatalf("handoff: %v %v", ok, err)
	}
	if got := role(n, "v"); got != "follower" {
		t.Errorf("after the handoff and a failed follower open the role is %q, want follower", got)
	}
	if got := readBack(t, e, 0, 3); string(got) != "one" {
		t.Errorf("read %q after the handoff", got)
	}
	if err := e.WriteAt(ctx, []byte("two"), 0, true); err != nil {
		t.Fatalf("the next write after the handoff: %v", err)
	}
	if got := role(n, "v"); got != "writer" {
		t.Errorf("after the next write the role is %q, want writer", got)
	}
	if got := readBack(t, e, 0, 3); string(got) != "two" {
		t.Errorf("read %q after the next write", got)
	}
}

// TestReviewHandoffWhileFollowerOpens: while the follower a handoff
// leaves is opening (its read of the head held), a second handoff
// request answers that nothing was released once it opened, and Close
// waits for it and closes it: nothing is left running or open.
func TestReviewHandoffWhileFollowerOpens(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, objstore.NewMem(), "n", time.Hour)
	r, err := n.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	e, release, err := n.d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := e.WriteAt(ctx, []byte("one"), 0, true); err != nil {
		t.Fatal(err)
	}
	held, hold := make(chan struct{}), make(chan struct{})
	n.store.Add(objstore.Rule{Op: objstore.OpGet, Prefix: "vol/" + r.ID.String() + "/head", Count: 1, Hook: func(context.Context, objstore.Op, string) {
		close(held)
		<-hold
	}})
	if ok, err := n.d.Handoff(ctx, r.ID); !ok || err != nil {
		t.Fatalf("handoff: %v %v", ok, err)
	}
	<-held
	type answer struct {
		ok  bool
		err error
	}
	second, closed := make(chan answer, 1), make(chan error, 1)
	go func() {
		ok, err := n.d.Handoff(ctx, r.ID)
		second <- answer{ok, err}
	}()
	go func() { closed <- n.d.Close(ctx) }()
	close(hold)
	if a := <-second; a.ok || a.err != nil {
		t.Errorf("a second handoff while the follower opened: %v %v, want false and no error", a.ok, a.err)
	}
	if err := <-closed; err != nil {
		t.Errorf("close: %v", err)
	}
	if st := n.d.Status(); len(st) != 0 {
		t.Errorf("after Close: %+v", st)
	}
	if err := e.WriteAt(ctx, []byte("two"), 0, true); err == nil {
		t.Error("a write after Close succeeded")
	}
}
