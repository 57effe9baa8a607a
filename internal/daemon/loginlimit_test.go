package daemon

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestTokenCompareFixedSize: every comparison of a presented credential
// with the admin token compares digests of one size, so that its time
// does not tell the token's length.
func TestTokenCompareFixedSize(t *testing.T) {
	var mu sync.Mutex
	var lens [][2]int
	old := constantTimeCompare
	constantTimeCompare = func(a, b []byte) int {
		mu.Lock()
		lens = append(lens, [2]int{len(a), len(b)})
		mu.Unlock()
		return old(a, b)
	}
	defer func() { constantTimeCompare = old }()
	srv := uiServer(t, New(manage.New(objstore.NewMem()), nil))
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", srv.URL+"/v1/volumes", nil)
	req.Header.Set("Authorization", "Bearer x")
	for _, do := range []func() (*http.Response, error){
		func() (*http.Response, error) { return noRedirect.Do(req) },
		func() (*http.Response, error) { return noRedirect.Get(srv.URL + "/ui/volumes?token=xy") },
		func() (*http.Response, error) {
			return noRedirect.PostForm(srv.URL+"/ui/login", url.Values{"token": {"a-much-longer-guess-than-the-token"}})
		},
	} {
		resp, err := do()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lens) < 3 {
		t.Fatalf("%d comparisons, want one for each of 3 requests", len(lens))
	}
	for _, l := range lens {
		if l[0] != l[1] || l[0] != 32 {
			t.Errorf("compared %d bytes with %d; want digests of 32 bytes each", l[0], l[1])
		}
	}
}

func uiServer(t *testing.T, d *Daemon) *httptest.Server {
	t.Helper()
	d.RequireToken(adminToken)
	d.UseDashboard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page "+r.URL.Path) }))
	srv := httptest.NewServer(d.AdminHandler())
	t.Cleanup(srv.Close)
	return srv
}

// TestUICookiePerPort: the dashboard's cookie is named for the port of
// the listener that set it (browsers share cookies between the ports
// of a host), and one named for another port opens nothing.
func TestUICookiePerPort(t *testing.T) {
	srv := uiServer(t, New(manage.New(objstore.NewMem()), nil))
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm(srv.URL+"/ui/login", url.Values{"token": {adminToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cs := resp.Cookies()
	if len(cs) != 1 || cs[0].Name != UICookieName(port) || UICookieName(port) == UICookie {
		t.Fatalf("login set %v; want one cookie named %s", cs, UICookieName(port))
	}
	for _, c := range []struct {
		name string
		code int
	}{{UICookieName(port), 200}, {UICookie, 401}, {UICookieName("1"), 401}} {
		req, _ := http.NewRequest("GET", srv.URL+"/ui/volumes", nil)
		req.AddCookie(&http.Cookie{Name: c.name, Value: cs[0].Value})
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("cookie %s: %d, want %d", c.name, resp.StatusCode, c.code)
		}
	}
}

// TestLoginRateLimit: wrong tokens through the login form or ?token=
// are limited per client: after loginBurst of them, a client gets 429
// (the right token included) until the injected clock has refilled its
// allowance; another client is not held up.
func TestLoginRateLimit(t *testing.T) {
	d := New(manage.New(objstore.NewMem()), nil)
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	d.loginNow = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(dt time.Duration) { mu.Lock(); now = now.Add(dt); mu.Unlock() }
	h := func() http.Handler {
		d.RequireToken(adminToken)
		d.UseDashboard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page") }))
		return d.AdminHandler()
	}()
	try := func(client, token string, form bool) int {
		t.Helper()
		var req *http.Request
		if form {
			req = httptest.NewRequest("POST", "/ui/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		} else {
			req = httptest.NewRequest("GET", "/ui/volumes?token="+url.QueryEscape(token), nil)
		}
		req.RemoteAddr = client + ":5555"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	for i := range loginBurst {
		if code := try("192.0.2.1", fmt.Sprint("guess", i), i%2 == 0); code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d, want 401", i, code)
		}
	}
	for _, form := range []bool{true, false} {
		if code := try("192.0.2.1", "guess", form); code != http.StatusTooManyRequests {
			t.Fatalf("wrong token beyond the burst (form %v): %d, want 429", form, code)
		}
		if code := try("192.0.2.1", adminToken, form); code != http.StatusTooManyRequests {
			t.Fatalf("the right token while limited (form %v): %d, want 429", form, code)
		}
	}
	if code := try("192.0.2.2", adminToken, true); code != http.StatusSeeOther {
		t.Fatalf("another client's right token: %d, want 303", code)
	}
	advance(loginRefill)
	if code := try("192.0.2.1", adminToken, true); code != http.StatusSeeOther {
		t.Fatalf("the right token after a refill: %d, want 303", code)
	}
	if code := try("192.0.2.1", "guess", true); code != http.StatusUnauthorized {
		t.Fatalf("a wrong token after a refill: %d, want 401", code)
	}
	if code := try("192.0.2.1", "guess", true); code != http.StatusTooManyRequests {
		t.Fatalf("the second wrong token after one refill: %d, want 429", code)
	}
}

// TestLoginLimiterBounded: the limiter keeps at most loginClients
// clients; beyond, they share one allowance.
func TestLoginLimiterBounded(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newLoginLimiter(func() time.Time { return now })
	for i := range 3 * loginClients {
		l.fail(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
	}
	if n := len(l.clients); n > loginClients {
		t.Fatalf("%d clients kept, want at most %d", n, loginClients)
	}
}
