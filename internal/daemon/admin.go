package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/lease"
)

// maxEpochKey bounds the key of an epoch ask, which the writer keeps
// (a move's is a record version, in decimal).
const maxEpochKey = 64

// AdminHandler serves the daemon's admin API, on the address other nodes
// find in this node's leases:
//
//	POST lease.HandoffPath?volume=ID  flush volume ID and release its lease
//	POST lease.EpochPath?volume=ID&at_least=E&key=K
//	                                  begin a new epoch of volume ID, keeping its lease (BeginEpoch)
//	GET  /v1/volumes                  the open volumes and their roles (JSON)
//	GET  /healthz                     "ok"
//	GET  /metrics                     the daemon's metrics (UseMetrics), for Prometheus
//	GET  /ui/...                      the dashboard (UseDashboard), read-only
//
// With a token (RequireToken), every request but /healthz must carry it
// as "Authorization: Bearer TOKEN", or gets 401. A browser may instead
// carry the dashboard's cookie (UICookieName), which opens GET and HEAD
// requests under /ui/ only: POST /ui/login with the form field token, or
// any dashboard URL with ?token=TOKEN, sets it (and the latter
// redirects to the URL without the token); these and the bearer header
// take a few wrong tokens from a client (an IPv6 /64 counts as one),
// then answer 429 for a while (loginBurst). Tokens are
// compared by digest, in a time that does not tell their length. A
// dashboard request without
// either gets 401 and the login form. A browser's cross-origin POST
// (Sec-Fetch-Site or Origin naming another site) gets 403; without a
// token, so does a request for a host other than an IP, localhost or
// the advertised one (AdvertiseHost).
func (d *Daemon) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	logins := newLoginLimiter(d.loginNow)
	if d.dashboard != nil {
		mux.Handle("GET /ui/", d.dashboard)
		mux.HandleFunc("GET /ui/login", func(w http.ResponseWriter, r *http.Request) { loginForm(w, http.StatusOK, "") })
		mux.HandleFunc("POST /ui/login", func(w http.ResponseWriter, r *http.Request) {
			if d.adminToken == "" {
				http.Redirect(w, r, "/ui/", http.StatusSeeOther)
				return
			}
			if !logins.allow(clientIP(r)) {
				tooManyLogins(w)
				return
			}
			if !tokenEqual(r.PostFormValue("token"), d.adminToken) {
				logins.fail(clientIP(r))
				loginForm(w, http.StatusUnauthorized, "That is not the admin token.")
				return
			}
			logins.succeed(clientIP(r))
			d.setUICookie(w, r)
			http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		})
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusFound) })
	}
	mux.HandleFunc("POST "+lease.HandoffPath, func(w http.ResponseWriter, r *http.Request) {
		id, err := blockmap.ParseID(r.URL.Query().Get("volume"))
		if err != nil {
			http.Error(w, fmt.Sprintf("volume: %v", err), http.StatusBadRequest)
			return
		}
		// NB: the flush goes on if the asker gives up waiting: its next
		// request then finds the lease released sooner.
		released, err := d.Handoff(context.WithoutCancel(r.Context()), id)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]any{"volume": id, "released": released})
	})
	mux.HandleFunc("POST "+lease.EpochPath, func(w http.ResponseWriter, r *http.Request) {
		id, err := blockmap.ParseID(r.URL.Query().Get("volume"))
		if err != nil {
			http.Error(w, fmt.Sprintf("volume: %v", err), http.StatusBadRequest)
			return
		}
		atLeast, err := strconv.ParseUint(r.URL.Query().Get("at_least"), 10, 64)
		if err != nil {
			http.Error(w, fmt.Sprintf("at_least: %v", err), http.StatusBadRequest)
			return
		}
		key := r.URL.Query().Get("key")
		if len(key) > maxEpochKey {
			http.Error(w, fmt.Sprintf("key: longer than %d bytes", maxEpochKey), http.StatusBadRequest)
			return
		}
		// NB: as a handoff, the flush goes on if the asker gives up: the
		// epoch it begins is no less good for a later ask.
		e, err := d.BeginEpoch(context.WithoutCancel(r.Context()), id, atLeast, key)
		if errors.Is(err, lease.ErrNotHolder) {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]any{"volume": id, "epoch": e})
	})
	mux.HandleFunc("GET /v1/volumes", func(w http.ResponseWriter, r *http.Request) {
		st := d.Status()
		sort.Slice(st, func(i, j int) bool { return st[i].Name < st[j].Name })
		writeJSON(w, st)
	})
	if d.metrics != nil {
		mux.Handle("GET /metrics", d.metrics.Handler())
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	// A browser's cross-site POST (a form on any web page) must not
	// reach a handoff or the login form: on loopback without a token it
	// would run. Requests without browser headers (nodes, CLIs) pass.
	csrf := http.NewCrossOriginProtection()
	if d.adminToken == "" {
		// Open on loopback: a web page whose name an attacker points at
		// 127.0.0.1 (DNS rebinding) is same-origin to the browser, so
		// only the Host it names tells it from a local client.
		adminHost := d.adminHost
		return csrf.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" && !localHost(r.Host, adminHost) {
				http.Error(w, "daemon: this admin API answers requests for its own address only (an IP, localhost or its advertised host)", http.StatusForbidden)
				return
			}
			mux.ServeHTTP(w, r)
		}))
	}
	cookie := uiCookieValue(d.adminToken)
	return csrf.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			mux.ServeHTTP(w, r)
			return
		}
		if tok, ok := bearerToken(r); ok {
			if !logins.allow(clientIP(r)) {
				w.Header().Set("Retry-After", strconv.Itoa(int(loginRefill/time.Second)))
				http.Error(w, "daemon: too many wrong tokens from this address: wait a little", http.StatusTooManyRequests)
				return
			}
			if tokenEqual(tok, d.adminToken) {
				logins.succeed(clientIP(r))
				mux.ServeHTTP(w, r)
				return
			}
			logins.fail(clientIP(r))
		}
		ui := d.dashboard != nil && (r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/ui/"))
		if ui && r.URL.Path == "/ui/login" {
			mux.ServeHTTP(w, r)
			return
		}
		if ui && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			if c, err := r.Cookie(uiCookieName(r)); err == nil && tokenEqual(c.Value, cookie) {
				mux.ServeHTTP(w, r)
				return
			}
			q := r.URL.Query()
			if q.Has("token") {
				if !logins.allow(clientIP(r)) {
					tooManyLogins(w)
					return
				}
				if !tokenEqual(q.Get("token"), d.adminToken) {
					logins.fail(clientIP(r))
				} else {
					logins.succeed(clientIP(r))
					d.setUICookie(w, r)
					q.Del("token")
					u := *r.URL
					u.RawQuery = q.Encode()
					http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
					return
				}
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="archip admin"`)
			loginForm(w, http.StatusUnauthorized, "")
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="archip admin"`)
		http.Error(w, "daemon: this admin API requires the daemons' bearer token", http.StatusUnauthorized)
	}))
}

