package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// memExport is an in-memory Export for protocol tests.
type memExport struct {
	mu       sync.Mutex
	data     []byte
	ro       bool
	flushes  int
	failRead error
	lend     bool // open as a lendExport
}

func (m *memExport) Size() int64    { return int64(len(m.data)) }
func (m *memExport) ReadOnly() bool { return m.ro }
func (m *memExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failRead != nil {
		return m.failRead
	}
	copy(p, m.data[off:])
	return nil
}
func (m *memExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
	return nil
}
func (m *memExport) WriteZeroes(ctx context.Context, off, n int64, noHole, fastOnly, fua bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+n])
	return nil
}
func (m *memExport) Trim(ctx context.Context, off, n int64, fua bool) error {
	return m.WriteZeroes(ctx, off, n, false, false, fua)
}
func (m *memExport) Flush(ctx context.Context) error {
	m.mu.Lock()
	m.flushes++
	m.mu.Unlock()
	return nil
}
func (m *memExport) BlockStatus(ctx context.Context, off, n int64) ([]Extent, error) {
	return []Extent{{Length: n / 2, Hole: true}, {Length: n - n/2}}, nil
}
func (m *memExport) snapshot() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.data...)
}

type memExports map[string]*memExport

// lendExport passes what it reads to the server in pieces (ReaderTo), as
// the daemon does on RADOS.
type lendExport struct{ *memExport }

func (l lendExport) ReadTo(ctx context.Context, off, n int64, fn func([][]byte) error) error {
	p := make([]byte, n)
	if err := l.ReadAt(ctx, p, off); err != nil {
		return err
	}
	return fn([][]byte{p[:n/3], nil, p[n/3:]})
}

func (e memExports) Open(ctx context.Context, name string) (Export, func(), error) {
	x, ok := e[name]
	if !ok {
		return nil, nil, ErrUnknownExport
	}
	if x.lend {
		return lendExport{x}, func() {}, nil
	}
	return x, func() {}, nil
}

func (e memExports) List(ctx context.Context) ([]ExportInfo, error) {
	var out []ExportInfo
	for n := range e {
		out = append(out, ExportInfo{Name: n})
	}
	return out, nil
}

func newTestServer(t testing.TB) (*Server, memExports) {
	exps := memExports{
		"rw": {data: bytes.Repeat([]byte{7}, 1<<20)},
		"ro": {data: bytes.Repeat([]byte{9}, 1<<16), ro: true},
	}
	return &Server{Exports: exps, Errno: func(err error) uint32 { return EIO }}, exps
}

// client is a minimal raw-protocol client for tests.
type client struct {
	t  testing.TB
	nc net.Conn
}

func dial(t testing.TB, s *Server) *client {
	a, b := net.Pipe()
	s.ServeConn(a)
	t.Cleanup(func() { b.Close() })
	b.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, nc: b}
}

func (c *client) read(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.nc, b); err != nil {
		c.t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

func (c *client) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) hello() {
	c.t.Helper()
	h := c.read(18)
	if binary.BigEndian.Uint64(h) != magicNBD || binary.BigEndian.Uint64(h[8:]) != magicOpt {
		c.t.Fatalf("bad greeting %x", h)
	}
	c.write(binary.BigEndian.AppendUint32(nil, flagFixedNewstyle|flagNoZeroes))
}

