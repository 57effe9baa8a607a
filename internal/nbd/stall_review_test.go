package nbd

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// TestStalledWritePayloadDisconnected (review of issue 10 #10): a client
// that sends a WRITE header and part of its data, then nothing, holds the
// request's buffer (up to MaxRequest, allocated when the header came) and
// its share of the connection's byte budget. It is disconnected after
// ReplyTimeout, as a client that stops reading replies is, instead of
// holding them for ever.
func TestStalledWritePayloadDisconnected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		length uint32
	}{
		{"write", 512 << 10},
		{"oversized write", 64 << 20}, // over MaxRequest: read and discarded
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(t)
			s.ReplyTimeout = 50 * time.Millisecond
			c := dial(t, s)
			c.open("rw")
			c.request(cmdWrite, 0, 1, 0, tc.length, make([]byte, 1000))
			c.nc.SetDeadline(time.Now().Add(10 * time.Second))
			_, err := io.ReadFull(c.nc, make([]byte, 1))
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("a client that stopped in the middle of a WRITE's data is still connected after 10 s (ReplyTimeout 50 ms)")
			}
		})
	}
}

// TestIdleClientNotDisconnected: between requests a client may be idle
// for as long as it likes (a VM whose disk is not used); the timeout is
// for a request begun and not finished.
func TestIdleClientNotDisconnected(t *testing.T) {
	s, _ := newTestServer(t)
	s.ReplyTimeout = 20 * time.Millisecond
	c := dial(t, s)
	c.open("rw")
	c.request(cmdWrite, 0, 1, 0, 4096, make([]byte, 4096))
	if e, _ := c.reply(1); e != 0 {
		t.Fatalf("write: errno %d", e)
	}
	time.Sleep(200 * time.Millisecond)
	c.nc.SetDeadline(time.Now().Add(10 * time.Second))
	c.request(cmdRead, 0, 2, 0, 4096, nil)
	if e, _ := c.reply(2); e != 0 {
		t.Fatalf("read after an idle time: errno %d", e)
	}
}
