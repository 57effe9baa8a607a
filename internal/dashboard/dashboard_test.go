package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/daemon"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// clock is an injected clock tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	srv   *httptest.Server
	clk   *clock
	d     *daemon.Daemon
	store *objstore.Faulty
	vol   *daemon.Volume
}

// newFixture: a store with volumes a (written through the daemon,
// holding its lease), b and c, a snapshot a-snap of a and a clone
// a-clone of it, served by a dashboard with page size pageSize.
func newFixture(t *testing.T, pageSize int) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{clk: &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, store: objstore.NewFaulty(objstore.NewMem())}
	m := manage.New(f.store)
	for _, n := range []string{"a", "b", "c"} {
		if _, err := m.CreateVolume(ctx, n, 4<<20, 16); err != nil {
			t.Fatal(err)
		}
	}
	mx := daemon.NewMetrics(daemon.MetricsConfig{})
	leases, err := lease.NewManager(f.store, lease.Config{Node: "node-1", Addr: "127.0.0.1:1", TTL: time.Hour, MaxDrift: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	m.Leases = leases
	f.d = daemon.New(m, nil)
	f.d.UseMetrics(mx)
	t.Cleanup(func() { f.d.Close(context.Background()) })
	// a is written, closed (the last client's release flushes it and
	// gives its lease back), snapshotted, cloned, and written again.
	v, release, err := f.d.Open(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, make([]byte, 64<<10), 0, true); err != nil {
		t.Fatal(err)
	}
	release()
	if _, err := m.Snapshot(ctx, "a", "a-snap"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Clone(ctx, "a-snap", "a-clone", 0); err != nil {
		t.Fatal(err)
	}
	v, release, err = f.d.Open(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	if err := v.WriteAt(ctx, make([]byte, 4096), 1<<20, true); err != nil {
		t.Fatal(err)
	}
	f.vol = v
	dash := New(Config{Manager: m, Daemon: f.d, Metrics: mx, Node: "node-1", Store: "mem://t", PageSize: pageSize, Now: f.clk.Now})
	f.d.UseDashboard(dash)
	f.srv = httptest.NewServer(f.d.AdminHandler())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(f.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return string(b)
}

func mustContain(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, body)
		}
	}
}

// TestPages: each page shows what it is for: the volumes with their
// lineage as a tree and the lease holder, a volume's lineage and space,
// the store's space, the leases, and the daemon's counters.
func TestPages(t *testing.T) {
	f := newFixture(t, 50)
	vols := f.get(t, "/ui/volumes")
	mustContain(t, "/ui/volumes", vols, `href="/ui/volume?name=a-clone"`, `<span class="holder">node-1</span>`,
		// the tree: a, under it a-snap, under which a-clone
		`>a</a> <span class="tag tag-volume">volume</span> <span class="role">writer here</span><ul class="tree"><li><a href="/ui/volume?name=a-snap" class="kind-snapshot">a-snap</a> <span class="tag tag-snapshot">snapshot</span><ul class="tree"><li><a href="/ui/volume?name=a-clone"`)

	vol := f.get(t, "/ui/volume?name=a-clone")
	mustContain(t, "/ui/volume", vol, `<a href="/ui/volume?name=a">a</a>`, `<a href="/ui/volume?name=a-snap">a-snap</a>`,
		`<b class="kind-volume">a-clone</b>`, "allocated", "exclusive", "64 KiB")
	vol = f.get(t, "/ui/volume?name=a")
	mustContain(t, "/ui/volume?name=a", vol, `held by <span class="holder">node-1</span>`, "writer, 1 client(s)",
		`<b class="kind-volume">a</b> <span class="tag tag-volume">volume</span>
<ul class="tree"><li><a href="/ui/volume?name=a-snap" class="kind-snapshot">a-snap</a> <span class="tag tag-snapshot">snapshot</span><ul class="tree"><li><a href="/ui/volume?name=a-clone"`)

	space := f.get(t, "/ui/space")
	mustContain(t, "/ui/space", space, `id="dedup"`, "logical", "stored", "<svg")
	leases := f.get(t, "/ui/leases")
	mustContain(t, "/ui/leases", leases, `<td class="holder">node-1</td>`, "127.0.0.1:1")
	act := f.get(t, "/ui/activity")
	mustContain(t, "/ui/activity", act, "archip_lease_acquisitions_total", `id="operations"`, "none running")
	for _, p := range []string{"/ui/static/app.js", "/ui/static/style.css"} {
		f.get(t, p)
	}
	resp, err := http.Get(f.srv.URL + "/ui/volume?name=nosuch")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown volume's page: %d, want 404", resp.StatusCode)
	}
}

