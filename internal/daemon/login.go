package daemon

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// constantTimeCompare is subtle.ConstantTimeCompare (tests watch it).
var constantTimeCompare = subtle.ConstantTimeCompare

// tokenEqual compares a presented credential with a secret in a time
// that tells neither's length: it compares their SHA-256 digests.
func tokenEqual(presented, secret string) bool {
	a, b := sha256.Sum256([]byte(presented)), sha256.Sum256([]byte(secret))
	return constantTimeCompare(a[:], b[:]) == 1
}

// UICookieName is the name of the dashboard's cookie on the admin API
// listening on port: browsers send a host's cookies to all its ports,
// so that two daemons on one host (or another service there) keep
// theirs apart.
func UICookieName(port string) string { return UICookie + "_" + port }

// uiCookieName is the cookie's name for r's listener (UICookie if r did
// not come through one).
func uiCookieName(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if _, port, err := net.SplitHostPort(a.String()); err == nil {
			return UICookieName(port)
		}
	}
	return UICookie
}

// The login form, ?token= and the bearer header take at most loginBurst
// wrong tokens from a client (an IPv4 address, an IPv6 /64) at once, and one more each loginRefill; a client
// beyond gets 429, the right token included, until then. The limiter
// of a listener keeps loginClients clients; beyond, they share one
// allowance, but for those that presented the right token before.
const (
	loginBurst   = 10
	loginRefill  = 6 * time.Second
	loginClients = 1024
)

type loginLimiter struct {
	now func() time.Time

	mu       sync.Mutex
	clients  map[string]*allowance
	overflow allowance
	// known are the clients that presented the right token (at most
	// loginClients; the least recent goes): one without an allowance of
	// its own does not share overflow, which guesses from many clients
	// may have used up.
	known map[string]time.Time
}

// allowance is what a client may still try: tokens as of at.
type allowance struct {
	tokens float64
	at     time.Time
}

func newLoginLimiter(now func() time.Time) *loginLimiter {
	if now == nil {
		now = time.Now
	}
	return &loginLimiter{now: now, clients: map[string]*allowance{}, overflow: allowance{tokens: loginBurst}, known: map[string]time.Time{}}
}

// refill brings a up to now.
func (a *allowance) refill(now time.Time) {
	if !a.at.IsZero() {
		a.tokens = min(loginBurst, a.tokens+float64(now.Sub(a.at))/float64(loginRefill))
	}
	a.at = now
}

// entry returns client's allowance, refilled; nil for a client without
// one (a full allowance) unless add. Clients beyond loginClients share
// l.overflow, but for known ones, which get their own (so l.clients
// holds at most 2*loginClients). The caller holds l.mu.
func (l *loginLimiter) entry(client string, add bool) *allowance {
	now := l.now()
	a := l.clients[client]
	_, known := l.known[client]
	if a == nil && len(l.clients) >= loginClients && add {
		for k, o := range l.clients {
			if o.refill(now); o.tokens >= loginBurst {
				delete(l.clients, k) // as good as absent
			}
		}
	}
	switch {
	case a != nil:
	case len(l.clients) >= loginClients && !(known && add):
		a = &l.overflow
	case !add:
		return nil
	default:
		a = &allowance{tokens: loginBurst}
		l.clients[client] = a
	}
	a.refill(now)
	return a
}

// allow reports whether client may try a token now.
func (l *loginLimiter) allow(client string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.known[client]; ok && l.clients[client] == nil {
		return true
	}
	a := l.entry(client, false)
	return a == nil || a.tokens >= 1
}

// succeed notes that client presented the right token.
func (l *loginLimiter) succeed(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.known[client]; !ok && len(l.known) >= loginClients {
		var oldest string
		var at time.Time
		for k, t := range l.known {
			if oldest == "" || t.Before(at) {
				oldest, at = k, t
			}
		}
		delete(l.known, oldest)
	}
	l.known[client] = l.now()
}

// fail counts a wrong token of client.
func (l *loginLimiter) fail(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.entry(client, true)
	a.tokens = max(0, a.tokens-1)
}

// clientIP is the client of r as the limiter counts it: its IPv4
// address, or the /64 of its IPv6 address (one host may hold all of a
// /64's addresses).
func clientIP(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		h = r.RemoteAddr
	}
	a, err := netip.ParseAddr(h)
	if err != nil {
		return h
	}
	if a = a.Unmap().WithZone(""); a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return a.String()
}

func tooManyLogins(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(int(loginRefill/time.Second)))
	loginForm(w, http.StatusTooManyRequests, "Too many wrong tokens from this address: wait a little.")
}