func (c *client) option(opt uint32, data []byte) {
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

// optReply reads one option reply: its type and data.
func (c *client) optReply() (uint32, []byte) {
	c.t.Helper()
	h := c.read(20)
	if binary.BigEndian.Uint64(h) != magicOptReply {
		c.t.Fatalf("bad option reply magic %x", h)
	}
	return binary.BigEndian.Uint32(h[12:]), c.read(int(binary.BigEndian.Uint32(h[16:])))
}

func goData(name string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	return binary.BigEndian.AppendUint16(b, 0)
}

// open reads the greeting and negotiates (see negotiate).
func (c *client) open(name string) uint16 {
	c.t.Helper()
	c.hello()
	return c.negotiate(name)
}

// negotiate negotiates structured replies and base:allocation, then GO.
func (c *client) negotiate(name string) uint16 {
	c.t.Helper()
	c.option(optStructuredReply, nil)
	if typ, _ := c.optReply(); typ != repAck {
		c.t.Fatalf("structured reply: %#x", typ)
	}
	q := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	q = append(q, name...)
	q = binary.BigEndian.AppendUint32(q, 1)
	q = binary.BigEndian.AppendUint32(q, uint32(len(metaBaseAllocation)))
	q = append(q, metaBaseAllocation...)
	c.option(optSetMetaContext, q)
	if typ, _ := c.optReply(); typ != repMetaContext {
		c.t.Fatalf("set meta context: %#x", typ)
	}
	c.optReply() // ACK
	c.option(optGo, goData(name))
	var flags uint16
	for {
		typ, data := c.optReply()
		if typ == repAck {
			return flags
		}
		if typ != repInfo {
			c.t.Fatalf("GO %s: reply %#x %q", name, typ, data)
		}
		if binary.BigEndian.Uint16(data) == infoExport {
			flags = binary.BigEndian.Uint16(data[10:])
		}
	}
}

func (c *client) request(typ, flags uint16, handle, off uint64, n uint32, payload []byte) {
	b := binary.BigEndian.AppendUint32(nil, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, n)
	c.write(append(b, payload...))
}

// reply reads one reply (simple or a structured chunk): errno, data.
func (c *client) reply(handle uint64) (uint32, []byte) {
	c.t.Helper()
	h := c.read(4)
	switch binary.BigEndian.Uint32(h) {
	case magicSimple:
		r := c.read(12)
		if got := binary.BigEndian.Uint64(r[4:]); got != handle {
			c.t.Fatalf("reply for handle %d, want %d", got, handle)
		}
		return binary.BigEndian.Uint32(r), nil
	case magicStruct:
		r := c.read(16)
		typ := binary.BigEndian.Uint16(r[2:])
		if got := binary.BigEndian.Uint64(r[4:]); got != handle {
			c.t.Fatalf("chunk for handle %d, want %d", got, handle)
		}
		data := c.read(int(binary.BigEndian.Uint32(r[12:])))
		if typ == replyTypeError {
			return binary.BigEndian.Uint32(data), data[6:]
		}
		return 0, data
	}
	c.t.Fatalf("bad reply magic %x", h)
	return 0, nil
}

func TestTransmission(t *testing.T) {
	s, exps := newTestServer(t)
	c := dial(t, s)
	flags := c.open("rw")
	if flags&tflagCanMultiConn == 0 || flags&tflagReadOnly != 0 || flags&tflagSendFUA == 0 {
		t.Fatalf("transmission flags %#x", flags)
	}
	c.request(cmdWrite, cmdFlagFUA, 1, 100, 5, []byte("hello"))
	if e, _ := c.reply(1); e != 0 {
		t.Fatalf("write: errno %d", e)
	}
	c.request(cmdRead, 0, 2, 98, 9, nil)
	e, data := c.reply(2)
	if e != 0 || binary.BigEndian.Uint64(data) != 98 || string(data[8:]) != "\x07\x07hello\x07\x07" {
		t.Fatalf("read: errno %d data %q", e, data)
	}
	c.request(cmdBlockStatus, 0, 3, 0, 1<<20, nil)
	e, data = c.reply(3)
	if e != 0 || len(data) != 4+16 || binary.BigEndian.Uint32(data[8:]) != stateHole|stateZero {
		t.Fatalf("block status: errno %d %x", e, data)
	}
	c.request(cmdBlockStatus, cmdFlagReqOne, 4, 0, 1<<20, nil)
	if _, data = c.reply(4); len(data) != 4+8 {
		t.Fatalf("block status with REQ_ONE: %x", data)
	}
	c.request(cmdFlush, 0, 5, 0, 0, nil)
	if e, _ := c.reply(5); e != 0 || exps["rw"].flushes != 1 {
		t.Fatalf("flush: errno %d, %d flushes", e, exps["rw"].flushes)
	}
	c.request(cmdDisc, 0, 6, 0, 0, nil)
	if _, err := c.nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after DISC")
	}
}

