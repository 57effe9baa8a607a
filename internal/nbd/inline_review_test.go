package nbd

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// TestPipelinedBeforeReadingReplies (issue 11 review): a client may send
// its next request before it reads the reply to the previous one (the
// protocol lets replies come in any order, and a client writing a request
// need not be reading at the same time). The server must keep reading
// requests while it writes a reply: one that stops reading until the
// reply is taken deadlocks with such a client, whose write of the next
// request waits for the server to read. net.Pipe has no buffer, so the
// first reply blocks until the client reads, as a reply larger than the
// socket's buffer does on a real connection. The first request, alone in
// flight, is served by the reading goroutine: the watchdog must hand the
// reading on (it deadlocked before there was one).
func TestPipelinedBeforeReadingReplies(t *testing.T) {
	s, _ := newTestServer(t)
	a, b := net.Pipe()
	s.ServeConn(a)
	t.Cleanup(func() { b.Close() })
	c := &client{t: t, nc: b}
	// Bounds a deadlock only; without one this takes milliseconds.
	b.SetDeadline(time.Now().Add(20 * time.Second))
	c.open("rw")
	c.request(cmdRead, 0, 1, 0, 4096, nil) // alone in flight, nothing after it
	c.request(cmdWrite, 0, 2, 8192, 5, []byte("hello"))
	for i := 0; i < 2; i++ {
		c.readAnyReply()
	}
	c.request(cmdRead, 0, 3, 8192, 5, nil)
	if e, data := c.reply(3); e != 0 || !bytes.Equal(data[8:], []byte("hello")) {
		t.Fatalf("read back: errno %d %q", e, data)
	}
}

// readAnyReply reads one reply (simple, or a structured chunk with the
// done flag) and discards it.
func (c *client) readAnyReply() {
	c.t.Helper()
	h := c.read(4)
	switch m := uint32(h[0])<<24 | uint32(h[1])<<16 | uint32(h[2])<<8 | uint32(h[3]); m {
	case magicSimple:
		c.read(12)
	case magicStruct:
		r := c.read(16)
		n := uint32(r[12])<<24 | uint32(r[13])<<16 | uint32(r[14])<<8 | uint32(r[15])
		c.read(int(n))
	default:
		c.t.Fatalf("bad reply magic %x", h)
	}
}

// TestReadNotBehindStalledFlush (issue 11 review): requests run
// concurrently, so a READ sent while a FLUSH is stalled in the store (an
// OSD that stopped, an NFS hang: up to the store's operation timeout) is
// answered without waiting for the FLUSH. A FLUSH alone in flight is
// served by the reading goroutine: without the watchdog handing the
// reading on, the guest's reads would queue behind it.
func TestReadNotBehindStalledFlush(t *testing.T) {
	s, exps := newTestServer(t)
	g := &gateExport{memExport: exps["rw"], gate: make(chan struct{})}
	s.Exports = extraExports{exps, map[string]Export{"gate": g}}
	released := false
	release := func() {
		if !released {
			released = true
			close(g.gate)
		}
	}
	t.Cleanup(release)
	a, b := net.Pipe()
	s.ServeConn(a)
	t.Cleanup(func() { b.Close() })
	c := &client{t: t, nc: b}
	// Bounds a deadlock only; without one this takes milliseconds.
	b.SetDeadline(time.Now().Add(20 * time.Second))
	c.open("gate")
	c.request(cmdFlush, 0, 1, 0, 0, nil) // stalls until released
	c.request(cmdRead, 0, 2, 0, 5, nil)
	if e, _ := c.reply(2); e != 0 {
		t.Fatalf("read beside a stalled flush: errno %d", e)
	}
	release()
	if e, _ := c.reply(1); e != 0 {
		t.Fatalf("flush: errno %d", e)
	}
}

// TestLoneRequestsServedByReader: a client that waits for each reply (a
// guest at queue depth 1: a write, then its flush) has its requests
// served by the goroutine that reads them, with no worker woken for
// each; TestReadNotBehindStalledFlush and TestPipelinedBeforeReadingReplies
// show the reading handed on when such a request takes long.
func TestLoneRequestsServedByReader(t *testing.T) {
	s, _ := newTestServer(t)
	c := dial(t, s)
	c.open("rw")
	for i := range 50 {
		h := uint64(2 * i)
		c.request(cmdWrite, 0, h, uint64(i)*4096, 4096, bytes.Repeat([]byte{byte(i)}, 4096))
		if e, _ := c.reply(h); e != 0 {
			t.Fatalf("write %d: errno %d", i, e)
		}
		c.request(cmdFlush, 0, h+1, 0, 0, nil)
		if e, _ := c.reply(h + 1); e != 0 {
			t.Fatalf("flush %d: errno %d", i, e)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for sc := range s.conns {
		if n := sc.rd.Load().workers.Load(); n != 0 {
			t.Fatalf("%d workers started for requests sent one at a time", n)
		}
	}
}
