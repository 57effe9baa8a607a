// Package nbd is an NBD (Network Block Device) server: QEMU, libvirt,
// qemu-img, nbdcopy, nbdinfo, nbdfuse and fio talk to volumes through it.
//
// It implements the fixed newstyle handshake with NBD_OPT_GO, INFO,
// LIST, ABORT, EXPORT_NAME, STARTTLS, STRUCTURED_REPLY and the
// base:allocation metadata context, and the commands READ, WRITE (FUA),
// FLUSH, TRIM, WRITE_ZEROES (NO_HOLE, FAST_ZERO), CACHE, BLOCK_STATUS
// (REQ_ONE) and DISC. Requests on a connection are served concurrently
// and answered as they complete; the requests in flight per connection
// are bounded by count and by bytes, the connections per server by
// count, and a client that stops reading
// replies, or stops in the middle of a request's data, is disconnected
// after a timeout. Every protocol violation gets
// the errno the specification names or ends the connection; none reaches
// an export. A panic while serving a request is logged and answered with
// EIO (or ends its connection): it does not take the server down. With
// TLS, clients may be authenticated by certificate too (ServerTLS).
//
// Written here rather than taken from a library: the protocol is small,
// it is the data path, and the public Go NBD servers serve one request at
// a time and lack structured replies and block status.
//
// The server knows nothing of volumes: it serves the Export interface,
// which the daemon implements on top of volumes.
package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
)

// Extent is a run of an export with one allocation state.
type Extent struct {
	Length int64
	Hole   bool // unallocated: reads as zeros
}

// Export is what the server serves. Methods are called concurrently.
// Offsets and lengths are checked against Size before any call.
type Export interface {
	Size() int64
	ReadOnly() bool
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	// WriteZeroes makes the range read as zeros; noHole asks that it stay
	// allocated. With fastOnly it must fail with an error for which
	// Errno returns ENOTSUP unless it can do so without writing data.
	WriteZeroes(ctx context.Context, off, n int64, noHole, fastOnly, fua bool) error
	Trim(ctx context.Context, off, n int64, fua bool) error
	Flush(ctx context.Context) error
	// BlockStatus describes [off, off+n) from off on; it may cover less
	// than n but at least one byte.
	BlockStatus(ctx context.Context, off, n int64) ([]Extent, error)
}

// A ReaderTo is an Export that can pass read data to the server in
// buffers of its own, which the server writes to the client as they are
// instead of copying them into a buffer first.
type ReaderTo interface {
	// ReadTo reads n bytes at off and calls fn with them, in buffers
	// valid until fn returns. It does not call fn if the read fails.
	ReadTo(ctx context.Context, off, n int64, fn func(bufs [][]byte) error) error
}

// ExportInfo describes an export in a listing.
type ExportInfo struct {
	Name        string
	Description string
}

// Exports finds exports by name.
type Exports interface {
	// Open returns the export called name and a function to call when the
	// connection ends. It returns an error wrapping ErrUnknownExport if
	// there is no such export.
	Open(ctx context.Context, name string) (Export, func(), error)
	List(ctx context.Context) ([]ExportInfo, error)
}

// ErrUnknownExport is returned by Exports.Open for a name it does not know.
var ErrUnknownExport = errors.New("nbd: no such export")

