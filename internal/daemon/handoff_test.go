package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// adminToken is the token of every node's admin API in these tests:
// handoffs run with authentication on.
const adminToken = "test-admin-token"

// authGet is http.Get with the nodes' token.
func authGet(url string) (*http.Response, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	return http.DefaultClient.Do(req)
}

// node is one daemon with its admin API, as 'archip serve' runs it.
type node struct {
	d     *Daemon
	admin *httptest.Server
	store *objstore.Faulty // this node's view of the shared store
}

func newNode(t *testing.T, s objstore.Store, name string, ttl time.Duration) *node {
	t.Helper()
	n := &node{store: objstore.NewFaulty(s)}
	n.admin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.d.AdminHandler().ServeHTTP(w, r)
	}))
	t.Cleanup(n.admin.Close)
	m := manage.New(n.store)
	leases, err := lease.NewManager(n.store, lease.Config{Node: name, Addr: n.admin.Listener.Addr().String(),
		TTL: ttl, MaxDrift: ttl / 10, Ask: lease.HTTPAskToken(time.Second, adminToken)})
	if err != nil {
		t.Fatal(err)
	}
	m.Leases = leases
	n.d = New(m, t.Logf)
	n.d.RequireToken(adminToken)
	t.Cleanup(func() { n.d.Close(context.Background()) })
	return n
}

func (n *node) open(t *testing.T, name string) *Volume {
	t.Helper()
	e, release, err := n.d.Open(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return e
}

// role is the role of the handle of name on n, once it is not busy: a
// handoff answers before the follower it leaves has opened.
func role(n *node, name string) string {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		r := "closed"
		for _, st := range n.d.Status() {
			if st.Name == name {
				r = st.Role
			}
		}
		if r != "busy" || time.Now().After(deadline) {
			return r
		}
	}
}

func readBack(t *testing.T, e *Volume, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if err := e.ReadAt(context.Background(), p, off); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHandoff: writes alternate between two daemons sharing a store; each
// write moves the lease by handoff at once (no waiting for a TTL), every
// write lands, and each side reads what the other flushed.
func TestHandoff(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	a, b := newNode(t, s, "a", time.Hour), newNode(t, s, "b", time.Hour)
	if _, err := a.d.mgr.CreateVolume(ctx, "v", 1<<20, 16); err != nil {
		t.Fatal(err)
	}
	ea, eb := a.open(t, "v"), b.open(t, "v")
	// Opening writes nothing: both follow until one writes.
	if role(a, "v") != "follower" || role(b, "v") != "follower" {
		t.Fatalf("roles before any write: %s, %s", role(a, "v"), role(b, "v"))
	}
	for i := range 20 {
		w, r, wn, rn := ea, eb, a, b
		if i%2 == 1 {
			w, r, wn, rn = eb, ea, b, a
		}
		rec := []byte(fmt.Sprintf("record %03d", i))
		if err := w.WriteAt(ctx, rec, int64(i)*4096, false); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if role(wn, "v") != "writer" || role(rn, "v") != "follower" {
			t.Fatalf("after write %d: writer is %s, reader is %s", i, role(wn, "v"), role(rn, "v"))
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := readBack(t, r, int64(i)*4096, len(rec)); !bytes.Equal(got, rec) {
			t.Fatalf("the other node reads %q after write %d, want %q", got, i, rec)
		}
	}
	// The unflushed write of the holder is flushed by the handoff.
	ea.WriteAt(ctx, []byte("unflushed on a"), 100*4096, false)
	eb.WriteAt(ctx, []byte("b"), 101*4096, false)
	if got := readBack(t, eb, 100*4096, 14); string(got) != "unflushed on a" {
		t.Fatalf("after the handoff b reads %q", got)
	}
	for i := range 20 {
		want := fmt.Sprintf("record %03d", i)
		if got := readBack(t, ea, int64(i)*4096, len(want)); string(got) != want {
			t.Errorf("record %d reads %q", i, got)
		}
	}
}

// TestHandoffConcurrent: two daemons write at once, each its own blocks,
// so the lease moves back and forth under load; nothing is lost.
func TestHandoffConcurrent(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	a, b := newNode(t, s, "a", time.Hour), newNode(t, s, "b", time.Hour)
	a.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for k, n := range []*node{a, b} {
		e := n.open(t, "v")
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range 30 {
				off := int64(2*i+k) * 8192
				if err := e.WriteAt(ctx, []byte(fmt.Sprintf("%d-%d", k, i)), off, false); err != nil {
					t.Errorf("node %d write %d: %v", k, i, err)
					return
				}
			}
			e.Flush(ctx)
		}()
	}
	close(start)
	wg.Wait()
	r := newNode(t, s, "reader", time.Hour).open(t, "v")
	for i := range 30 {
		for k := range 2 {
			want := fmt.Sprintf("%d-%d", k, i)
			if got := readBack(t, r, int64(2*i+k)*8192, len(want)); string(got) != want {
				t.Errorf("block of node %d write %d reads %q", k, i, got)
			}
		}
	}
}

// TestDeadHolder: a holder cut off from the store and from the other
// node stops writing when its lease runs out; the other node takes over
// only after the lease expired, in a new epoch; when the first comes back
// its unflushed writes are gone and it says so on every request.
func TestDeadHolder(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	const ttl = 600 * time.Millisecond
	a, b := newNode(t, s, "a", ttl), newNode(t, s, "b", ttl)
	r, _ := a.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	ea, eb := a.open(t, "v"), b.open(t, "v")
	if err := ea.WriteAt(ctx, []byte("flushed by a"), 0, true); err != nil {
		t.Fatal(err)
	}
	ea.WriteAt(ctx, []byte("unflushed by a"), 65536, false)
	rec, _, _ := b.d.mgr.Leases.Read(ctx, r.ID.String())

	// Partition a: no store, no admin API.
	a.store.Add(objstore.Rule{Err: errors.New("network unreachable")})
	a.admin.Config.SetKeepAlivesEnabled(false)
	a.admin.Listener.Close()

	if err := eb.WriteAt(ctx, []byte("b"), 4096, true); err != nil {
		t.Fatalf("b's write after the takeover: %v", err)
	}
	if now := time.Now(); !now.After(rec.Expires.Add(ttl / 10)) {
		t.Fatalf("b took over at %s, before a's lease expired (%s)", now, rec.Expires)
	}
	if role(b, "v") != "writer" {
		t.Fatalf("b is %s", role(b, "v"))
	}
	if err := ea.WriteAt(ctx, []byte("late"), 131072, false); err == nil {
		t.Fatal("a wrote after its lease ran out")
	}
	// a comes back: its next renewal finds the lease gone.
	a.store.Reset()
	deadline := time.Now().Add(10 * time.Second)
	for role(a, "v") != "fenced" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := ea.ReadAt(ctx, make([]byte, 1), 0); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a's read after losing unflushed writes: %v", err)
	}
	if got := readBack(t, eb, 0, 12); string(got) != "flushed by a" {
		t.Fatalf("b reads %q", got)
	}
	if got := readBack(t, eb, 65536, 14); !bytes.Equal(got, make([]byte, 14)) {
		t.Fatalf("a's unflushed write reached the volume: %q", got)
	}
}

