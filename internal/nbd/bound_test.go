package nbd

import (
	"context"
	"encoding/binary"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// gateExport is memExport whose Flush waits for gate to close, counting
// the flushes in progress.
type gateExport struct {
	*memExport
	gate     chan struct{}
	in, peak atomic.Int64
}

func (g *gateExport) Flush(ctx context.Context) error {
	n := g.in.Add(1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	<-g.gate
	g.in.Add(-1)
	return nil
}

// extraExports serves memExports and the exports in extra.
type extraExports struct {
	memExports
	extra map[string]Export
}

func (e extraExports) Open(ctx context.Context, name string) (Export, func(), error) {
	if x, ok := e.extra[name]; ok {
		return x, func() {}, nil
	}
	return e.memExports.Open(ctx, name)
}

// requests encodes n requests of typ with no payload.
func requests(typ uint16, off uint64, length uint32, first, n int) []byte {
	b := make([]byte, 0, n*requestSize)
	for i := 0; i < n; i++ {
		b = binary.BigEndian.AppendUint32(b, magicRequest)
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint64(b, uint64(first+i))
		b = binary.BigEndian.AppendUint64(b, off)
		b = binary.BigEndian.AppendUint32(b, length)
	}
	return b
}

// TestZeroWeightRequestsBounded: a client that sends 200,000 requests
// that carry no data (FLUSH) and reads no reply makes the server serve
// at most MaxRequests of them at once, with a goroutine each at most.
func TestZeroWeightRequestsBounded(t *testing.T) {
	s, exps := newTestServer(t)
	g := &gateExport{memExport: exps["rw"], gate: make(chan struct{})}
	s.Exports = extraExports{exps, map[string]Export{"gate": g}}
	opened := false
	t.Cleanup(func() {
		if !opened {
			close(g.gate)
		}
	})
	c := dial(t, s)
	c.open("gate")
	c.nc.SetDeadline(time.Time{})
	base := runtime.NumGoroutine()
	const total, batch = 200_000, 1000
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < total; i += batch {
			if _, err := c.nc.Write(requests(cmdFlush, 0, 0, i, batch)); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	limit := int64(256)
	deadline := time.Now().Add(30 * time.Second)
	for g.in.Load() < limit {
		if p := g.peak.Load(); p > limit {
			t.Fatalf("%d requests in flight, over the bound %d", p, limit)
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d requests in flight after 30 s, want %d", g.in.Load(), limit)
		}
		time.Sleep(time.Millisecond)
	}
	// Give a server that does not bound requests time to show it.
	for i := 0; i < 50; i++ {
		time.Sleep(2 * time.Millisecond)
		if p := g.peak.Load(); p > limit {
			t.Fatalf("%d requests in flight, over the bound %d", p, limit)
		}
	}
	if d := runtime.NumGoroutine() - base; d > int(limit)+16 {
		t.Fatalf("%d more goroutines with %d requests in flight", d, limit)
	}
	// Let them all through, reading the replies now.
	close(g.gate)
	opened = true
	for i := 0; i < total; i++ {
		h := c.read(16)
		if binary.BigEndian.Uint32(h) != magicSimple || binary.BigEndian.Uint32(h[4:]) != 0 {
			t.Fatalf("reply %d: %x", i, h)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if p := g.peak.Load(); p > limit {
		t.Fatalf("%d requests in flight, over the bound %d", p, limit)
	}
}

// TestStuckReaderDisconnected: a client that sends requests and never
// reads the replies is disconnected after ReplyTimeout instead of
// holding the server's buffers and goroutines for ever.
func TestStuckReaderDisconnected(t *testing.T) {
	s, _ := newTestServer(t)
	s.ReplyTimeout = 50 * time.Millisecond
	var log logBuffer
	s.Logf = log.logf
	a, b := net.Pipe()
	s.ServeConn(a)
	t.Cleanup(func() { b.Close() })
	c := &client{t: t, nc: b}
	b.SetDeadline(time.Now().Add(10 * time.Second))
	c.open("rw")
	b.SetDeadline(time.Time{})
	sent := make(chan error, 1)
	go func() {
		for i := 0; ; i += 100 {
			if _, err := b.Write(requests(cmdRead, 0, 4096, i, 100)); err != nil {
				sent <- err
				return
			}
		}
	}()
	select {
	case <-sent:
	case <-time.After(20 * time.Second):
		t.Fatal("a client that reads no reply is still connected after 20 s (ReplyTimeout 50 ms)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("connection still being served: %v", err)
	}
	if l := log.String(); strings.Count(l, "read no reply") != 1 {
		t.Fatalf("want one line saying why the client was disconnected:\n%s", l)
	}
}