// bearerToken returns the bearer token r carries (the scheme in any
// case, RFC 9110 11.1).
func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return tok, ok && strings.EqualFold(scheme, "Bearer")
}

// localHost reports whether host (a request's Host, with or without a
// port) is an IP literal, localhost, or advertised.
func localHost(host, advertised string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return net.ParseIP(host) != nil || h == "localhost" || strings.HasSuffix(h, ".localhost") ||
		(advertised != "" && strings.EqualFold(h, strings.TrimSuffix(advertised, ".")))
}

// AdvertiseHost is the host (name or IP) other nodes reach the admin
// API by. Without a token (RequireToken), the admin API answers only
// requests that name it, an IP or localhost. Call it before serving the
// admin API.
func (d *Daemon) AdvertiseHost(host string) { d.adminHost = host }

// RequireToken makes the admin API (AdminHandler) refuse requests that
// do not carry token. Call it before serving the admin API.
func (d *Daemon) RequireToken(token string) { d.adminToken = token }

// UseDashboard makes the admin API serve h for GET requests under /ui/
// (and redirect / there), with the admin API's access rules. Call it
// before serving the admin API.
func (d *Daemon) UseDashboard(h http.Handler) { d.dashboard = h }

// UICookie is the cookie that opens the dashboard to a browser, named
// for the listener's port (UICookieName). Its value is derived from the
// admin token, not the token itself: it opens the dashboard's pages,
// not the rest of the admin API.
const UICookie = "archip_ui"

func uiCookieValue(token string) string {
	sum := sha256.Sum256([]byte("archip dashboard cookie\x00" + token))
	return hex.EncodeToString(sum[:])
}

func (d *Daemon) setUICookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: uiCookieName(r), Value: uiCookieValue(d.adminToken), Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>archip: sign in</title>
<style>body{font:15px system-ui,sans-serif;margin:4em auto;max-width:28em;color:#222}input{font:inherit;padding:.3em}p.err{color:#b00}</style></head>
<body><h1>archip dashboard</h1>
{{if .}}<p class="err">{{.}}</p>{{end}}
<p>This daemon's admin API requires its token (the one given by <code>--admin-token-file</code> or <code>ARCHIP_ADMIN_TOKEN</code>).</p>
<form method="post" action="/ui/login"><input type="password" name="token" placeholder="admin token" autofocus> <button type="submit">Sign in</button></form>
</body></html>
`))

func loginForm(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	loginPage.Execute(w, msg)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