// Server serves exports on any number of listeners.
type Server struct {
	Exports Exports
	// TLS, if set, lets clients upgrade with NBD_OPT_STARTTLS.
	TLS *tls.Config
	// TLSRequired refuses every option but STARTTLS and ABORT before TLS.
	TLSRequired bool
	// MaxRequest bounds READ and WRITE lengths (default 32 MiB).
	MaxRequest int
	// MaxInflight bounds the bytes of requests being served per
	// connection (default 128 MiB); the reader waits beyond it.
	MaxInflight int64
	// MaxRequests bounds the number of requests being served per
	// connection, whatever their size (default 256); the reader waits
	// beyond it. Requests that carry no data (FLUSH, TRIM, BLOCK_STATUS,
	// empty reads) cost a goroutine and their reply each: without a count
	// a client sending them without reading replies would make the server
	// start work without end.
	MaxRequests int
	// ReplyTimeout bounds the time to write a reply to a client that
	// does not read them, and the time to receive a WRITE's data once its
	// header came (default 1 minute); past it the connection ends,
	// freeing what its requests hold. A client idle between requests is
	// not timed out.
	ReplyTimeout time.Duration
	// MaxConns bounds the connections served at once (default 1024).
	// Each costs a goroutine and 128 KiB of buffers, plus what its
	// requests hold; a connection beyond the bound is closed at once,
	// before the greeting, and logged.
	MaxConns int
	// Errno maps an export's error to a reply errno (default: EIO).
	Errno func(error) uint32
	// Logf logs connection-level events (default: nothing).
	Logf func(format string, args ...any)
	// Warnf logs what an operator must see: accept errors that are
	// retried, panics recovered (default: Logf).
	Warnf func(format string, args ...any)

	mu        sync.Mutex // guards the fields below
	listeners map[net.Listener]bool
	conns     map[*conn]bool
	refused   int       // connections refused over MaxConns since the last warning
	warned    time.Time // when a refusal was last logged
	shutdown  bool
	done      chan struct{}  // closed by Shutdown
	wg        sync.WaitGroup // connections

	watching  atomic.Bool  // the watchdog runs
	lastAlone atomic.Int64 // when a reader last began serving a request itself (see transmit)
}

const (
	defaultMaxRequest  = 32 << 20
	defaultMaxInflight = 128 << 20
	// defaultMaxRequests is well above what clients keep in flight on a
	// connection (QEMU 16, nbdcopy 64, the Linux client's queue 128, fio
	// as its iodepth) so that it costs them nothing, and small enough
	// that a hostile client holds a few hundred goroutines at most.
	defaultMaxRequests  = 256
	defaultReplyTimeout = time.Minute
	defaultMaxConns     = 1024
	maxOptionLen        = 64 << 10
	// maxMetaQueries bounds the metadata contexts one option may ask
	// for; one is served.
	maxMetaQueries = 128
	// maxStatusLength bounds the range one BLOCK_STATUS reply describes
	// (4096 descriptors of the smallest block, 64 KiB).
	maxStatusLength = 256 << 20
)

// handshakeTimeout bounds a client's handshake, the time this server
// spends opening exports aside (tests lower it).
var handshakeTimeout = 30 * time.Second

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Server) warnf(format string, args ...any) {
	if s.Warnf != nil {
		s.Warnf(format, args...)
	} else {
		s.logf(format, args...)
	}
}

func (s *Server) errno(err error) uint32 {
	if s.Errno != nil {
		if e := s.Errno(err); e != 0 {
			return e
		}
	}
	return EIO
}

func (s *Server) replyTimeout() time.Duration {
	if s.ReplyTimeout > 0 {
		return s.ReplyTimeout
	}
	return defaultReplyTimeout
}

func (s *Server) maxConns() int {
	if s.MaxConns > 0 {
		return s.MaxConns
	}
	return defaultMaxConns
}

func (s *Server) maxRequest() int {
	if s.MaxRequest > 0 {
		return s.MaxRequest
	}
	return defaultMaxRequest
}

// ServerTLS makes the TLS configuration of a server from PEM files: its
// certificate and key, and, unless caFile is empty, the certificate
// authority that signs its clients' certificates. With a CA a client
// presenting a certificate the CA did not sign is refused, and with
// requireClientCert so is a client presenting none; without one clients
// are not authenticated.
func ServerTLS(certFile, keyFile, caFile string, requireClientCert bool) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("nbd: load TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("nbd: load client CA: %w", err)
	}
	cfg.ClientCAs = x509.NewCertPool()
	if !cfg.ClientCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("nbd: client CA file %s holds no PEM certificate", caFile)
	}
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	if requireClientCert {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

// Serve accepts connections on l until Shutdown or a listener error.
// Errors that pass (out of file descriptors or buffers, an aborted
// connection, a timeout) are logged and retried after a pause growing
// from 5 ms to 1 s, as net/http does.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.initLocked()
	s.listeners[l] = true
	done := s.done
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var pause time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			select {
			case <-done:
				return ErrServerClosed
			default:
			}
			if !transientAcceptError(err) {
				return err
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.warnf("nbd: accept on %s: %v; retrying in %v", l.Addr(), err, pause)
			t := time.NewTimer(pause)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				return ErrServerClosed
			}
			continue
		}
		pause = 0
		s.ServeConn(nc)
	}
}