// TestReadTo: reads from an export that passes its buffers (ReaderTo)
// arrive whole; a failed read is an error reply and the stream stays in
// step.
func TestReadTo(t *testing.T) {
	s, exps := newTestServer(t)
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 13)
	}
	exps["lend"] = &memExport{data: data, lend: true}
	c := dial(t, s)
	c.open("lend")
	for i, r := range []struct{ off, n uint64 }{{0, 1 << 20}, {5, 4096}, {1<<20 - 1, 1}, {77, 0}} {
		h := uint64(i + 1)
		c.request(cmdRead, 0, h, r.off, uint32(r.n), nil)
		e, got := c.reply(h)
		if r.n == 0 {
			if e != 0 || len(got) != 0 {
				t.Fatalf("empty read: errno %d, %d bytes", e, len(got))
			}
			continue
		}
		if e != 0 || binary.BigEndian.Uint64(got) != r.off || !bytes.Equal(got[8:], data[r.off:r.off+r.n]) {
			t.Fatalf("read %d+%d: errno %d, %d bytes, not the export's", r.off, r.n, e, len(got))
		}
	}
	exps["lend"].failRead = errors.New("disk on fire")
	c.request(cmdRead, 0, 10, 0, 512, nil)
	if e, _ := c.reply(10); e != EIO {
		t.Fatalf("failed read: errno %d, want EIO", e)
	}
	exps["lend"].failRead = nil
	c.request(cmdRead, 0, 11, 512, 512, nil)
	if e, got := c.reply(11); e != 0 || !bytes.Equal(got[8:], data[512:1024]) {
		t.Fatalf("read after a failed one: errno %d", e)
	}
}

// TestBadRequests: every malformed request gets the errno the
// specification names and changes nothing.
func TestBadRequests(t *testing.T) {
	s, exps := newTestServer(t)
	before := exps["rw"].snapshot()
	c := dial(t, s)
	c.open("rw")
	for i, tc := range []struct {
		typ, flags uint16
		off        uint64
		n          uint32
		payload    []byte
		want       uint32
	}{
		{cmdRead, 0, 1 << 20, 1, nil, EINVAL},
		{cmdRead, 0, 1<<64 - 1, 2, nil, EINVAL},
		{cmdWrite, 0, 1<<20 - 1, 2, []byte("xy"), ENOSPC},
		{cmdTrim, 0, 1 << 21, 1, nil, EINVAL},
		{cmdWriteZeroes, 0, 1<<20 - 10, 11, nil, ENOSPC},
		{99, 0, 0, 0, nil, EINVAL},
		{cmdRead, cmdFlagFUA, 0, 1, nil, EINVAL},
		{cmdWrite, cmdFlagReqOne, 0, 1, []byte("z"), EINVAL},
		{cmdFlush, 0, 5, 0, nil, EINVAL},
		{cmdRead, 0, 0, 64 << 20, nil, EINVAL},
		{cmdWrite, 0, 0, 33 << 20, make([]byte, 33<<20), EINVAL},
	} {
		c.request(tc.typ, tc.flags, uint64(i+10), tc.off, tc.n, tc.payload)
		if e, _ := c.reply(uint64(i + 10)); e != tc.want {
			t.Errorf("case %d (%s at %d+%d): errno %d, want %d", i, cmdName(tc.typ), tc.off, tc.n, e, tc.want)
		}
	}
	// Still in step with the stream after all that.
	c.request(cmdRead, 0, 99, 0, 4, nil)
	if e, data := c.reply(99); e != 0 || len(data) != 12 {
		t.Fatalf("read after bad requests: %d %x", e, data)
	}
	if !bytes.Equal(exps["rw"].snapshot(), before) {
		t.Fatal("bad requests changed the export")
	}
	// Read-only export: writes get EPERM.
	c2 := dial(t, s)
	if f := c2.open("ro"); f&tflagReadOnly == 0 {
		t.Fatalf("read-only export flags %#x", f)
	}
	c2.request(cmdWrite, 0, 1, 0, 1, []byte("x"))
	if e, _ := c2.reply(1); e != EPERM {
		t.Fatalf("write to a read-only export: errno %d", e)
	}
	c2.request(cmdTrim, 0, 2, 0, 1, nil)
	if e, _ := c2.reply(2); e != EPERM {
		t.Fatalf("trim of a read-only export: errno %d", e)
	}
	// A read error reaches the client as an error chunk.
	exps["ro"].failRead = errors.New("disk on fire")
	c2.request(cmdRead, 0, 3, 0, 1, nil)
	if e, msg := c2.reply(3); e != EIO || !bytes.Contains(msg, []byte("disk on fire")) {
		t.Fatalf("failed read: errno %d %q", e, msg)
	}
}

