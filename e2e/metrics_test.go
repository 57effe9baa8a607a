package e2e

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape returns the daemon's /metrics.
func (d *daemon) scrape(t *testing.T) string {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+d.admin+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok := os.Getenv("ARCHIP_ADMIN_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s, %v\n%s", resp.Status, err, b)
	}
	return string(b)
}

// sample is the value of the series name{labels} in a scrape (0 if
// absent).
func sample(t *testing.T, scrape, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(scrape)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMetricsEndpoint: I/O through NBD (qemu-io) moves the volume's
// counters by exactly its requests and bytes, and promtool accepts what
// /metrics serves.
func TestMetricsEndpoint(t *testing.T) {
	need(t, "qemu-io", "promtool")
	e := newEnv(t)
	e.archip("volume", "create", "v", "--size", "2M", "--block-size", "64K")
	d := e.serve("--flush-interval", "0")
	qemuIO(t, d.uri("v"), "write -P 7 0 4k", "write -P 8 64k 8k", "read -P 7 0 4k", "read -P 8 64k 512", "read 1M 4k", "flush")
	// The daemon sees qemu-io leave after it exits.
	out := d.scrape(t)
	for deadline := time.Now().Add(10 * time.Second); sample(t, out, `archip_frontend_connections{frontend="nbd"}`)+sample(t, out, `archip_volumes{role="writer"}`) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		out = d.scrape(t)
	}
	for series, want := range map[string]float64{
		`archip_volume_write_ops_total{volume="v"}`:             2,
		`archip_volume_write_bytes_total{volume="v"}`:           4096 + 8192,
		`archip_volume_read_ops_total{volume="v"}`:              3,
		`archip_volume_read_bytes_total{volume="v"}`:            4096 + 512 + 4096,
		`archip_volume_read_duration_seconds_count{volume="v"}`: 3,
		`archip_lease_acquisitions_total`:                       1,
		`archip_frontend_connections{frontend="nbd"}`:           0,
		`archip_volumes{role="writer"}`:                         0, // released when qemu-io left
	} {
		if got := sample(t, out, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := sample(t, out, `archip_volume_flush_ops_total{volume="v"}`); got < 1 {
		t.Errorf("flushes: %v, want qemu-io's", got)
	}
	if got := sample(t, out, `archip_store_written_bytes_total{backend="file"}`); got < 4096+8192 {
		t.Errorf("bytes written to the store: %v, want at least the data", got)
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, b)
	}
}