// transientAcceptError reports whether an error from Accept may pass,
// so that accepting should go on.
func transientAcceptError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED,
		syscall.ENOBUFS, syscall.ENOMEM, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.ECONNRESET} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// What net/http's Serve retries on: the deprecated Temporary, still
	// what the accept path of package net reports.
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

func (s *Server) initLocked() {
	if s.conns == nil {
		s.listeners, s.conns = map[net.Listener]bool{}, map[*conn]bool{}
		s.done = make(chan struct{})
	}
}

// ServeConn serves one connection in a new goroutine.
func (s *Server) ServeConn(nc net.Conn) {
	c := &conn{srv: s, raw: nc, nc: nc, stopping: make(chan struct{})}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.initLocked()
	if max := s.maxConns(); len(s.conns) >= max {
		// Logged at most once a second: a flood of connections must not
		// flood the log too.
		s.refused++
		var n int
		if now := time.Now(); now.Sub(s.warned) >= time.Second {
			n, s.refused, s.warned = s.refused, 0, now
		}
		s.mu.Unlock()
		nc.Close()
		if n > 0 {
			s.warnf("nbd: %d connections already (MaxConns): refused %d connection(s), the last from %s", max, n, nc.RemoteAddr())
		}
		return
	}
	s.conns[c] = true
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
		// A panic outside a request (handshake, an export's Open or
		// release) ends this connection only; serve's deferred closes
		// have run by the time it is recovered here.
		defer func() {
			if r := recover(); r != nil {
				s.warnf("nbd: %s: panic serving the connection: %v\n%s", nc.RemoteAddr(), r, debug.Stack())
			}
		}()
		c.serve()
	}()
}

// Shutdown stops accepting, lets every connection finish the requests it
// has read, and closes it. Exports are released (and so flushed) by their
// Exports implementation as the connections end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.shutdown {
		s.initLocked()
		close(s.done)
	}
	s.shutdown = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.stop()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.raw.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// conn is one client connection.
type conn struct {
	srv *Server
	raw net.Conn // the socket
	nc  net.Conn // raw, or the TLS connection over it
	r   *bufio.Reader
	w   *bufio.Writer

	structured bool // NBD_OPT_STRUCTURED_REPLY was negotiated
	metaAlloc  bool // base:allocation was selected
	tlsOn      bool
	noZeroes   bool

	exp     Export
	release func()

	wmu       sync.Mutex   // serializes replies
	wdlSet    time.Time    // when the write deadline was last set; under wmu
	wfailed   bool         // a reply could not be written; under wmu
	sending   atomic.Int32 // replies waiting for wmu or being written
	rd        atomic.Pointer[reading]
	alone     atomic.Int64 // see handedOn
	unreplied atomic.Int32 // requests read whose reply is not being sent yet
	rawc      syscall.RawConn
	peekInput atomic.Bool // the next reply is a lone request's: look for input first
	queued    atomic.Bool // input was waiting when a lone request's reply was sent
	stopOnce  sync.Once
	stopping  chan struct{}
}

// stop asks the connection to end after the requests in flight.
func (c *conn) stop() {
	c.stopOnce.Do(func() {
		close(c.stopping)
		// Wake a reader blocked on the socket; replies can still be sent.
		c.raw.SetReadDeadline(time.Now())
	})
}

func (c *conn) serve() {
	defer func() { c.nc.Close(); c.raw.Close() }()
	c.r = bufio.NewReaderSize(c.nc, 64<<10)
	c.w = bufio.NewWriterSize(c.nc, 64<<10)
	c.nc.SetDeadline(time.Now().Add(handshakeTimeout))
	ok, err := c.handshake()
	if err != nil && !errors.Is(err, io.EOF) {
		c.srv.logf("nbd: %s: handshake: %v", c.nc.RemoteAddr(), err)
	}
	if !ok {
		return
	}
	defer c.release()
	c.nc.SetDeadline(time.Time{})
	select {
	case <-c.stopping:
		return
	default:
	}
	if err := c.transmit(); err != nil {
		c.srv.logf("nbd: %s: %v", c.nc.RemoteAddr(), err)
	}
}