func TestBadMagicDisconnects(t *testing.T) {
	s, _ := newTestServer(t)
	c := dial(t, s)
	c.open("rw")
	c.write(make([]byte, requestSize)) // magic 0
	if _, err := c.nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("server kept the connection after a bad request magic")
	}
}

func TestHandshakeOptions(t *testing.T) {
	s, _ := newTestServer(t)
	c := dial(t, s)
	c.hello()
	c.option(optList, nil)
	n := 0
	for {
		typ, _ := c.optReply()
		if typ == repAck {
			break
		}
		if typ != repServer {
			t.Fatalf("LIST reply %#x", typ)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("LIST gave %d exports, want 2", n)
	}
	c.option(12345, []byte("x"))
	if typ, _ := c.optReply(); typ != repErrUnsup {
		t.Fatalf("unknown option: %#x", typ)
	}
	c.option(optGo, goData("nope"))
	if typ, _ := c.optReply(); typ != repErrUnknown {
		t.Fatalf("GO to an unknown export: %#x", typ)
	}
	c.option(optGo, []byte{0, 0, 0, 9, 'x'})
	if typ, _ := c.optReply(); typ != repErrInvalid {
		t.Fatalf("malformed GO: %#x", typ)
	}
	c.option(optStartTLS, nil)
	if typ, _ := c.optReply(); typ != repErrPolicy {
		t.Fatalf("STARTTLS without TLS configured: %#x", typ)
	}
	c.option(optInfo, goData("rw"))
	for typ, _ := c.optReply(); typ != repAck; typ, _ = c.optReply() {
	}
	c.option(optExportName, []byte("rw"))
	b := c.read(10)
	if binary.BigEndian.Uint64(b) != 1<<20 {
		t.Fatalf("EXPORT_NAME size %x", b)
	}
}

func TestTLSRequired(t *testing.T) {
	s, _ := newTestServer(t)
	s.TLSRequired = true
	c := dial(t, s)
	c.hello()
	c.option(optGo, goData("rw"))
	if typ, _ := c.optReply(); typ != repErrTLSReqd {
		t.Fatalf("GO before TLS: %#x", typ)
	}
}

func TestShutdownFinishesRequests(t *testing.T) {
	s, _ := newTestServer(t)
	c := dial(t, s)
	c.open("rw")
	c.request(cmdWrite, 0, 1, 0, 1, []byte("x"))
	c.reply(1)
	done := make(chan error)
	go func() { done <- s.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown hung")
	}
}

// FuzzServer feeds arbitrary bytes to a connection, as handshake and
// requests: the server must neither panic nor hang, and a read-only
// export must not change.
func FuzzServer(f *testing.F) {
	var seed bytes.Buffer
	w := func(b []byte) { seed.Write(b) }
	w(binary.BigEndian.AppendUint32(nil, flagFixedNewstyle))
	opt := func(o uint32, d []byte) {
		b := binary.BigEndian.AppendUint64(nil, magicOpt)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, uint32(len(d)))
		w(append(b, d...))
	}
	opt(optStructuredReply, nil)
	opt(optGo, goData("ro"))
	req := func(typ uint16, off uint64, n uint32) {
		b := binary.BigEndian.AppendUint32(nil, magicRequest)
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint64(b, 1)
		b = binary.BigEndian.AppendUint64(b, off)
		w(binary.BigEndian.AppendUint32(b, n))
	}
	req(cmdRead, 0, 512)
	req(cmdWrite, 0, 1)
	w([]byte("x"))
	req(cmdBlockStatus, 0, 4096)
	f.Add(seed.Bytes())
	f.Add([]byte{0, 0, 0, 1})
	// The limits of issue 10: a name over 4096 bytes, repeated NBD_INFO
	// and metadata context requests, DF without structured replies,
	// a run of requests that carry no data.
	seed.Reset()
	w(binary.BigEndian.AppendUint32(nil, flagFixedNewstyle))
	opt(optGo, goData(string(make([]byte, 4097))))
	info := binary.BigEndian.AppendUint32(nil, 2)
	info = binary.BigEndian.AppendUint16(append(info, "ro"...), 8)
	for i := 0; i < 8; i++ {
		info = binary.BigEndian.AppendUint16(info, infoName)
	}
	opt(optInfo, info)
	opt(optStructuredReply, nil)
	opt(optSetMetaContext, metaQuery("ro", metaBaseAllocation, "base:", metaBaseAllocation))
	opt(optGo, goData("ro"))
	for i := 0; i < 300; i++ {
		req(cmdFlush, 0, 0)
	}
	req(cmdBlockStatus, 0, 1<<32-1)
	f.Add(seed.Bytes())
	seed.Reset()
	w(binary.BigEndian.AppendUint32(nil, flagFixedNewstyle))
	opt(optGo, goData("ro"))
	b := binary.BigEndian.AppendUint32(nil, magicRequest)
	b = binary.BigEndian.AppendUint16(b, cmdFlagDF)
	b = binary.BigEndian.AppendUint16(b, cmdRead)
	b = binary.BigEndian.AppendUint64(b, 1)
	b = binary.BigEndian.AppendUint64(b, 0)
	w(binary.BigEndian.AppendUint32(b, 512))
	req(cmdTrim, 1<<20, 1)
	f.Add(seed.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		s, exps := newTestServer(t)
		before := exps["ro"].snapshot()
		a, b := net.Pipe()
		s.ServeConn(a)
		done := make(chan struct{})
		go func() { io.Copy(io.Discard, b); close(done) }()
		b.SetWriteDeadline(time.Now().Add(2 * time.Second))
		b.Write(in)
		b.Close()
		<-done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("server did not stop: %v", err)
		}
		if !bytes.Equal(exps["ro"].snapshot(), before) {
			t.Fatal("the read-only export changed")
		}
	})
}

