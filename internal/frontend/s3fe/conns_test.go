package s3fe_test

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/frontend/s3fe"
)

// TestMaxConns: the frontend serves MaxConns connections at once; one
// more waits, unanswered, until one of them closes, then is served.
// What clients make the daemon hold (a block buffer or a few a request)
// is bounded by it.
func TestMaxConns(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := s3fe.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), 2)
	go srv.Serve(l)
	t.Cleanup(func() { l.Close() })
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		held = append(held, c)
	}
	url := "http://" + l.Addr().String() + "/"
	get := func(timeout time.Duration) error {
		c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(300 * time.Millisecond); err == nil {
		t.Fatal("a third connection was served while two were open, with at most 2 at once")
	}
	held[0].Close()
	if err := get(10 * time.Second); err != nil {
		t.Fatalf("once one of the two closed, another connection was not served: %v", err)
	}
}
