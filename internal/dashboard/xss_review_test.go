package dashboard

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/daemon"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

const xss = `<script>alert(1)</script>"'><img src=x onerror=alert(2)>javascript:alert(3)`

// TestPagesEscape: a node ID, lease address and store URL holding markup,
// and query parameters holding markup (reflected in pager links and
// error messages), appear escaped on every page.
func TestPagesEscape(t *testing.T) {
	ctx := context.Background()
	store := objstore.NewMem()
	m := manage.New(store)
	for _, n := range []string{"a", "b"} {
		if _, err := m.CreateVolume(ctx, n, 4<<20, 16); err != nil {
			t.Fatal(err)
		}
	}
	leases, err := lease.NewManager(store, lease.Config{Node: xss, Addr: xss, TTL: time.Hour, MaxDrift: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	m.Leases = leases
	mx := daemon.NewMetrics(daemon.MetricsConfig{})
	d := daemon.New(m, nil)
	d.UseMetrics(mx)
	defer d.Close(ctx)
	v, release, err := d.Open(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := v.WriteAt(ctx, make([]byte, 4096), 0, true); err != nil {
		t.Fatal(err)
	}
	d.UseDashboard(New(Config{Manager: m, Daemon: d, Metrics: mx, Node: xss, Store: "mem://" + xss, PageSize: 1}))
	srv := httptest.NewServer(d.AdminHandler())
	defer srv.Close()
	q := url.QueryEscape(xss)
	for _, p := range []string{"/ui/volumes", "/ui/volumes?prefix=" + q + "&after=" + q, "/ui/volumes?after=" + q,
		"/ui/leases?prefix=" + q + "&after=" + q, "/ui/leases", "/ui/volume?name=a", "/ui/volume?name=" + q,
		"/ui/space", "/ui/activity", "/ui/io.json"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, bad := range []string{"<script>alert", "<img src=x", `href="javascript:`} {
			if strings.Contains(string(b), bad) {
				t.Errorf("GET %s (%d) holds %q unescaped:\n%s", p, resp.StatusCode, bad, b)
			}
		}
	}
}
