package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

var ctx = context.Background()

// faultProxy stands between the store and a real server; fault, if set,
// handles a request instead of forwarding it (forward does that).
type faultProxy struct {
	rp    *httputil.ReverseProxy
	mu    sync.Mutex
	fault func(w http.ResponseWriter, r *http.Request, forward func(w http.ResponseWriter, r *http.Request)) bool
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	f := p.fault
	p.mu.Unlock()
	if f != nil && f(w, r, p.rp.ServeHTTP) {
		return
	}
	p.rp.ServeHTTP(w, r)
}

func (p *faultProxy) set(f func(w http.ResponseWriter, r *http.Request, forward func(w http.ResponseWriter, r *http.Request)) bool) {
	p.mu.Lock()
	p.fault = f
	p.mu.Unlock()
}

// proxied returns a store reaching versitygw through a fault proxy, and a
// store reaching it directly under the same prefix.
func proxied(t *testing.T) (*Store, *Store, *faultProxy) {
	c := TestServer(t, "versitygw")
	direct := OpenTestStore(t, c)
	target, _ := url.Parse(c.Endpoint)
	p := &faultProxy{rp: httputil.NewSingleHostReverseProxy(target)}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	pc := c
	pc.Endpoint, pc.Prefix, pc.Attempts = srv.URL, direct.cfg.Prefix, 4
	s, err := OpenConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, direct, p
}