// --- handshake ---

func (c *conn) handshake() (bool, error) {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], magicNBD)
	binary.BigEndian.PutUint64(hello[8:], magicOpt)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.w.Write(hello[:]); err != nil {
		return false, err
	}
	if err := c.w.Flush(); err != nil {
		return false, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.r, cf[:]); err != nil {
		return false, err
	}
	clientFlags := binary.BigEndian.Uint32(cf[:])
	if clientFlags&^(flagFixedNewstyle|flagNoZeroes) != 0 {
		return false, protocolError(fmt.Sprintf("unknown client flags %#x", clientFlags))
	}
	c.noZeroes = clientFlags&flagNoZeroes != 0
	for {
		var hdr [16]byte
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			return false, err
		}
		if m := binary.BigEndian.Uint64(hdr[0:]); m != magicOpt {
			return false, protocolError(fmt.Sprintf("option magic %#x", m))
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		n := binary.BigEndian.Uint32(hdr[12:])
		if n > maxOptionLen {
			return false, protocolError(fmt.Sprintf("option %d with %d bytes of data", opt, n))
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.r, data); err != nil {
			return false, err
		}
		done, err := c.option(opt, data)
		if err != nil || done {
			return done && err == nil, err
		}
		if err := c.w.Flush(); err != nil {
			return false, err
		}
	}
}

func (c *conn) optReply(opt, typ uint32, data []byte) error {
	var h [20]byte
	binary.BigEndian.PutUint64(h[0:], magicOptReply)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	c.w.Write(h[:])
	_, err := c.w.Write(data)
	return err
}

func (c *conn) optError(opt, typ uint32, format string, args ...any) error {
	return c.optReply(opt, typ, []byte(truncate(fmt.Sprintf(format, args...), maxString)))
}

// maxString is the protocol's limit on a string: export names and error
// messages.
const maxString = 4096

// truncate cuts s to at most n bytes, at a UTF-8 character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// quoteName quotes a client-supplied name for a message, shortened so
// that the message stays readable and within maxString.
func quoteName(name string) string {
	const keep = 64
	if len(name) <= keep {
		return fmt.Sprintf("%q", name)
	}
	return fmt.Sprintf("%q... (%d bytes)", truncate(name, keep), len(name))
}

