package nbd

import (
	"context"
	"strings"
	"testing"
)

// panicExport panics in ReadAt and BlockStatus.
type panicExport struct{ *memExport }

func (p panicExport) ReadAt(ctx context.Context, b []byte, off int64) error {
	var m map[string]int
	m["x"]++ // a nil map write: a bug in an export
	return nil
}

func (p panicExport) BlockStatus(ctx context.Context, off, n int64) ([]Extent, error) {
	panic("block status exploded")
}

// panicExports opens "panic" as a panicExport and panics on "boom".
type panicExports struct{ memExports }

func (e panicExports) Open(ctx context.Context, name string) (Export, func(), error) {
	switch name {
	case "boom":
		panic("open exploded")
	case "panic":
		return panicExport{e.memExports["rw"]}, func() {}, nil
	}
	return e.memExports.Open(ctx, name)
}

// TestPanicInRequest: a request whose export panics gets EIO and the
// panic is logged with its stack; the connection and the server go on.
func TestPanicInRequest(t *testing.T) {
	s, exps := newTestServer(t)
	s.Exports = panicExports{exps}
	var log logBuffer
	s.Warnf = log.logf
	c := dial(t, s)
	c.open("panic")
	c.request(cmdRead, 0, 1, 0, 512, nil)
	if e, _ := c.reply(1); e != EIO {
		t.Fatalf("read that panicked: errno %d, want EIO", e)
	}
	c.request(cmdBlockStatus, 0, 2, 0, 512, nil)
	if e, _ := c.reply(2); e != EIO {
		t.Fatalf("block status that panicked: errno %d, want EIO", e)
	}
	c.request(cmdWrite, 0, 3, 0, 2, []byte("ok"))
	if e, _ := c.reply(3); e != 0 {
		t.Fatalf("write after a panic: errno %d", e)
	}
	if l := log.String(); !strings.Contains(l, "panic") || !strings.Contains(l, "assignment to entry in nil map") ||
		!strings.Contains(l, "goroutine") || !strings.Contains(l, "panicExport") {
		t.Fatalf("panic not logged with its stack:\n%s", l)
	}
	c2 := dial(t, s)
	c2.open("rw")
	c2.request(cmdRead, 0, 1, 0, 2, nil)
	if e, data := c2.reply(1); e != 0 || string(data[8:]) != "ok" {
		t.Fatalf("another connection after a panic: errno %d %q", e, data)
	}
}

// TestPanicInHandshake: a panic while opening an export ends that
// connection only.
func TestPanicInHandshake(t *testing.T) {
	s, exps := newTestServer(t)
	s.Exports = panicExports{exps}
	var log logBuffer
	s.Warnf = log.logf
	c := dial(t, s)
	c.hello()
	c.option(optGo, goData("boom"))
	if _, err := c.nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection kept after a panic in the handshake")
	}
	if l := log.waitFor("open exploded", "goroutine"); !strings.Contains(l, "open exploded") || !strings.Contains(l, "goroutine") {
		t.Fatalf("panic not logged with its stack:\n%s", l)
	}
	c2 := dial(t, s)
	c2.open("rw")
	c2.request(cmdRead, 0, 1, 0, 2, nil)
	if e, _ := c2.reply(1); e != 0 {
		t.Fatalf("another connection after a panic: errno %d", e)
	}
}
