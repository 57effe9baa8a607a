package daemon

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestAdminRefusesCrossSiteHandoff: an admin API open on loopback (no
// token) refuses a handoff that a browser sends for another site (a
// form on a web page posting to 127.0.0.1), which would otherwise flush
// and release a volume at that page's will; a node's own request (no
// browser headers) still runs.
func TestAdminRefusesCrossSiteHandoff(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, objstore.NewMem(), "a", time.Hour)
	n.d.RequireToken("")
	n.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	e := n.open(t, "v")
	e.WriteAt(ctx, []byte("x"), 0, false)
	base := "http://" + n.admin.Listener.Addr().String()
	for _, h := range []map[string]string{
		{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
		{"Origin": "http://evil.example"},
		{"Origin": "null"},
	} {
		req, _ := http.NewRequest("POST", base+lease.HandoffPath+"?volume="+e.h.id.String(), nil)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("a cross-site handoff (%v): %d, want 403", h, resp.StatusCode)
		}
		if role(n, "v") != "writer" {
			t.Fatalf("a cross-site handoff (%v) ran: role %s", h, role(n, "v"))
		}
	}
	if err := lease.HTTPAsk(time.Second)(ctx, lease.Record{Addr: n.admin.Listener.Addr().String()}, e.h.id.String()); err != nil {
		t.Fatalf("a node's handoff request: %v", err)
	}
}

// TestOpenAdminRefusesOtherHosts: an admin API open on loopback (no
// token) answers only requests addressed to an IP, localhost or the
// advertised host: a web page whose name an attacker points at
// 127.0.0.1 (DNS rebinding) reads nothing and runs no handoff.
func TestOpenAdminRefusesOtherHosts(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, objstore.NewMem(), "a", time.Hour)
	n.d.RequireToken("")
	n.d.AdvertiseHost("node-a.internal")
	n.d.UseMetrics(NewMetrics(MetricsConfig{}))
	n.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	e := n.open(t, "v")
	e.WriteAt(ctx, []byte("x"), 0, false)
	addr := n.admin.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	for _, c := range []struct {
		host, method, path string
		code               int
	}{
		{"evil.example:" + port, "GET", "/v1/volumes", http.StatusForbidden},
		{"evil.example", "GET", "/metrics", http.StatusForbidden},
		{"evil.example:" + port, "POST", lease.HandoffPath + "?volume=" + e.h.id.String(), http.StatusForbidden},
		{"127.0.0.1:" + port, "GET", "/v1/volumes", http.StatusOK},
		{"[::1]:" + port, "GET", "/v1/volumes", http.StatusOK},
		{"localhost:" + port, "GET", "/v1/volumes", http.StatusOK},
		{"node-a.internal:" + port, "GET", "/v1/volumes", http.StatusOK},
		{"evil.example", "GET", "/healthz", http.StatusOK},
	} {
		req, _ := http.NewRequest(c.method, "http://"+addr+c.path, nil)
		req.Host = c.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s for host %s: %d, want %d", c.method, c.path, c.host, resp.StatusCode, c.code)
		}
	}
	if role(n, "v") != "writer" {
		t.Fatalf("a handoff for another host ran: role %s", role(n, "v"))
	}
}
