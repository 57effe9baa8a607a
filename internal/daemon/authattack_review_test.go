package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// rawGet sends a request line as written (no client-side path cleaning)
// and returns the response.
func rawGet(t *testing.T, addr, method, target string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, addr)
	for k, v := range hdr {
		fmt.Fprintf(c, "%s: %s\r\n", k, v)
	}
	io.WriteString(c, "\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// TestAdminAuthBypassAttempts: the dashboard's cookie, or no credential,
// opens nothing beyond GET /ui/ whatever the request line's form (dot
// segments, encoded dots, absolute form, other methods), the ?token=
// redirect stays on this origin and drops the token, and a wrong token
// of any length is refused.
func TestAdminAuthBypassAttempts(t *testing.T) {
	d := New(manage.New(objstore.NewMem()), nil)
	d.RequireToken(adminToken)
	d.UseMetrics(NewMetrics(MetricsConfig{}))
	d.UseDashboard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page "+r.URL.Path) }))
	srv := httptest.NewServer(d.AdminHandler())
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	cookie := map[string]string{"Cookie": UICookieName(port) + "=" + uiCookieValue(adminToken)}

	for _, target := range []string{
		"/ui/../metrics", "/ui/%2e%2e/metrics", "/ui/..%2fmetrics", "/ui/../v1/volumes",
		"/ui/..%2f..%2fv1/volumes", "http://" + addr + "/metrics", "/healthz/../metrics",
		"/ui/../handoff?volume=x", "/metrics?token=" + adminToken + "x",
	} {
		for _, h := range []map[string]string{nil, cookie} {
			// The dashboard may get a path with encoded dots: its own
			// mux, and its static files (an fs.FS), refuse them.
			resp, body := rawGet(t, addr, "GET", target, h)
			if resp.StatusCode == http.StatusOK && !strings.HasPrefix(body, "page /ui/") {
				t.Errorf("GET %s (cookie %v): 200 %q, want no access beyond the dashboard", target, h != nil, body)
			}
			if loc := resp.Header.Get("Location"); resp.StatusCode/100 == 3 && !strings.HasPrefix(loc, "/") {
				t.Errorf("GET %s: redirect to %q, off this origin", target, loc)
			}
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		if resp, _ := rawGet(t, addr, m, "/ui/volumes", cookie); resp.StatusCode/100 == 2 {
			t.Errorf("%s /ui/volumes with the cookie: %d, want refused", m, resp.StatusCode)
		}
	}
	for _, target := range []string{"/ui//evil.example?token=" + adminToken, "/ui/..//evil.example?token=" + adminToken, "/ui/%5Cevil.example?token=" + adminToken} {
		resp, _ := rawGet(t, addr, "GET", target, nil)
		loc := resp.Header.Get("Location")
		if strings.HasPrefix(loc, "//") || strings.Contains(loc, "://") || strings.HasPrefix(loc, `/\`) || strings.Contains(loc, adminToken) {
			t.Errorf("GET %s: redirect to %q: off this origin or keeps the token", target, loc)
		}
	}
	for _, tok := range []string{"", "t", adminToken[:len(adminToken)-1], adminToken + "x", strings.ToUpper(adminToken), " " + adminToken} {
		resp, _ := rawGet(t, addr, "GET", "/v1/volumes", map[string]string{"Authorization": "Bearer " + tok})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("bearer %q: %d, want 401", tok, resp.StatusCode)
		}
		if resp, _ := rawGet(t, addr, "GET", "/ui/volumes", map[string]string{"Cookie": UICookieName(port) + "=" + uiCookieValue(tok)}); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("cookie of token %q: %d, want 401", tok, resp.StatusCode)
		}
	}
}

// TestRunAdminListenForms: every form of an all-interfaces address is
// beyond loopback (refused without a token); loopback in any form is not.
func TestRunAdminListenForms(t *testing.T) {
	for _, c := range []struct {
		listen string
		ok     bool
	}{{":0", false}, {"0.0.0.0:0", false}, {"[::]:0", false}, {"[::ffff:0.0.0.0]:0", false},
		{"[::1]:0", true}, {"localhost:0", true}, {"[::ffff:127.0.0.1]:0", true}, {"127.0.0.2:0", true}} {
		ctx, stop := context.WithCancel(context.Background())
		cfg := Config{Manager: manage.New(objstore.NewMem()), Store: "mem://t", Node: "n", AdminListen: c.listen,
			AdminAdvertise: "127.0.0.1:1", LeaseTTL: 5 * time.Second, MaxClockDrift: 500 * time.Millisecond, Logf: t.Logf}
		if c.ok {
			stop() // Run returns at once, after its checks
		}
		err := Run(ctx, cfg)
		stop()
		var ce *ConfigError
		if refused := errors.As(err, &ce) && strings.Contains(err.Error(), "token"); refused == c.ok {
			if strings.Contains(fmt.Sprint(err), "address") && c.ok {
				t.Logf("%s: %v (this host cannot listen there)", c.listen, err)
				continue
			}
			t.Errorf("admin API on %s without a token: %v; refused %v, want %v", c.listen, err, refused, !c.ok)
		}
	}
}

// TestBearerSchemeAnyCase: the authentication scheme is
// case-insensitive (RFC 9110 11.1): "bearer TOKEN" is the token too,
// and a different token in any case is not.
func TestBearerSchemeAnyCase(t *testing.T) {
	d := New(manage.New(objstore.NewMem()), nil)
	d.RequireToken(adminToken)
	srv := httptest.NewServer(d.AdminHandler())
	defer srv.Close()
	for _, c := range []struct {
		auth string
		code int
	}{
		{"Bearer " + adminToken, 200}, {"bearer " + adminToken, 200}, {"BEARER " + adminToken, 200},
		{"bearer  " + adminToken, 401}, {"bearer " + strings.ToUpper(adminToken), 401}, {"Bearer", 401}, {"Bearer ", 401},
		{"Basic " + adminToken, 401}, {"Bearer" + adminToken, 401},
	} {
		resp, _ := rawGet(t, srv.Listener.Addr().String(), "GET", "/v1/volumes", map[string]string{"Authorization": c.auth})
		if resp.StatusCode != c.code {
			t.Errorf("Authorization %q: %d, want %d", c.auth, resp.StatusCode, c.code)
		}
	}
}