// TestPagination: a listing shows PageSize entries and links to the
// next page.
func TestPagination(t *testing.T) {
	f := newFixture(t, 2)
	p1 := f.get(t, "/ui/volumes")
	mustContain(t, "page 1", p1, `name=a-clone"`, `id="next" href="/ui/volumes?prefix=&amp;after=a-clone"`)
	if strings.Contains(p1, `href="/ui/volume?name=b"`) {
		t.Errorf("page 1 of 2 entries shows b")
	}
	p2 := f.get(t, "/ui/volumes?after=a-clone")
	mustContain(t, "page 2", p2, `href="/ui/volume?name=a-snap"`, `href="/ui/volume?name=b"`, "first page")
	// a-snap's origin is not on page 2: its tree names it.
	mustContain(t, "page 2", p2, `<span class="muted">from a</span>`)
}

// TestIORates: io.json reports per-volume rates from two samples of the
// registry at least a second apart (by the injected clock).
func TestIORates(t *testing.T) {
	f := newFixture(t, 50)
	var r struct {
		Interval float64    `json:"interval_seconds"`
		Volumes  []volumeIO `json:"volumes"`
	}
	getIO := func() {
		t.Helper()
		r.Volumes = nil
		if err := json.Unmarshal([]byte(f.get(t, "/ui/io.json")), &r); err != nil {
			t.Fatal(err)
		}
	}
	getIO()
	if r.Interval != 0 {
		t.Fatalf("first sample: interval %v, want 0 (no rates yet)", r.Interval)
	}
	ctx := context.Background()
	for range 10 {
		if err := f.vol.WriteAt(ctx, make([]byte, 4096), 0, false); err != nil {
			t.Fatal(err)
		}
	}
	f.clk.add(500 * time.Millisecond)
	getIO()
	if r.Interval != 0 {
		t.Fatalf("a sample half a second later: interval %v, want the first one's", r.Interval)
	}
	f.clk.add(1500 * time.Millisecond)
	getIO()
	if r.Interval != 2 || len(r.Volumes) == 0 || r.Volumes[0].Volume != "a" || r.Volumes[0].WriteOps != 5 || r.Volumes[0].WriteBytes != 10*4096/2 {
		t.Fatalf("rates after 10 writes of 4 KiB in 2s: %+v", r)
	}
	vols := f.get(t, "/ui/volumes")
	mustContain(t, "/ui/volumes", vols, `data-field="write_iops">5</td>`, `<td>a</td><td class="num">5</td>`)
}

// TestStatsCached: the store-wide figures are computed once per
// StatsTTL, however many times the space page is loaded.
func TestStatsCached(t *testing.T) {
	f := newFixture(t, 50)
	var lists int
	var mu sync.Mutex
	f.store.Add(objstore.Rule{Op: objstore.OpList, Hook: func(context.Context, objstore.Op, string) {
		mu.Lock()
		lists++
		mu.Unlock()
	}})
	count := func() int { mu.Lock(); defer mu.Unlock(); n := lists; lists = 0; return n }
	f.get(t, "/ui/space")
	if count() == 0 {
		t.Fatal("the space page listed nothing: is the hook right?")
	}
	f.get(t, "/ui/space")
	f.clk.add(5 * time.Second)
	f.get(t, "/ui/space")
	if n := count(); n != 0 {
		t.Fatalf("the space page within the TTL listed the store %d times, want 0", n)
	}
	f.clk.add(6 * time.Second)
	f.get(t, "/ui/space")
	if count() == 0 {
		t.Fatal("the space page after the TTL did not compute the figures again")
	}
}

// TestNoMetrics: without metrics the pages render, and io.json says
// there are none.
func TestNoMetrics(t *testing.T) {
	m := manage.New(objstore.NewMem())
	if _, err := m.CreateVolume(context.Background(), "v", 1<<20, 16); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Config{Manager: m, Node: "n"}))
	defer srv.Close()
	f := &fixture{srv: srv}
	for _, p := range []string{"/ui/volumes", "/ui/volume?name=v", "/ui/space", "/ui/leases", "/ui/activity"} {
		mustContain(t, p, f.get(t, p), "metrics are off")
	}
	mustContain(t, "io.json", f.get(t, "/ui/io.json"), `"metrics":false`)
}
