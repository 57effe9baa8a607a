package daemon

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestYieldEndsAtCommandExpiry: a command (no admin address: a mover, a
// snapshot) that was handed the lease and died holding it stalls the
// writer that handed it over only until its lease runs out, by the
// lease clock, not for the whole of handoffHeld (10 s, over the default
// TTL of 5 s).
func TestYieldEndsAtCommandExpiry(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	const ttl = time.Minute
	var d *Daemon
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.AdminHandler().ServeHTTP(w, r)
	}))
	defer admin.Close()
	m := manage.New(s)
	l, err := lease.NewManager(s, lease.Config{Node: "a", Addr: admin.Listener.Addr().String(),
		TTL: ttl, MaxDrift: ttl / 10, Clock: clock, Ask: lease.HTTPAsk(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	m.Leases = l
	d = New(m, t.Logf)
	d.handoffHeld = time.Hour // the bound must not be what ends the wait
	defer d.Close(context.Background())
	r, err := m.CreateVolume(ctx, "v", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	e, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := e.WriteAt(ctx, []byte("one"), 0, true); err != nil {
		t.Fatal(err)
	}
	cmd, err := lease.NewManager(s, lease.Config{Node: "cmd", TTL: ttl, MaxDrift: ttl / 10, Clock: clock,
		Ask: lease.HTTPAsk(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Take(ctx, r.ID.String()); err != nil {
		t.Fatal(err)
	}
	// The command dies holding the lease, which runs out.
	clock.add(ttl + ttl/10 + time.Second)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second) // hang protection only
	defer cancel()
	if err := e.WriteAt(wctx, []byte("two"), 0, true); err != nil {
		t.Fatalf("write after the command's lease ran out: %v", err)
	}
	if wctx.Err() != nil {
		t.Fatal("the write waited for the command's lease past its expiry")
	}
	if got := string(readBack(t, e, 0, 3)); got != "two" {
		t.Errorf("read %q, want two", got)
	}
}

// TestYieldServesReads: while a write waits for the asker of a handoff
// to take the lease (here an asker that never does), the volume's reads
// are served by the follower: only the write waits.
func TestYieldServesReads(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, objstore.NewMem(), "n", time.Hour)
	n.d.handoffYield = time.Hour // the wait ends when the test ends it
	r, err := n.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	e := n.open(t, "v")
	if err := e.WriteAt(ctx, []byte("one"), 0, true); err != nil {
		t.Fatal(err)
	}
	if ok, err := n.d.Handoff(ctx, r.ID); !ok || err != nil {
		t.Fatalf("handoff: %v %v", ok, err)
	}
	polled := make(chan struct{})
	var once sync.Once
	n.store.Add(objstore.Rule{Op: objstore.OpGet, Prefix: lease.Name(""), Hook: func(context.Context, objstore.Op, string) {
		once.Do(func() { close(polled) })
	}})
	wctx, stopWrite := context.WithCancel(ctx)
	defer stopWrite()
	wrote := make(chan error, 1)
	go func() { wrote <- e.WriteAt(wctx, []byte("two"), 0, true) }()
	<-polled // the write is waiting
	read := make(chan []byte, 1)
	go func() {
		p := make([]byte, 3)
		e.ReadAt(ctx, p, 0)
		read <- p
	}()
	select {
	case p := <-read:
		if string(p) != "one" {
			t.Errorf("read %q while the write waits, want one", p)
		}
	case <-time.After(30 * time.Second): // hang protection only
		t.Error("a read waited for the write's yield")
		defer func() { <-read }()
	}
	stopWrite()
	if err := <-wrote; !errors.Is(err, context.Canceled) {
		t.Errorf("write whose client went away while it waited: %v", err)
	}
	if r := role(n, "v"); r != "follower" {
		t.Errorf("after the write gave up waiting the volume is %s", r)
	}
}
