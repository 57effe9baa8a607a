package daemon

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestLogsHoldNoToken: a daemon run with a token, asked with wrong
// tokens, with the token in a dashboard URL, and for a handoff with it,
// logs JSON lines none of which holds the token.
func TestLogsHoldNoToken(t *testing.T) {
	const secret = "very-secret-admin-token-4711"
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := manage.New(objstore.NewMem())
	ctx, stop := context.WithCancel(context.Background())
	addr := "127.0.0.1:" + freePort(t)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Manager: m, Store: "mem://t", Node: "n", AdminListen: addr, AdminToken: secret,
			LeaseTTL: 5 * time.Second, MaxClockDrift: 500 * time.Millisecond, Logger: log,
			Dashboard: func(d *Daemon) http.Handler { return http.NotFoundHandler() }})
	}()
	for i := 0; ; i++ {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Run: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, u := range []string{"/ui/volumes?token=" + secret, "/ui/volumes?token=" + secret + "x", "/metrics?token=" + secret} {
		if resp, err := http.Get("http://" + addr + u); err == nil {
			resp.Body.Close()
		}
	}
	lease.HTTPAskToken(time.Second, secret+"x")(context.Background(), lease.Record{Addr: addr}, "00000000000000000000000000000001")
	lease.HTTPAskToken(time.Second, secret)(context.Background(), lease.Record{Addr: addr}, "00000000000000000000000000000001")
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	recs := buf.records(t)
	if len(recs) == 0 {
		t.Fatal("nothing logged")
	}
	buf.mu.Lock()
	defer buf.mu.Unlock()
	if strings.Contains(buf.b.String(), secret) {
		t.Fatalf("the log holds the admin token:\n%s", buf.b.String())
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}