// option handles one option; done means transmission begins.
func (c *conn) option(opt uint32, data []byte) (done bool, err error) {
	if c.srv.TLSRequired && !c.tlsOn {
		switch opt {
		case optStartTLS, optAbort:
		case optExportName:
			return false, errors.New("NBD_OPT_EXPORT_NAME before TLS on a server that requires TLS")
		default:
			return false, c.optError(opt, repErrTLSReqd, "this server requires TLS: use NBD_OPT_STARTTLS")
		}
	}
	select {
	case <-c.stopping:
		if opt != optAbort {
			return false, c.optError(opt, repErrShutdown, "server is shutting down")
		}
	default:
	}
	switch opt {
	case optAbort:
		c.optReply(opt, repAck, nil)
		c.w.Flush()
		return false, io.EOF
	case optExportName:
		return c.exportName(string(data))
	case optList:
		if len(data) != 0 {
			return false, c.optError(opt, repErrInvalid, "NBD_OPT_LIST takes no data")
		}
		list, err := c.srv.Exports.List(context.Background())
		if err != nil {
			return false, c.optError(opt, repErrUnsup, "listing exports: %v", err)
		}
		for _, e := range list {
			b := binary.BigEndian.AppendUint32(nil, uint32(len(e.Name)))
			b = append(b, e.Name...)
			b = append(b, e.Description...)
			c.optReply(opt, repServer, b)
		}
		return false, c.optReply(opt, repAck, nil)
	case optStartTLS:
		return false, c.startTLS(data)
	case optStructuredReply:
		if len(data) != 0 {
			return false, c.optError(opt, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
		}
		c.structured = true
		return false, c.optReply(opt, repAck, nil)
	case optListMetaContext, optSetMetaContext:
		return false, c.metaContext(opt, data)
	case optInfo, optGo:
		return c.infoGo(opt, data)
	}
	return false, c.optError(opt, repErrUnsup, "option %d is not supported", opt)
}

func (c *conn) startTLS(data []byte) error {
	switch {
	case len(data) != 0:
		return c.optError(optStartTLS, repErrInvalid, "NBD_OPT_STARTTLS takes no data")
	case c.srv.TLS == nil:
		return c.optError(optStartTLS, repErrPolicy, "TLS is not configured on this server")
	case c.tlsOn:
		return c.optError(optStartTLS, repErrInvalid, "TLS is already on")
	}
	if err := c.optReply(optStartTLS, repAck, nil); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	if c.r.Buffered() > 0 {
		return protocolError("data sent before the TLS handshake")
	}
	tc := tls.Server(c.nc, c.srv.TLS)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	c.nc, c.tlsOn = tc, true
	c.r.Reset(tc)
	c.w.Reset(tc)
	// Options negotiated before TLS do not carry over.
	c.structured, c.metaAlloc = false, false
	return nil
}

// tooLong refuses a name over the protocol's limit for a string, which
// no export has, without looking it up.
func (c *conn) tooLong(opt uint32, name string) error {
	return c.optError(opt, repErrTooBig, "export name of %d bytes, over the protocol's %d", len(name), maxString)
}

// readName parses a u32-length-prefixed string at the start of data.
func readName(data []byte) (string, []byte, bool) {
	if len(data) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(data)
	if uint64(n) > uint64(len(data)-4) {
		return "", nil, false
	}
	return string(data[4 : 4+n]), data[4+n:], true
}

func (c *conn) metaContext(opt uint32, data []byte) error {
	if !c.structured {
		return c.optError(opt, repErrInvalid, "negotiate structured replies first")
	}
	name, rest, ok := readName(data)
	if !ok || len(rest) < 4 {
		return c.optError(opt, repErrInvalid, "malformed metadata context request")
	}
	if len(name) > maxString {
		return c.tooLong(opt, name)
	}
	nq := binary.BigEndian.Uint32(rest)
	if nq > maxMetaQueries {
		return c.optError(opt, repErrTooBig, "%d metadata context queries, over the %d this server takes", nq, maxMetaQueries)
	}
	if _, release, err := c.open(name); err != nil {
		return c.openError(opt, name, err)
	} else {
		release()
	}
	rest = rest[4:]
	var queries []string
	for i := uint32(0); i < nq; i++ {
		q, r, ok := readName(rest)
		if !ok {
			return c.optError(opt, repErrInvalid, "malformed metadata context query")
		}
		queries, rest = append(queries, q), r
	}
	if len(rest) != 0 {
		return c.optError(opt, repErrInvalid, "trailing bytes in metadata context request")
	}
	match := func(q string) bool { return q == metaBaseAllocation || q == "base:" }
	selected := false
	if opt == optListMetaContext && nq == 0 {
		queries = []string{metaBaseAllocation}
	}
	for _, q := range queries {
		if match(q) && !selected { // each context once, however often asked for
			b := binary.BigEndian.AppendUint32(nil, metaBaseAllocationID)
			b = append(b, metaBaseAllocation...)
			c.optReply(opt, repMetaContext, b)
			selected = true
		}
	}
	if opt == optSetMetaContext {
		c.metaAlloc = selected
	}
	return c.optReply(opt, repAck, nil)
}

// open opens the export name. The handshake's deadline bounds what the
// client sends, not this server's own work: an open may wait for the
// volume's previous writer here to close, and a close checkpoints its
// write log (on S3 a put per block it touched), which can take longer. So
// the deadline stops while the open runs, and starts again after it.
func (c *conn) open(name string) (Export, func(), error) {
	c.nc.SetDeadline(time.Time{})
	defer func() { c.nc.SetDeadline(time.Now().Add(handshakeTimeout)) }()
	return c.srv.Exports.Open(context.Background(), name)
}

func (c *conn) openError(opt uint32, name string, err error) error {
	if errors.Is(err, ErrUnknownExport) {
		return c.optError(opt, repErrUnknown, "export %s: %v", quoteName(name), err)
	}
	return c.optError(opt, repErrUnsup, "export %s: %v", quoteName(name), err)
}

func (c *conn) transmissionFlags(e Export) uint16 {
	f := uint16(tflagHasFlags | tflagSendFlush | tflagCanMultiConn | tflagSendCache)
	if c.structured {
		// DF means nothing, and MUST NOT be advertised, without
		// structured replies.
		f |= tflagSendDF
	}
	if e.ReadOnly() {
		return f | tflagReadOnly
	}
	return f | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagSendFastZero
}

func (c *conn) infoGo(opt uint32, data []byte) (bool, error) {
	name, rest, ok := readName(data)
	if !ok || len(rest) < 2 {
		return false, c.optError(opt, repErrInvalid, "malformed NBD_OPT_INFO/GO request")
	}
	nreq := binary.BigEndian.Uint16(rest)
	rest = rest[2:]
	if len(rest) != 2*int(nreq) {
		return false, c.optError(opt, repErrInvalid, "NBD_OPT_INFO/GO lists %d requests in %d bytes", nreq, len(rest))
	}
	if len(name) > maxString {
		return false, c.tooLong(opt, name)
	}
	exp, release, err := c.open(name)
	if err != nil {
		return false, c.openError(opt, name, err)
	}
	info := binary.BigEndian.AppendUint16(nil, infoExport)
	info = binary.BigEndian.AppendUint64(info, uint64(exp.Size()))
	info = binary.BigEndian.AppendUint16(info, c.transmissionFlags(exp))
	c.optReply(opt, repInfo, info)
	bsInfo := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	bsInfo = binary.BigEndian.AppendUint32(bsInfo, 1)
	bsInfo = binary.BigEndian.AppendUint32(bsInfo, 4096)
	bsInfo = binary.BigEndian.AppendUint32(bsInfo, uint32(c.srv.maxRequest()))
	c.optReply(opt, repInfo, bsInfo)
	// Each piece of information once, however often asked for: a 64 KiB
	// option could otherwise ask for the name 32,000 times.
	sent := map[uint16]bool{}
	for i := 0; i < int(nreq); i++ {
		typ := binary.BigEndian.Uint16(rest[2*i:])
		if sent[typ] {
			continue
		}
		sent[typ] = true
		switch typ {
		case infoName:
			c.optReply(opt, repInfo, append(binary.BigEndian.AppendUint16(nil, infoName), name...))
		case infoDescription:
			desc := "archipelago volume " + name
			if exp.ReadOnly() {
				desc += " (read-only)"
			}
			c.optReply(opt, repInfo, append(binary.BigEndian.AppendUint16(nil, infoDescription), desc...))
		}
	}
	if err := c.optReply(opt, repAck, nil); err != nil {
		release()
		return false, err
	}
	if opt == optInfo {
		release()
		return false, nil
	}
	c.exp, c.release = exp, release
	return true, c.w.Flush()
}

func (c *conn) exportName(name string) (bool, error) {
	if len(name) > maxString {
		return false, fmt.Errorf("NBD_OPT_EXPORT_NAME of %d bytes, over the protocol's %d", len(name), maxString)
	}
	exp, release, err := c.open(name)
	if err != nil {
		// The protocol has no way to refuse here but to hang up.
		return false, fmt.Errorf("NBD_OPT_EXPORT_NAME %q: %w", name, err)
	}
	b := binary.BigEndian.AppendUint64(nil, uint64(exp.Size()))
	b = binary.BigEndian.AppendUint16(b, c.transmissionFlags(exp))
	if !c.noZeroes {
		b = append(b, make([]byte, 124)...)
	}
	c.w.Write(b)
	if err := c.w.Flush(); err != nil {
		release()
		return false, err
	}
	c.exp, c.release = exp, release
	return true, nil
}