func FuzzParseRequest(f *testing.F) {
	f.Add(make([]byte, requestSize))
	f.Fuzz(func(t *testing.T, in []byte) {
		var b [requestSize]byte
		copy(b[:], in)
		r, err := parseRequest(&b)
		if err == nil && binary.BigEndian.Uint32(b[:]) != magicRequest {
			t.Fatal("accepted a bad magic")
		}
		if err == nil && (r.offset != binary.BigEndian.Uint64(b[16:]) || r.length != binary.BigEndian.Uint32(b[24:])) {
			t.Fatal("fields decoded wrong")
		}
	})
}

// slowExports opens its exports only once open is closed.
type slowExports struct {
	memExports
	open chan struct{}
}

func (e slowExports) Open(ctx context.Context, name string) (Export, func(), error) {
	<-e.open
	return e.memExports.Open(ctx, name)
}

// TestHandshakeDeadlineSparesOpen: an open that outlasts the handshake's
// deadline (a volume waiting for its previous writer to close, which on
// S3 checkpoints a write log) still answers the client, which the
// deadline used to disconnect ("server disconnected unexpectedly").
func TestHandshakeDeadlineSparesOpen(t *testing.T) {
	defer func(d time.Duration) { handshakeTimeout = d }(handshakeTimeout)
	handshakeTimeout = 500 * time.Millisecond
	s, exps := newTestServer(t)
	slow := slowExports{exps, make(chan struct{})}
	s.Exports = slow
	time.AfterFunc(2*time.Second, func() { close(slow.open) })
	c := dial(t, s)
	c.open("rw")
	c.request(cmdRead, 0, 1, 0, 4096, nil)
	if errno, data := c.reply(1); errno != 0 || !bytes.HasSuffix(data, bytes.Repeat([]byte{7}, 4096)) {
		t.Fatalf("read after a slow open: errno %d, %d bytes", errno, len(data))
	}
}