// TestAdminAPI: bad requests are refused with a clear status and change
// nothing; the status listing says who writes what.
func TestAdminAPI(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, objstore.NewMem(), "a", time.Hour)
	n.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	e := n.open(t, "v")
	e.WriteAt(ctx, []byte("x"), 0, false)
	base := "http://" + n.admin.Listener.Addr().String()
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", lease.HandoffPath, 400},
		{"POST", lease.HandoffPath + "?volume=nothex", 400},
		{"GET", lease.HandoffPath + "?volume=00000000000000000000000000000000", 405},
		{"POST", lease.HandoffPath + "?volume=00000000000000000000000000000000", 200}, // not open here: nothing to do
		{"GET", "/v1/volumes", 200},
		{"GET", "/healthz", 200},
		{"GET", "/nothing", 404},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
	if role(n, "v") != "writer" {
		t.Fatalf("bad requests changed the role to %s", role(n, "v"))
	}
	resp, err := authGet(base + "/v1/volumes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st []VolumeStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || len(st) != 1 || st[0].Role != "writer" || st[0].Term != 1 || st[0].Clients != 1 {
		t.Fatalf("status: %+v, %v", st, err)
	}
}

// TestHandoffAnswersBeforeFollowerOpens: a handoff answers once the lease
// is released, and opens the follower after that, while the asker takes
// the lease; its own next write waits for the follower as before. The
// follower's open (the head, the map, the write log: a few store round
// trips) used to come before the answer, so an asker (a move's reopen)
// waited for it and this node's writers waited for it and then for the
// asker. The follower's read of the head is held until the handoff
// answered (or, when it does not, for a while).
func TestHandoffAnswersBeforeFollowerOpens(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, objstore.NewMem(), "n", time.Hour)
	r, err := n.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	e := n.open(t, "v")
	if err := e.WriteAt(ctx, []byte("one"), 0, true); err != nil {
		t.Fatal(err)
	}
	answered := make(chan struct{})
	var (
		mu     sync.Mutex
		before = -1 // the follower's read of the head began before the answer: 1, after: 0
	)
	n.store.Add(objstore.Rule{Op: objstore.OpGet, Prefix: "vol/" + r.ID.String() + "/head", Hook: func(context.Context, objstore.Op, string) {
		select {
		case <-answered:
			mu.Lock()
			if before < 0 {
				before = 0
			}
			mu.Unlock()
		case <-time.After(2 * time.Second): // no answer comes
			mu.Lock()
			before = 1
			mu.Unlock()
		}
	}})
	if ok, err := n.d.Handoff(ctx, r.ID); !ok || err != nil {
		t.Fatalf("handoff: %v %v", ok, err)
	}
	close(answered)
	// The next write waits for the follower, then takes the lease back.
	if err := e.WriteAt(ctx, []byte("two"), 0, true); err != nil {
		t.Fatal(err)
	}
	n.store.Reset()
	mu.Lock()
	defer mu.Unlock()
	if before != 0 {
		t.Errorf("the handoff answered after the follower read the head (%d)", before)
	}
	if got := readBack(t, e, 0, 3); string(got) != "two" {
		t.Errorf("read %q after the handoff and the next write", got)
	}
}
