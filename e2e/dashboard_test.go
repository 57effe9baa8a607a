package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/progress"
)

// chromium is Debian's chromium; ARCHIP_TEST_CHROMIUM names another.
func chromium() string {
	if c := os.Getenv("ARCHIP_TEST_CHROMIUM"); c != "" {
		return c
	}
	return "chromium"
}

// browse runs headless chromium on url with args (--dump-dom,
// --screenshot=...) and returns what it printed on stdout. Each call
// has a profile of its own, so no cookie outlives it.
func browse(t *testing.T, url string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=3000"}, args...)
	cmd := exec.CommandContext(ctx, chromium(), append(all, url)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, stderr.String())
	}
	return string(out)
}

// nonLoopbackIP returns an address of this host other than loopback, or
// "" if it has none.
func nonLoopbackIP() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

// TestDashboard: two daemons with an admin token serve volumes, a
// snapshot and a clone, with live I/O from fio on one volume of each;
// headless Chromium loads every page of the first one's dashboard
// (signing in with ?token=, which sets the cookie the page's script then
// uses) and finds the volumes, their lineage as a tree, which node holds
// which lease, the space charts, and non-zero I/O rates. A request
// without the token to the admin API listening beyond loopback is
// refused. archip top finds the busiest volume. Screenshots go to the test's directory, and to
// ARCHIP_DASHBOARD_SCREENSHOTS if set (docs/img/ holds them).
func TestDashboard(t *testing.T) {
	need(t, chromium(), "fio")
	const token = "e2e-dashboard-token"
	t.Setenv("ARCHIP_ADMIN_TOKEN", token)
	e := newEnv(t)
	e.archip("volume", "create", "db", "--size", "256M")
	e.archip("volume", "create", "web", "--size", "128M")
	e.archip("volume", "create", "scratch", "--size", "64M")
	data, err := os.Open(e.randomFile("db.raw", 8<<20, 8<<20, 16))
	if err != nil {
		t.Fatal(err)
	}
	w := exec.Command(archipBin, "--store", e.store, "volume", "write", "db")
	w.Stdin = data
	if out, err := w.CombinedOutput(); err != nil {
		t.Fatalf("volume write: %v\n%s", err, out)
	}
	data.Close()
	e.archip("volume", "snapshot", "db", "db-nightly")
	e.archip("volume", "clone", "db-nightly", "db-test")

	listen := "127.0.0.1:0"
	if ip := nonLoopbackIP(); ip != "" {
		listen = ip + ":0"
	}
	a := e.serve("--node-id", "node-a", "--admin-listen", listen)
	b := e.serve("--node-id", "node-b")

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	load := func(d *daemon, vol string, extra ...string) {
		// --thread: fio runs its job in the process killed below (by
		// default it forks one, which outlived the kill and spun at 30%
		// of a core for as long as the machine ran).
		args := append([]string{"--name=load", "--thread", "--ioengine=nbd", "--uri=" + d.uri(vol), "--rw=randrw", "--bs=4k",
			"--size=32M", "--iodepth=4", "--time_based", "--runtime=300"}, extra...)
		fio := exec.CommandContext(ctx, "fio", args...)
		// Dies with the test binary too (a timeout kills it with no
		// cleanup): a fio left behind loads the machine for minutes.
		fio.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := fio.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stop(); fio.Wait() })
	}
	// Registered before the loads, so it runs after their cleanups: no
	// fio of this test may outlive them.
	t.Cleanup(func() {
		for _, d := range []*daemon{a, b} {
			if out, _ := exec.Command("pgrep", "-af", "fio .*socket="+d.sock).Output(); len(out) > 0 {
				t.Errorf("processes left running after the test's cleanup:\n%s", out)
			}
		}
	})
	load(a, "db", "--rate_iops=400,200")
	load(b, "web", "--rate_iops=50,50")

	base := "http://" + a.admin
	if !strings.HasPrefix(a.admin, "127.") {
		// Beyond loopback: refused without the token.
		for _, p := range []string{"/ui/volumes", "/ui/io.json", "/metrics", "/v1/volumes"} {
			resp, err := http.Get(base + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s without the token, beyond loopback: %s, want 401", p, resp.Status)
			}
		}
		if dom := browse(t, base+"/ui/volumes", "--dump-dom"); strings.Contains(dom, ">db-test<") || !strings.Contains(dom, "<form") {
			t.Errorf("chromium without the token got the page, or no login form:\n%s", dom)
		}
	} else {
		t.Log("this host has no address beyond loopback: the admin API listens on loopback")
	}

	// Both volumes hold their leases and their rates are non-zero.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var io struct {
			Interval float64 `json:"interval_seconds"`
			Volumes  []struct {
				Volume  string  `json:"volume"`
				ReadOps float64 `json:"read_iops"`
			} `json:"volumes"`
		}
		req, _ := http.NewRequest("GET", base+"/ui/io.json", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := readAll(resp)
		json.Unmarshal(body, &io)
		if io.Interval > 0 && len(io.Volumes) > 0 && io.Volumes[0].Volume == "db" && io.Volumes[0].ReadOps > 0 && held(t, e, "web", "node-b") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no I/O on db after 60 s: %s", body)
		}
		time.Sleep(1100 * time.Millisecond)
	}

	// archip top reads the same from /metrics.
	var top struct {
		Volumes []struct {
			Volume   string  `json:"volume"`
			ReadIOPS float64 `json:"read_iops"`
		} `json:"volumes"`
	}
	if out := e.archip("top", "--once", "--json", a.admin); json.Unmarshal([]byte(out), &top) != nil || len(top.Volumes) == 0 ||
		top.Volumes[0].Volume != "db" || top.Volumes[0].ReadIOPS == 0 {
		t.Errorf("archip top --once --json %s: %s", a.admin, out)
	}

	// A collection sweeping, as 'archip gc' on any host records it in
	// the store (package progress), shows on the activity page.
	st, err := objstore.OpenFile(filepath.Join(e.dir, "store"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	gcRec := progress.Start(context.Background(), st, progress.KindGC, "", progress.Options{})
	defer gcRec.End()
	gcRec.GC()("mark", 4)
	gcRec.GC()("sweep", 2048)

	shots := os.Getenv("ARCHIP_DASHBOARD_SCREENSHOTS")
	dir := t.TempDir()
	for _, p := range []struct {
		name, path string // name: of the screenshot; "" for none
		wants      []*regexp.Regexp
	}{
		{"volumes", "/ui/volumes", []*regexp.Regexp{
			regexp.MustCompile(`>scratch</a>`),
			// the lineage tree: db-test under db-nightly under db
			regexp.MustCompile(`(?s)id="lineage".*>db</a>.*<ul class="tree"><li><a href="/ui/volume\?name=db-nightly"[^>]*>db-nightly</a>.*<ul class="tree"><li><a href="/ui/volume\?name=db-test"`),
			regexp.MustCompile(`<span class="holder">node-a</span>`),
			regexp.MustCompile(`<span class="holder">node-b</span>`),
			// live I/O, filled in by the page's script or by the server
			regexp.MustCompile(`data-io="db" data-field="read_iops">[1-9][0-9]*<`),
			regexp.MustCompile(`(?s)id="busiest".*<td>db</td><td class="num">[1-9]`),
		}},
		{"volume", "/ui/volume?name=db", []*regexp.Regexp{
			regexp.MustCompile(`(?s)id="lineage".*<b class="kind-volume">db</b>.*name=db-nightly"[^>]*>db-nightly</a>.*<ul class="tree"><li><a href="/ui/volume\?name=db-test"`),
			regexp.MustCompile(`held by <span class="holder">node-a</span>`),
			regexp.MustCompile(`data-io="db" data-field="read_iops">[1-9][0-9]*<`),
		}},
		{"", "/ui/volume?name=db-test", []*regexp.Regexp{
			regexp.MustCompile(`(?s)id="lineage".*name=db">db</a>.*name=db-nightly">db-nightly</a>.*<b class="kind-volume">db-test</b>`),
			regexp.MustCompile(`exclusive`),
			regexp.MustCompile(`<svg class="bar"`),
		}},
		{"space", "/ui/space", []*regexp.Regexp{
			regexp.MustCompile(`id="dedup">[0-9.]+×<`),
			regexp.MustCompile(`<th>logical</th>`),
			regexp.MustCompile(`<th>stored</th>`),
		}},
		{"leases", "/ui/leases", []*regexp.Regexp{
			regexp.MustCompile(`name=db">db</a></td><td>held</td><td class="holder">node-a</td>`),
			regexp.MustCompile(`name=web">web</a></td><td>held</td><td class="holder">node-b</td>`),
		}},
		{"activity", "/ui/activity", []*regexp.Regexp{
			regexp.MustCompile(`archip_lease_acquisitions_total`),
			regexp.MustCompile(`(?s)id="operations".*<td>gc</td><td></td><td>sweep</td><td><div>heads_marked: 4</div>`),
			regexp.MustCompile(`(?s)id="busiest".*<td>db</td>`),
		}},
	} {
		url := base + p.path
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		url += sep + "token=" + token // signs in: the cookie, then a redirect
		dom := browse(t, url, "--dump-dom")
		for _, re := range p.wants {
			if !re.MatchString(dom) {
				t.Errorf("%s: no match for %s in\n%s", p.path, re, dom)
			}
		}
		if strings.Contains(dom, "token="+token) {
			t.Errorf("%s: the page still carries the token in a URL", p.path)
		}
		if p.name == "" {
			continue
		}
		png := filepath.Join(dir, "dashboard-"+p.name+".png")
		browse(t, url, "--screenshot="+png, "--window-size=1280,900")
		if st, err := os.Stat(png); err != nil || st.Size() == 0 {
			t.Fatalf("no screenshot of %s: %v", p.path, err)
		}
		if shots != "" {
			b, _ := os.ReadFile(png)
			if err := os.WriteFile(filepath.Join(shots, filepath.Base(png)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// held reports whether node holds vol's lease.
func held(t *testing.T, e *env, vol, node string) bool {
	t.Helper()
	return strings.Contains(e.archip("lease", "show", vol), node)
}

func readAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}
