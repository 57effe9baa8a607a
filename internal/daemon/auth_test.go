package daemon

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestAdminAuth: with a token, requests without it or with another get
// 401 and change nothing (a handoff is not run), /healthz stays open,
// and a node asking with the wrong token hears why.
func TestAdminAuth(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	n := newNode(t, s, "a", time.Hour)
	n.d.UseMetrics(NewMetrics(MetricsConfig{}))
	n.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	e := n.open(t, "v")
	e.WriteAt(ctx, []byte("x"), 0, false)
	base := "http://" + n.admin.Listener.Addr().String()
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + adminToken + "x", "Basic " + adminToken, adminToken} {
		for _, c := range []struct{ method, path string }{
			{"POST", lease.HandoffPath + "?volume=" + e.h.id.String()},
			{"GET", "/v1/volumes"},
			{"GET", "/metrics"},
		} {
			req, _ := http.NewRequest(c.method, base+c.path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s with %q: %d, want 401", c.method, c.path, auth, resp.StatusCode)
			}
		}
	}
	if role(n, "v") != "writer" {
		t.Fatalf("an unauthenticated handoff request ran: role %s", role(n, "v"))
	}
	if resp, err := http.Get(base + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz without a token: %v, %v", resp, err)
	}
	if resp, err := authGet(base + "/metrics"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/metrics with the token: %v, %v", resp, err)
	}

	// Another node asking with the wrong token hears why, and the volume
	// stays here.
	ask := lease.HTTPAskToken(time.Second, "wrong")
	if err := ask(ctx, lease.Record{Addr: n.admin.Listener.Addr().String()}, e.h.id.String()); !errors.Is(err, lease.ErrUnauthorized) {
		t.Fatalf("a handoff asked with the wrong token: %v, want lease.ErrUnauthorized", err)
	}
	if role(n, "v") != "writer" {
		t.Fatalf("a handoff asked with the wrong token ran: role %s", role(n, "v"))
	}
}

// TestRunAdminBeyondLoopback: Run refuses an admin API that listens
// beyond loopback without a token; with one it serves, and refuses
// requests without it.
func TestRunAdminBeyondLoopback(t *testing.T) {
	cfg := func(token string) Config {
		return Config{Manager: manage.New(objstore.NewMem()), Store: "mem://t", Node: "n", AdminListen: "0.0.0.0:0",
			AdminAdvertise: "127.0.0.1:1", AdminToken: token, LeaseTTL: 5 * time.Second, MaxClockDrift: 500 * time.Millisecond, Logf: t.Logf}
	}
	var ce *ConfigError
	if err := Run(context.Background(), cfg("")); !errors.As(err, &ce) || !strings.Contains(err.Error(), "token") {
		t.Fatalf("Run beyond loopback without a token: %v; want a *ConfigError about the token", err)
	}
	addr := make(chan string, 1)
	c := cfg("secret")
	c.Logger = LogfLogger(func(format string, args ...any) {
		line := strings.TrimSpace(format)
		if len(args) == 1 {
			line, _ = args[0].(string)
		}
		if i := strings.Index(line, `msg="admin API"`); i >= 0 {
			if j := strings.Index(line, "listen="); j >= 0 {
				addr <- strings.Fields(line[j+len("listen="):])[0]
			}
		}
	})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c) }()
	var a string
	select {
	case a = <-addr:
	case err := <-done:
		t.Fatalf("Run with a token: %v", err)
	}
	port := a[strings.LastIndex(a, ":"):]
	resp, err := http.Get("http://127.0.0.1" + port + "/v1/volumes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a request without the token: %d, want 401", resp.StatusCode)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