// dropAnswer forwards the request, then breaks the connection instead of
// answering: the request took effect, the client cannot know.
func dropAnswer(w http.ResponseWriter, r *http.Request, forward func(w http.ResponseWriter, r *http.Request)) {
	forward(httptest.NewRecorder(), r)
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

func isPut(r *http.Request) bool {
	return r.Method == http.MethodPut && !strings.Contains(r.URL.Path, "~probe")
}

func refusal(err error) bool {
	for _, e := range []error{objstore.ErrConflict, objstore.ErrExists, objstore.ErrNotFound, objstore.ErrNoSpace, objstore.ErrBadName, objstore.ErrReadOnly, objstore.ErrClosed, objstore.ErrUnsupport} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// TestSlowDownRetried: 503 SlowDown answers are retried, conditional
// writes included (they certainly did not land).
func TestSlowDownRetried(t *testing.T) {
	s, _, p := proxied(t)
	var n atomic.Int32
	p.set(func(w http.ResponseWriter, r *http.Request, _ func(http.ResponseWriter, *http.Request)) bool {
		if n.Add(1)%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>slow down</Message></Error>`))
			return true
		}
		return false
	})
	v, err := s.Create(ctx, "a", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Swap(ctx, "a", []byte("y"), v); err != nil {
		t.Fatal(err)
	}
	if b, _, err := s.Get(ctx, "a"); err != nil || string(b) != "y" {
		t.Fatalf("Get = %q, %v", b, err)
	}
	if n.Load() < 6 {
		t.Fatalf("%d requests: the 503s were not retried", n.Load())
	}
}

// TestLostAnswerAdopted: a conditional write whose answer was lost landed;
// its retry is refused (412) by the write itself, and the store sees its
// own nonce there: success, with the version the object has.
func TestLostAnswerAdopted(t *testing.T) {
	s, direct, p := proxied(t)
	for _, op := range []string{"create", "swap"} {
		var old objstore.Version
		if op == "swap" {
			old = must(t)(direct.Put(ctx, op, []byte("old")))
		}
		var once atomic.Bool
		p.set(func(w http.ResponseWriter, r *http.Request, forward func(http.ResponseWriter, *http.Request)) bool {
			if isPut(r) && once.CompareAndSwap(false, true) {
				dropAnswer(w, r, forward)
				return true
			}
			return false
		})
		var v objstore.Version
		var err error
		if op == "create" {
			v, err = s.Create(ctx, op, []byte("mine"))
		} else {
			v, err = s.Swap(ctx, op, []byte("mine"), old)
		}
		if err != nil {
			t.Fatalf("%s whose answer was lost: %v", op, err)
		}
		if b, dv, err := direct.Get(ctx, op); err != nil || string(b) != "mine" || dv != v {
			t.Fatalf("%s: object %q v%x %v; the store said v%x", op, b, dv, err, v)
		}
	}
}

// TestLostAnswerOverwritten: the lost write landed and another client
// replaced it before the retry: the outcome is unknown to the store, and
// it must not say "refused".
func TestLostAnswerOverwritten(t *testing.T) {
	s, direct, p := proxied(t)
	var once atomic.Bool
	p.set(func(w http.ResponseWriter, r *http.Request, forward func(http.ResponseWriter, *http.Request)) bool {
		if isPut(r) && once.CompareAndSwap(false, true) {
			forward(httptest.NewRecorder(), r)
			if _, err := direct.Put(ctx, "c", []byte("theirs")); err != nil {
				t.Error(err)
			}
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return true
		}
		return false
	})
	_, err := s.Create(ctx, "c", []byte("mine"))
	if err == nil || refusal(err) {
		t.Fatalf("Create whose write landed and was replaced: %v; want an error that is no refusal", err)
	}
}

// TestServerErrorsGiveUp: 500s are retried up to the attempts, then the
// error says nothing was refused.
func TestServerErrorsGiveUp(t *testing.T) {
	s, _, p := proxied(t)
	var n atomic.Int32
	p.set(func(w http.ResponseWriter, r *http.Request, _ func(http.ResponseWriter, *http.Request)) bool {
		n.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
		return true
	})
	_, err := s.Create(ctx, "d", []byte("x"))
	if err == nil || refusal(err) || n.Load() != 4 {
		t.Fatalf("Create against a failing server: %v after %d requests; want a non-refusal after 4", err, n.Load())
	}
	if _, _, err := s.Get(ctx, "d"); err == nil || refusal(err) {
		t.Fatalf("Get against a failing server: %v", err)
	}
}

// TestLateRequest: a request held until the client gave up on it (its
// attempt timed out) lands afterwards; the store's retry already
// succeeded, and the late one is refused by the server.
func TestLateRequest(t *testing.T) {
	s, direct, p := proxied(t)
	s.cfg.Timeout = time.Second // per attempt; the held request waits for the client to give up
	var once atomic.Bool
	landed := make(chan struct{})
	p.set(func(w http.ResponseWriter, r *http.Request, forward func(http.ResponseWriter, *http.Request)) bool {
		if isPut(r) && once.CompareAndSwap(false, true) {
			// Once the body is read, the server notices the client
			// hanging up.
			body, _ := io.ReadAll(r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(20 * time.Second):
				t.Error("the client did not give up the held request")
			}
			r2 := r.Clone(context.Background())
			r2.Body = io.NopCloser(bytes.NewReader(body))
			forward(httptest.NewRecorder(), r2)
			close(landed)
			return true
		}
		return false
	})
	v, err := s.Create(ctx, "late", []byte("mine"))
	if err != nil {
		t.Fatal(err)
	}
	<-landed
	if b, dv, err := direct.Get(ctx, "late"); err != nil || string(b) != "mine" || dv != v {
		t.Fatalf("after the late request: %q v%x %v, want mine v%x", b, dv, err, v)
	}
}

func TestNoConditional(t *testing.T) {
	c := TestServer(t, "versitygw")
	c.NoConditional = true
	s := OpenTestStore(t, c)
	v, err := s.Put(ctx, "x", []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	_, err1 := s.Create(ctx, "y", nil)
	_, err2 := s.Swap(ctx, "x", nil, v)
	err3 := s.DeleteVersion(ctx, "x", v)
	err4 := objstore.CheckCAS(s)
	for _, err := range []error{err1, err2, err3, err4} {
		if !errors.Is(err, objstore.ErrUnsupport) || !strings.Contains(err.Error(), "split configuration") {
			t.Fatalf("conditional write on a store without them: %v", err)
		}
	}
	if b, _, err := s.Get(ctx, "x"); err != nil || string(b) != "data" {
		t.Fatalf("Get = %q, %v", b, err)
	}
}

func must(t *testing.T) func(objstore.Version, error) objstore.Version {
	return func(v objstore.Version, err error) objstore.Version {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// TestLateAttemptNewVersion: an attempt the store gave up on (timed out)
// and retried may still land after the operation returned, after other
// writes. It must land as a version never seen before, not as the
// version the retry returned: else a holder of that version could swap
// or delete-version twice from it (ABA).
func TestLateAttemptNewVersion(t *testing.T) {
	for _, op := range []string{"put", "create"} {
		t.Run(op, func(t *testing.T) {
			s, direct, p := proxied(t)
			s.cfg.Timeout = time.Second
			var once atomic.Bool
			release, landed := make(chan struct{}), make(chan struct{})
			p.set(func(w http.ResponseWriter, r *http.Request, forward func(http.ResponseWriter, *http.Request)) bool {
				if isPut(r) && once.CompareAndSwap(false, true) {
					body, _ := io.ReadAll(r.Body)
					<-r.Context().Done() // the client gave up this attempt
					go func() {
						<-release
						r2 := r.Clone(context.Background())
						r2.Body = io.NopCloser(bytes.NewReader(body))
						forward(httptest.NewRecorder(), r2)
						close(landed)
					}()
					return true
				}
				return false
			})
			var v objstore.Version
			if op == "put" {
				v = must(t)(s.Put(ctx, "x", []byte("mine")))
				// Another client moves the object on from v.
				must(t)(direct.Swap(ctx, "x", []byte("next"), v))
			} else {
				v = must(t)(s.Create(ctx, "x", []byte("mine")))
				// Another client deletes it (a plain Delete leaves no
				// tombstone: the late If-None-Match can land).
				if err := direct.Delete(ctx, "x"); err != nil {
					t.Fatal(err)
				}
			}
			close(release)
			<-landed
			in, err := direct.Stat(ctx, "x")
			if err != nil {
				t.Fatalf("the late attempt did not land: %v", err)
			}
			if in.Version == v {
				_, err := direct.Swap(ctx, "x", []byte("stale"), v)
				t.Fatalf("the late attempt brought version %x back (a Swap from it now: %v)", v, err)
			}
		})
	}
}

// TestStripeWaitCancelled: a conditional write waiting for another of a
// name that shares its lock (this process's serialization of conditional
// writes) returns when its context is done, not when the other ends.
func TestStripeWaitCancelled(t *testing.T) {
	s, _, p := proxied(t)
	other := ""
	for i := 0; other == ""; i++ {
		if n := fmt.Sprintf("b%d", i); s.stripe(n) == s.stripe("a") {
			other = n
		}
	}
	held, release := make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	p.set(func(w http.ResponseWriter, r *http.Request, forward func(http.ResponseWriter, *http.Request)) bool {
		if isPut(r) && once.CompareAndSwap(false, true) {
			close(held)
			<-release
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	defer close(release)
	go s.Create(ctx, "a", []byte("x"))
	<-held
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	done := make(chan error, 1)
	go func() { _, err := s.Create(cctx, other, []byte("y")); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Create with a cancelled context: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Create with a cancelled context waits for another name's write")
	}
}

// TestLostAnswersTwoHosts: one host's Swaps lose their answers (the PUT
// lands, the connection breaks), another host swaps from the same
// version at the same time: at most one reports success, the object
// holds the data of the one that did, and a conflict reported means the
// write is not there.
func TestLostAnswersTwoHosts(t *testing.T) {
	s, direct, p := proxied(t)
	var drop atomic.Bool // the next conditional PUT's answer
	p.set(func(w http.ResponseWriter, r *http.Request, forward func(http.ResponseWriter, *http.Request)) bool {
		if isPut(r) && r.Header.Get("If-Match") != "" && drop.CompareAndSwap(true, false) {
			dropAnswer(w, r, forward)
			return true
		}
		return false
	})
	outcomes := map[string]int{}
	defer func() { t.Logf("outcomes: %v", outcomes) }()
	for round := 0; round < 40; round++ {
		v := must(t)(direct.Put(ctx, "x", []byte("old")))
		if _, err := s.Stat(ctx, "x"); err != nil { // A knows v's ETag too
			t.Fatal(err)
		}
		drop.Store(true)
		var wg sync.WaitGroup
		var errA, errB error
		wg.Add(2)
		go func() { defer wg.Done(); _, errA = s.Swap(ctx, "x", []byte("A"), v) }()
		go func() { defer wg.Done(); _, errB = direct.Swap(ctx, "x", []byte("B"), v) }()
		wg.Wait()
		b, _, err := direct.Get(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		if errA == nil && errB == nil {
			t.Fatalf("round %d: both swaps from one version won", round)
		}
		for _, c := range []struct {
			who string
			err error
		}{{"A", errA}, {"B", errB}} {
			if c.err == nil && string(b) != c.who {
				t.Fatalf("round %d: %s won, the object holds %q", round, c.who, b)
			}
			if errors.Is(c.err, objstore.ErrConflict) && string(b) == c.who {
				t.Fatalf("round %d: %s was told conflict, the object holds its write", round, c.who)
			}
			switch {
			case c.err == nil:
				outcomes[c.who+" won"]++
			case errors.Is(c.err, objstore.ErrConflict):
				outcomes[c.who+" conflict"]++
			default:
				outcomes[c.who+" unknown"]++
			}
		}
	}
}

// TestChunkedRead: a ranged GET answered without Content-Length (chunked,
// as some proxies do) reads the object's bytes, not zeros.
func TestChunkedRead(t *testing.T) {
	s, direct, p := proxied(t)
	must(t)(direct.Put(ctx, "x", []byte("hello world")))
	p.set(func(w http.ResponseWriter, r *http.Request, forward func(http.ResponseWriter, *http.Request)) bool {
		if r.Method != http.MethodGet || r.Header.Get("Range") == "" {
			return false
		}
		rec := httptest.NewRecorder()
		forward(rec, r)
		for k, vs := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = vs
			}
		}
		w.WriteHeader(rec.Code)
		b := rec.Body.Bytes()
		w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush() // no Content-Length: chunked
		w.Write(b[len(b)/2:])
		return true
	})
	for _, tc := range []struct {
		off  int64
		n    int
		want string
	}{{0, 5, "hello"}, {6, 8, "world\x00\x00\x00"}, {3, 20, "lo world" + strings.Repeat("\x00", 12)}} {
		b := make([]byte, tc.n)
		if err := s.ReadAt(ctx, "x", b, tc.off); err != nil || string(b) != tc.want {
			t.Errorf("ReadAt(%d, %d) = %q, %v; want %q", tc.off, tc.n, b, err, tc.want)
		}
	}
}

// TestLateDeleteAttempt: a Delete attempt given up on (timed out) and
// retried may land after Delete returned, after another host created the
// name again; it must not delete that new object. (Where DELETE ignores
// If-Match, radosgw 16, nothing can stop it: see the package doc.)
func TestLateDeleteAttempt(t *testing.T) {
	s, direct, p := proxied(t)
	if !s.Conditional().Delete {
		t.Skip("this server's DELETE takes no condition")
	}
	s.cfg.Timeout = time.Second
	var once atomic.Bool
	release, landed := make(chan struct{}), make(chan struct{})
	p.set(func(w http.ResponseWriter, r *http.Request, forward func(http.ResponseWriter, *http.Request)) bool {
		if r.Method == http.MethodDelete && !strings.Contains(r.URL.Path, "~probe") && once.CompareAndSwap(false, true) {
			<-r.Context().Done() // the client gave up this attempt
			go func() {
				<-release
				forward(httptest.NewRecorder(), r.Clone(context.Background()))
				close(landed)
			}()
			return true
		}
		return false
	})
	must(t)(direct.Put(ctx, "x", []byte("old")))
	if err := s.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	v := must(t)(direct.Create(ctx, "x", []byte("new")))
	close(release)
	<-landed
	if in, err := direct.Stat(ctx, "x"); err != nil || in.Version != v {
		t.Fatalf("created at %x after the Delete returned, then: %+v, %v", v, in, err)
	}
}

// TestConditionalRequestConflictRetried: AWS answers a conditional write
// that met another in flight with 409 ConditionalRequestConflict, "retry
// the request": nothing was decided, so it is no failed condition.
func TestConditionalRequestConflictRetried(t *testing.T) {
	s, direct, p := proxied(t)
	v := must(t)(direct.Put(ctx, "x", []byte("old")))
	var n atomic.Int32
	p.set(func(w http.ResponseWriter, r *http.Request, _ func(http.ResponseWriter, *http.Request)) bool {
		if isPut(r) && n.Add(1) == 1 {
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code><Message>A conflicting operation occurred. If using PutObject you can retry the request.</Message></Error>`))
			return true
		}
		return false
	})
	if _, err := s.Swap(ctx, "x", []byte("new"), v); err != nil {
		t.Fatalf("Swap after a 409 ConditionalRequestConflict: %v", err)
	}
	n.Store(0)
	if _, err := s.Create(ctx, "y", []byte("new")); err != nil {
		t.Fatalf("Create after a 409 ConditionalRequestConflict: %v", err)
	}
}
