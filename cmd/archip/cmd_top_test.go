package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMetrics serves /metrics whose counters grow by rate per scrape,
// and requires the bearer token.
func fakeMetrics(t *testing.T, token string) *httptest.Server {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		n++
		k := float64(n)
		mu.Unlock()
		fmt.Fprintf(w, `# HELP archip_volume_read_ops_total Read requests served.
# TYPE archip_volume_read_ops_total counter
archip_volume_read_ops_total{volume="quiet"} 5
archip_volume_read_ops_total{volume="busy"} %v
archip_volume_read_ops_total{volume="we \"quoted\""} %v
# TYPE archip_volume_write_ops_total counter
archip_volume_write_ops_total{volume="busy"} %v
archip_volume_write_ops_total{volume="quiet"} 1
# TYPE archip_volume_read_bytes_total counter
archip_volume_read_bytes_total{volume="busy"} %v
# TYPE archip_volume_write_bytes_total counter
archip_volume_write_bytes_total{volume="busy"} %v
# TYPE archip_volume_read_duration_seconds histogram
archip_volume_read_duration_seconds_bucket{volume="busy",le="+Inf"} 3
`, 100*k, 10*k, 50*k, 409600*k, 204800*k)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestTop: archip top --once reads a daemon's /metrics twice, a second
// (by the injected clock) apart, and prints the volumes busiest first,
// as a table or as JSON; it sends the admin token.
func TestTop(t *testing.T) {
	t.Setenv("ARCHIP_ADMIN_TOKEN", "tok")
	srv := fakeMetrics(t, "tok")
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	calls := 0
	topNow = func() time.Time { calls++; return base.Add(time.Duration(calls) * time.Second) }
	topSleep = func(time.Duration) {}
	t.Cleanup(func() { topNow, topSleep = time.Now, time.Sleep })

	out := mustCLI(t, "mem://top", nil, "top", "--once", "--json", strings.TrimPrefix(srv.URL, "http://"))
	var got topReport
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.Interval != 1 || len(got.Volumes) != 3 {
		t.Fatalf("top --once --json: %+v", got)
	}
	want := []topVolume{
		{Volume: "busy", ReadIOPS: 100, WriteIOPS: 50, ReadBytes: 409600, WriteBytes: 204800},
		{Volume: `we "quoted"`, ReadIOPS: 10},
		{Volume: "quiet"},
	}
	for i, w := range want {
		if got.Volumes[i] != w {
			t.Errorf("volume %d: %+v, want %+v", i, got.Volumes[i], w)
		}
	}

	out = mustCLI(t, "mem://top", nil, "top", "--once", srv.URL)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[2], "busy ") || !strings.Contains(lines[2], "400.0 KiB/s") || !strings.HasPrefix(lines[3], `we "quoted"`) {
		t.Fatalf("top --once:\n%s", out)
	}

	t.Setenv("ARCHIP_ADMIN_TOKEN", "wrong")
	if _, errs, code := cli(t, "mem://top", nil, "top", "--once", srv.URL); code != 1 || !strings.Contains(errs, "401") {
		t.Fatalf("top with the wrong token: exit %d, %s", code, errs)
	}
}
