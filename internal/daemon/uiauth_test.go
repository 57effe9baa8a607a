package daemon

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestDashboardAuth: with a token, the dashboard (/ui/) refuses a
// request without it (401 and a login form), accepts it as a bearer
// token, as ?token= (which sets the cookie and redirects to the URL
// without it) and from the login form; the cookie opens GET /ui/ only,
// not the rest of the admin API.
func TestDashboardAuth(t *testing.T) {
	d := New(manage.New(objstore.NewMem()), nil)
	d.RequireToken(adminToken)
	d.UseDashboard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page "+r.URL.Path) }))
	srv := httptest.NewServer(d.AdminHandler())
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, cookie *http.Cookie) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}

	resp, body := get("/ui/volumes", nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "<form") {
		t.Fatalf("/ui/ without a token: %d %q, want 401 and a login form", resp.StatusCode, body)
	}
	if resp, _ := get("/ui/volumes?token=wrong", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/ui/ with a wrong ?token=: %d, want 401", resp.StatusCode)
	}
	if resp, _ := get("/ui/volumes", &http.Cookie{Name: UICookieName(port), Value: adminToken}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/ui/ with the token itself as the cookie: %d, want 401 (the cookie holds a value derived from it)", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/ui/space", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/ui/ with the bearer token: %v %v", resp, err)
	}

	resp, _ = get("/ui/volumes?after=b&token="+adminToken, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/volumes?after=b" {
		t.Fatalf("?token=: %d to %q, want 303 to /ui/volumes?after=b", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == UICookieName(port) {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || strings.Contains(cookie.Value, adminToken) {
		t.Fatalf("?token= set cookie %+v; want an HttpOnly, SameSite=Strict cookie not holding the token", cookie)
	}
	if resp, body := get("/ui/volumes", cookie); resp.StatusCode != 200 || body != "page /ui/volumes" {
		t.Fatalf("/ui/ with the cookie: %d %q", resp.StatusCode, body)
	}
	for _, p := range []string{"/v1/volumes", "/metrics"} {
		if resp, _ := get(p, cookie); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s with the dashboard's cookie: %d, want 401", p, resp.StatusCode)
		}
	}
	hreq, _ := http.NewRequest("POST", srv.URL+lease.HandoffPath+"?volume=x", nil)
	hreq.AddCookie(cookie)
	if resp, err := noRedirect.Do(hreq); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a handoff with the dashboard's cookie: %v %v, want 401", resp, err)
	}

	for _, c := range []struct {
		token string
		code  int
	}{{"wrong", http.StatusUnauthorized}, {adminToken, http.StatusSeeOther}} {
		resp, err := noRedirect.PostForm(srv.URL+"/ui/login", url.Values{"token": {c.token}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("login with %q: %d, want %d", c.token, resp.StatusCode, c.code)
		}
		if c.code == http.StatusSeeOther && (len(resp.Cookies()) != 1 || resp.Cookies()[0].Value != cookie.Value) {
			t.Errorf("login set %v, want the dashboard's cookie", resp.Cookies())
		}
	}
}

// TestDashboardOpenOnLoopback: without a token the dashboard is open, as
// the rest of the admin API.
func TestDashboardOpenOnLoopback(t *testing.T) {
	d := New(manage.New(objstore.NewMem()), nil)
	d.UseDashboard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page") }))
	srv := httptest.NewServer(d.AdminHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/ui/volumes")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/ui/ without a token on an open admin API: %v %v", resp, err)
	}
}
