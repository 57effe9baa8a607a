package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// limitedHandler is an admin handler with a token, a dashboard and the
// login limiter's clock at *now.
func limitedHandler(now *time.Time) http.Handler {
	d := New(manage.New(objstore.NewMem()), nil)
	d.loginNow = func() time.Time { return *now }
	d.RequireToken(adminToken)
	d.UseDashboard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page") }))
	return d.AdminHandler()
}

func tryBearer(h http.Handler, client, token string) int {
	req := httptest.NewRequest("GET", "/v1/volumes", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.RemoteAddr = client
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code
}

func tryForm(h http.Handler, client, token string) int {
	req := httptest.NewRequest("POST", "/ui/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.RemoteAddr = client
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code
}

// TestBearerGuessesLimited: wrong bearer tokens count against the
// client's allowance as the login form's do; beyond it, the bearer
// header is no way around the limit (429, the right token included,
// until a refill).
func TestBearerGuessesLimited(t *testing.T) {
	now := time.Unix(1e9, 0)
	h := limitedHandler(&now)
	const client = "192.0.2.9:4444"
	if code := tryBearer(h, client, adminToken); code != http.StatusOK {
		t.Fatalf("the right bearer token: %d, want 200", code)
	}
	for i := range loginBurst {
		if code := tryBearer(h, client, fmt.Sprint("guess", i)); code != http.StatusUnauthorized {
			t.Fatalf("wrong bearer token %d: %d, want 401", i, code)
		}
	}
	if code := tryBearer(h, client, adminToken); code != http.StatusTooManyRequests {
		t.Fatalf("the right bearer token after %d wrong ones: %d, want 429", loginBurst, code)
	}
	if code := tryForm(h, client, adminToken); code != http.StatusTooManyRequests {
		t.Fatalf("the login form after %d wrong bearer tokens: %d, want 429", loginBurst, code)
	}
	if code := tryBearer(h, "192.0.2.10:4444", adminToken); code != http.StatusOK {
		t.Fatalf("another client's right bearer token: %d, want 200", code)
	}
	now = now.Add(loginRefill)
	if code := tryBearer(h, client, adminToken); code != http.StatusOK {
		t.Fatalf("the right bearer token after a refill: %d, want 200", code)
	}
}

// TestLoginLimitIPv6Prefix: the addresses of one IPv6 /64 (which one
// host may hold by the billion) share one allowance, and an IPv4
// client written as an IPv4-mapped IPv6 address is that client.
func TestLoginLimitIPv6Prefix(t *testing.T) {
	now := time.Unix(1e9, 0)
	h := limitedHandler(&now)
	for i := range loginBurst {
		if code := tryForm(h, fmt.Sprintf("[2001:db8:1:2::%x]:5555", i+1), "guess"); code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d, want 401", i, code)
		}
	}
	if code := tryForm(h, "[2001:db8:1:2:ffff::1]:5555", adminToken); code != http.StatusTooManyRequests {
		t.Fatalf("the right token from another address of the /64: %d, want 429", code)
	}
	if code := tryForm(h, "[2001:db8:1:3::1]:5555", adminToken); code != http.StatusSeeOther {
		t.Fatalf("the right token from another /64: %d, want 303", code)
	}
	for range loginBurst {
		tryForm(h, "192.0.2.7:5555", "guess")
	}
	if code := tryForm(h, "[::ffff:192.0.2.7]:5555", adminToken); code != http.StatusTooManyRequests {
		t.Fatalf("the right token from the limited IPv4 client as an IPv4-mapped address: %d, want 429", code)
	}
}

// TestLoginLimitKnownClientsDuringSpread: guesses from more clients
// than the limiter keeps (which then share one allowance) do not lock
// out a client that presented the right token before: a peer daemon's
// handoff or an operator who signed in goes on working.
func TestLoginLimitKnownClientsDuringSpread(t *testing.T) {
	now := time.Unix(1e9, 0)
	h := limitedHandler(&now)
	const peer = "192.0.2.50:7000"
	if code := tryBearer(h, peer, adminToken); code != http.StatusOK {
		t.Fatalf("the peer's bearer token: %d, want 200", code)
	}
	for i := range loginClients + loginBurst + 1 {
		tryBearer(h, fmt.Sprintf("[2001:db8:%x:%x::1]:1", i>>16, i&0xffff), "guess")
	}
	if code := tryBearer(h, "[2001:db9::1]:1", adminToken); code != http.StatusTooManyRequests {
		t.Fatalf("a new client's token while guesses come from everywhere: %d, want 429 (the shared allowance)", code)
	}
	if code := tryBearer(h, peer, adminToken); code != http.StatusOK {
		t.Fatalf("the peer's bearer token while guesses come from everywhere: %d, want 200", code)
	}
	if code := tryForm(h, peer, adminToken); code != http.StatusSeeOther {
		t.Fatalf("the peer's sign-in while guesses come from everywhere: %d, want 303", code)
	}
}

// TestLoginLimitKnownClientStillLimited: a client that had the right
// token once (another user behind its address, say) gets no more
// guesses than any other while the limiter is full.
func TestLoginLimitKnownClientStillLimited(t *testing.T) {
	now := time.Unix(1e9, 0)
	h := limitedHandler(&now)
	const peer = "192.0.2.50:7000"
	tryBearer(h, peer, adminToken)
	for i := range loginClients + loginBurst + 1 {
		tryBearer(h, fmt.Sprintf("[2001:db8:%x:%x::1]:1", i>>16, i&0xffff), "guess")
	}
	for i := range loginBurst {
		if code := tryBearer(h, peer, fmt.Sprint("guess", i)); code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d from the known client: %d, want 401", i, code)
		}
	}
	if code := tryBearer(h, peer, "guess"); code != http.StatusTooManyRequests {
		t.Fatalf("a wrong token from the known client beyond the burst: %d, want 429", code)
	}
}

// TestUICookieUnixSocket: on an admin API listening on a unix socket
// (no port), signing in sets a cookie that opens the dashboard.
func TestUICookieUnixSocket(t *testing.T) {
	d := New(manage.New(objstore.NewMem()), nil)
	d.RequireToken(adminToken)
	d.UseDashboard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page") }))
	sock := t.TempDir() + "/admin.sock"
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Skip(err)
	}
	srv := &http.Server{Handler: d.AdminHandler()}
	go srv.Serve(ln)
	defer srv.Close()
	c := &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.PostForm("http://localhost/ui/login", url.Values{"token": {adminToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cs := resp.Cookies()
	if resp.StatusCode != http.StatusSeeOther || len(cs) != 1 {
		t.Fatalf("sign-in: %d, cookies %v", resp.StatusCode, cs)
	}
	req, _ := http.NewRequest("GET", "http://localhost/ui/volumes", nil)
	req.AddCookie(cs[0])
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the dashboard with the cookie %s: %d, want 200", cs[0].Name, resp.StatusCode)
	}
}
