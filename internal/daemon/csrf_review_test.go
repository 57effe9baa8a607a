package daemon

import (
	"context"
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
