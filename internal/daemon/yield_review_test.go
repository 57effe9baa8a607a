package daemon

import (
	"context"
	"net/http"
	"net/http/httptest"
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
