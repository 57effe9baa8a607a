package nbd

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// TestConnectionsBounded (review of issue 10 #10): nothing bounded the
// connections a server serves at once, each with its goroutine and its
// 128 KiB of buffers, the handshake's for 30 s and an established one's
// for as long as its client likes: one client opening connections without
// end made the server allocate without end. Beyond MaxConns a connection
// is closed at once, before the greeting, and the refusal is logged;
// once a connection ends, a new one is served.
func TestConnectionsBounded(t *testing.T) {
	s, _ := newTestServer(t)
	s.MaxConns = 2
	var log logBuffer
	s.Warnf = log.logf
	a, b := dial(t, s), dial(t, s)
	a.hello()
	b.hello()
	refused := func() bool {
		c := dial(t, s)
		c.nc.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := io.ReadFull(c.nc, make([]byte, 18))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("a connection beyond MaxConns got neither a greeting nor a close in 10 s")
		}
		c.nc.Close()
		return err != nil
	}
	if !refused() {
		t.Fatalf("a third connection was served with MaxConns 2")
	}
	if l := log.waitFor("connections"); !strings.Contains(l, "connections") {
		t.Errorf("refusal not logged: %q", l)
	}
	a.nc.Close()
	for deadline := time.Now().Add(10 * time.Second); refused(); {
		if time.Now().After(deadline) {
			t.Fatal("a connection is still refused 10 s after one of the two ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
