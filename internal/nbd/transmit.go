package nbd

import (
	"context"
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

	"golang.org/x/sys/unix"
)

// bufPools hold request buffers by size class, so that a connection
// streaming 1 MiB writes does not allocate for each.
var bufClasses = []int{4 << 10, 64 << 10, 1 << 20, 4 << 20, 8 << 20, 32 << 20}
var bufPools = make([]sync.Pool, len(bufClasses))

func getBuf(n int) *[]byte {
	for i, c := range bufClasses {
		if n <= c {
			if b, ok := bufPools[i].Get().(*[]byte); ok {
				*b = (*b)[:n]
				return b
			}
			b := make([]byte, n, c)
			return &b
		}
	}
	b := make([]byte, n)
	return &b
}

func putBuf(b *[]byte) {
	for i, c := range bufClasses {
		if cap(*b) == c {
			bufPools[i].Put(b)
			return
		}
	}
}

// transmit serves requests until the client disconnects or the server
// stops. Requests run concurrently; replies are sent as requests
// complete.
//
// A request alone in flight, with nothing more from the client buffered
// (a guest at queue depth 1: a write, then its flush), on a connection
// without TLS, is served by the goroutine that read it: handing it to a
// worker woke another thread for every request, and 4 KiB writes with a
// flush after each ran at 0.7 times the rate they run at this way. While
// it is served nothing reads the socket, so a request that runs longer
// than aloneFor (a store that stalls, a reply the client does not read
// because it is still sending requests) has the server's watchdog start
// another goroutine reading (handOn): what the client sends meanwhile
// waits that long at most.
func (c *conn) transmit() error {
	maxInflight := c.srv.MaxInflight
	if maxInflight <= 0 {
		maxInflight = defaultMaxInflight
	}
	maxRequests := c.srv.MaxRequests
	if maxRequests <= 0 {
		maxRequests = defaultMaxRequests
	}
	rd := &reading{
		c:      c,
		maxReq: c.srv.maxRequest(),
		size:   c.exp.Size(),
		jobs:   make(chan job),
		ended:  make(chan error, 1),
	}
	rd.sem = newLimiter(maxRequests, max(maxInflight, int64(rd.maxReq)))
	rd.ctx, rd.cancel = context.WithCancel(context.Background())
	defer rd.cancel()
	defer rd.wg.Wait()
	defer close(rd.jobs)
	c.rd.Store(rd)
	if sc, ok := c.raw.(syscall.Conn); ok {
		c.rawc, _ = sc.SyscallConn()
	}
	handedOn, err := rd.loop()
	if handedOn {
		err = <-rd.ended
	}
	return err
}

// reading is a connection's reading of requests, which passes from one
// goroutine to another when a request served by the reading goroutine
// takes long (see transmit).
type reading struct {
	c      *conn
	maxReq int
	size   int64
	sem    *limiter
	ctx    context.Context
	cancel context.CancelFunc
	// Requests run on workers that stay for the connection, so that the
	// stack a request grows is kept for the next (a goroutine per request
	// grew one every time).
	jobs    chan job
	workers atomic.Int32
	wg      sync.WaitGroup // workers and requests served by a reader
	ended   chan error     // the error of the reader that ended reading
	// The reader's own:
	last    int64 // the last alone value set
	crowded int   // requests to read before one may be served alone again
}

// crowdedFor is how many requests a reader hands to workers after one
// that came while another was in flight: a client that keeps several in
// flight (whose next request may be on its way) does not wait for one
// served by the reader, only a client that waits for each reply does.
// A request came while another was in flight if that one's reply was
// not sent yet when it was read (conn.unreplied), or, for one served
// alone, when its reply was about to be sent (conn.peekInput: the
// reader, busy serving, did not see it come).
const crowdedFor = 64

// alone is the time (nanoseconds since epoch) at which the reading
// goroutine of a connection began serving a request itself; 0 when it is
// serving none, handedOn once the watchdog has started another reader.
const handedOn = -1

// epoch is the origin of alone's times.
var epoch = time.Now()

// aloneFor is how long a request served by the reading goroutine runs
// before another goroutine reads on; the watchdog looks twice in that
// time, and stops after watchIdle without such requests (which must be
// well over aloneFor, or a request could begin as the watchdog stops).
const (
	aloneFor  = 2 * time.Millisecond
	watchIdle = 50 * aloneFor
)

func (rd *reading) run(j job) {
	defer rd.sem.release(j.weight)
	rd.c.handle(rd.ctx, j.req, j.payload, rd.size, rd.maxReq)
	if j.payload != nil {
		putBuf(j.payload)
	}
}

// serveAlone serves j on the reading goroutine, under the watchdog's
// eye. It reports whether this goroutine is still the reader.
func (rd *reading) serveAlone(j job) bool {
	c := rd.c
	since := max(int64(time.Since(epoch)), rd.last+1)
	rd.last = since
	c.alone.Store(since)
	c.srv.watchAlone(since)
	c.peekInput.Store(true)
	rd.wg.Add(1)
	func() {
		defer rd.wg.Done()
		rd.run(j)
	}()
	return c.alone.CompareAndSwap(since, 0)
}

// handOn starts another goroutine reading the connection if its reader
// still serves the request it began serving at since.
func (c *conn) handOn(since int64) {
	if !c.alone.CompareAndSwap(since, handedOn) {
		return
	}
	rd := c.rd.Load()
	go func() {
		var err error
		handed := false
		defer func() {
			if r := recover(); r != nil {
				c.srv.warnf("nbd: %s: panic reading requests: %v\n%s", c.raw.RemoteAddr(), r, debug.Stack())
				err, handed = fmt.Errorf("panic reading requests: %v", r), false
			}
			if !handed {
				rd.ended <- err
			}
		}()
		handed, err = rd.loop()
	}()
}

// loop reads requests and serves them until the client disconnects, the
// server stops, or another goroutine takes over the reading (handedOn
// true).
func (rd *reading) loop() (handedOn bool, err error) {
	c := rd.c
	var hdr [requestSize]byte
	for {
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			select {
			case <-c.stopping:
				return false, nil
			default:
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return false, nil
			}
			return false, fmt.Errorf("read request: %w", err)
		}
		req, err := parseRequest(&hdr)
		if err != nil {
			return false, err
		}
		if req.typ == cmdDisc {
			return false, nil // transmit's deferred Wait serves what is in flight
		}
		queued := c.unreplied.Add(1) > 1 || c.queued.Swap(false)
		var payload *[]byte
		weight := int64(1)
		if req.typ == cmdWrite {
			if int(req.length) > rd.maxReq {
				// Keep the stream in step, then refuse.
				timed := c.payloadDeadline(int(req.length))
				if _, err := io.CopyN(io.Discard, c.r, int64(req.length)); err != nil {
					return false, fmt.Errorf("read oversized write payload: %w", err)
				}
				if timed {
					c.clearPayloadDeadline()
				}
				c.replyError(req, EINVAL, fmt.Sprintf("write of %d bytes over the maximum %d", req.length, rd.maxReq))
				continue
			}
			weight = max(1, int64(req.length))
			rd.sem.acquire(weight)
			timed := c.payloadDeadline(int(req.length))
			if payload, err = readPayload(c.r, int(req.length)); err != nil {
				rd.sem.release(weight)
				return false, fmt.Errorf("read write payload: %w", err)
			}
			if timed {
				c.clearPayloadDeadline()
			}
		} else if req.typ == cmdRead {
			weight = max(1, int64(req.length))
			if int(req.length) > rd.maxReq {
				weight = 0 // refused without a buffer
			}
			rd.sem.acquire(weight)
		} else {
			rd.sem.acquire(weight)
		}
		j := job{req, payload, weight}
		switch {
		case queued:
			rd.crowded = crowdedFor
		case rd.crowded > 0:
			rd.crowded--
		case c.r.Buffered() == 0 && !c.tlsOn:
			// (Not under TLS: the TLS layer reads records ahead into a
			// buffer of its own, where neither Buffered nor inputWaiting
			// sees a request that came.)
			if !rd.serveAlone(j) {
				return true, nil
			}
			continue
		}
		select {
		case rd.jobs <- j:
		default:
			rd.wg.Add(1)
			rd.workers.Add(1)
			go func() {
				defer rd.wg.Done()
				for ok := true; ok; j, ok = <-rd.jobs {
					rd.run(j)
					if rd.workers.Load() > keepWorkers {
						break // a burst is over: do not keep its workers
					}
				}
				rd.workers.Add(-1)
			}()
		}
	}
}

// watchAlone makes sure the server's watchdog runs, now that a reader
// began serving a request itself at since.
func (s *Server) watchAlone(since int64) {
	if since-s.lastAlone.Load() > int64(aloneFor/2) {
		s.lastAlone.Store(since) // not for every request: connections share it
	}
	if !s.watching.Load() && s.watching.CompareAndSwap(false, true) {
		go s.watchdog()
	}
}

// watchdog hands the reading of a connection on (handOn) when its reader
// has served a request for aloneFor; it ends after watchIdle without such
// requests, and watchAlone starts it again.
func (s *Server) watchdog() {
	t := time.NewTicker(aloneFor / 2)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.done:
			s.watching.Store(false)
			return
		}
		if s.watchConns() {
			continue
		}
		s.watching.Store(false)
		// A reader that began after the look above and saw the watchdog
		// still running: run on for it.
		if s.watchConns() && s.watching.CompareAndSwap(false, true) {
			continue
		}
		return
	}
}

// watchConns hands on the reading of the connections whose reader has
// served a request for aloneFor, and reports whether the watchdog is
// still needed: a request is being served alone, or one was within
// watchIdle.
func (s *Server) watchConns() bool {
	now := int64(time.Since(epoch))
	needed := now-s.lastAlone.Load() < int64(watchIdle)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if since := c.alone.Load(); since > 0 {
			needed = true
			if now-since >= int64(aloneFor) {
				c.handOn(since)
			}
		}
	}
	return needed
}

// inputWaiting reports whether the client sent bytes not read yet (the
// socket's SIOCINQ); false where the connection cannot tell.
func (c *conn) inputWaiting() bool {
	if c.rawc == nil {
		return false
	}
	n := 0
	c.rawc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}

// firstPayload is the most a WRITE's data buffer holds before any of
// the data came; it grows by payloadGrowth as the data comes.
const (
	firstPayload  = 1 << 20
	payloadGrowth = 8 // a class of bufClasses: 1 MiB, 8 MiB, then 32 MiB
)

// readPayload reads the n bytes of a WRITE's data into a pooled buffer
// that grows as the data comes, so that what a client makes the server
// hold follows what it sent (at most payloadGrowth times, or
// firstPayload), not what its header claims. What came is copied at each
// growth: nothing up to 1 MiB, 1 MiB for up to 8 MiB, 9 MiB for 32 MiB.
func readPayload(r io.Reader, n int) (*[]byte, error) {
	buf := getBuf(min(n, firstPayload))
	got := 0
	for {
		k, err := io.ReadFull(r, (*buf)[got:])
		got += k
		if err != nil {
			putBuf(buf)
			return nil, err
		}
		if got == n {
			return buf, nil
		}
		next := getBuf(min(n, payloadGrowth*got))
		copy(*next, (*buf)[:got])
		putBuf(buf)
		buf = next
	}
}

// payloadDeadline bounds the time to receive the n bytes of data of a
// request whose header came, by ReplyTimeout: a client that stops in the
// middle of a request holds its buffer and budget until then only. An
// idle client, between requests, is not timed out. It reports whether it
// set a deadline (not when the data is buffered already).
func (c *conn) payloadDeadline(n int) bool {
	if c.r.Buffered() >= n {
		return false
	}
	c.raw.SetReadDeadline(time.Now().Add(c.srv.replyTimeout()))
	return true
}

// clearPayloadDeadline removes the deadline payloadDeadline set, unless
// the connection is stopping: stop's deadline, which wakes the reader,
// must stay.
func (c *conn) clearPayloadDeadline() {
	c.raw.SetReadDeadline(time.Time{})
	select {
	case <-c.stopping:
		c.raw.SetReadDeadline(time.Now())
	default:
	}
}

// keepWorkers is how many idle workers a connection keeps.
const keepWorkers = 64

// A job is one request for a worker of transmit.
type job struct {
	req     request
	payload *[]byte
	weight  int64
}

// check validates a request against the export; it returns the errno to
// reply with, or 0.
func (c *conn) check(req request, size int64, maxReq int) (uint32, string) {
	allowed, known := allowedFlags[req.typ]
	switch {
	case !known:
		return EINVAL, "unknown command " + cmdName(req.typ)
	case req.flags&^allowed != 0:
		return EINVAL, fmt.Sprintf("flags %#x not valid for %s", req.flags, cmdName(req.typ))
	case req.flags&cmdFlagDF != 0 && !c.structured:
		return EINVAL, "DF without structured replies negotiated"
	}
	write := req.typ == cmdWrite || req.typ == cmdTrim || req.typ == cmdWriteZeroes
	if write && c.exp.ReadOnly() {
		return EPERM, "the export is read-only"
	}
	if req.typ == cmdFlush {
		if req.offset != 0 || req.length != 0 {
			return EINVAL, "FLUSH with a non-zero offset or length"
		}
		return 0, ""
	}
	if req.typ == cmdBlockStatus && !c.metaAlloc {
		return EINVAL, "BLOCK_STATUS without the base:allocation context negotiated"
	}
	if req.typ == cmdRead && int(req.length) > maxReq {
		return EINVAL, fmt.Sprintf("read of %d bytes over the maximum %d", req.length, maxReq)
	}
	if req.offset > uint64(size) || uint64(req.length) > uint64(size)-req.offset {
		msg := fmt.Sprintf("%s at %d+%d beyond the export's %d bytes", cmdName(req.typ), req.offset, req.length, size)
		// ENOSPC is for writes; a read, a trim, a cache or a block
		// status out of range is EINVAL (specification, "Error values").
		if req.typ == cmdWrite || req.typ == cmdWriteZeroes {
			return ENOSPC, msg
		}
		return EINVAL, msg
	}
	return 0, ""
}

func (c *conn) handle(ctx context.Context, req request, payload *[]byte, size int64, maxReq int) {
	replying := false // a reply may have been written, in part
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		c.srv.warnf("nbd: %s: panic serving %s at %d+%d: %v\n%s", c.raw.RemoteAddr(), cmdName(req.typ), req.offset, req.length, r, debug.Stack())
		if replying {
			c.raw.Close() // the stream is in no known state: end it
			return
		}
		c.replyError(req, EIO, "nbd: internal error serving the request (see the server's log)")
	}()
	if e, msg := c.check(req, size, maxReq); e != 0 {
		replying = true
		c.replyError(req, e, msg)
		return
	}
	off, n := int64(req.offset), int64(req.length)
	fua := req.flags&cmdFlagFUA != 0
	var err error
	switch req.typ {
	case cmdRead:
		if rt, ok := c.exp.(ReaderTo); ok {
			replied := false
			err = rt.ReadTo(ctx, off, n, func(bufs [][]byte) error {
				replying = true
				c.replyRead(req, bufs...)
				replied = true
				return nil
			})
			if replied {
				return
			}
			if err == nil {
				err = errors.New("nbd: the export's ReadTo returned no data")
			}
			break
		}
		buf := getBuf(int(n))
		defer putBuf(buf)
		if err = c.exp.ReadAt(ctx, *buf, off); err == nil {
			replying = true
			c.replyRead(req, *buf)
			return
		}
	case cmdWrite:
		err = c.exp.WriteAt(ctx, *payload, off, fua)
	case cmdFlush:
		err = c.exp.Flush(ctx)
	case cmdTrim:
		err = c.exp.Trim(ctx, off, n, fua)
	case cmdWriteZeroes:
		err = c.exp.WriteZeroes(ctx, off, n, req.flags&cmdFlagNoHole != 0, req.flags&cmdFlagFastZero != 0, fua)
	case cmdCache:
		// Blocks are read from the store on demand; nothing to prefetch.
	case cmdBlockStatus:
		var ext []Extent
		// A reply may describe less than asked: the client asks again
		// for the rest. Bounding the range bounds what the export and the
		// reply allocate, whatever the client asks.
		n = min(n, maxStatusLength)
		if ext, err = c.exp.BlockStatus(ctx, off, n); err == nil {
			replying = true
			c.replyBlockStatus(req, n, ext)
			return
		}
	}
	replying = true
	if err != nil {
		c.replyError(req, c.srv.errno(err), err.Error())
		return
	}
	c.replySimple(req, 0)
}

// send writes one reply. Replies that complete together go out in one
// system call: a sender leaves the flush to the next one already waiting
// for the lock, and the last one flushes.
//
// A client that stops reading replies is cut off after ReplyTimeout.
func (c *conn) send(parts ...[]byte) {
	c.unreplied.Add(-1) // every reply is a request's last
	if c.peekInput.Load() && c.peekInput.Swap(false) && c.inputWaiting() {
		c.queued.Store(true)
	}
	c.sending.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	timeout := c.srv.replyTimeout()
	// Moving the deadline costs a timer update: do it when it has lost
	// more than a sixteenth of the timeout, not for every reply.
	if now := time.Now(); now.Sub(c.wdlSet) > timeout/16 {
		c.raw.SetWriteDeadline(now.Add(timeout))
		c.wdlSet = now
	}
	for _, p := range parts {
		if _, err := c.w.Write(p); err != nil {
			c.sending.Add(-1)
			c.writeFailed(err)
			return
		}
	}
	if c.sending.Add(-1) > 0 {
		return
	}
	if err := c.w.Flush(); err != nil {
		c.writeFailed(err)
	}
}

// writeFailed ends the connection after a reply could not be written;
// the reader sees the closed socket. Called with wmu held.
func (c *conn) writeFailed(err error) {
	if !c.wfailed {
		c.wfailed = true
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.srv.logf("nbd: %s: the client read no reply for %v: disconnecting", c.raw.RemoteAddr(), c.srv.replyTimeout())
		} else {
			c.srv.logf("nbd: %s: write reply: %v", c.raw.RemoteAddr(), err)
		}
	}
	c.raw.Close()
}

func (c *conn) replySimple(req request, errno uint32) {
	var h [16]byte
	binary.BigEndian.PutUint32(h[0:], magicSimple)
	binary.BigEndian.PutUint32(h[4:], errno)
	binary.BigEndian.PutUint64(h[8:], req.handle)
	c.send(h[:])
}

func chunkHeader(flags, typ uint16, handle uint64, length uint32) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint32(h[0:], magicStruct)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], handle)
	binary.BigEndian.PutUint32(h[16:], length)
	return h
}

// replyRead sends the data of a read, which is in one or more buffers.
func (c *conn) replyRead(req request, data ...[]byte) {
	n := 0
	for _, d := range data {
		n += len(d)
	}
	var h []byte
	switch {
	case !c.structured:
		h = make([]byte, 16)
		binary.BigEndian.PutUint32(h[0:], magicSimple)
		binary.BigEndian.PutUint64(h[8:], req.handle)
	case n == 0:
		c.send(chunkHeader(replyFlagDone, replyTypeNone, req.handle, 0))
		return
	default:
		h = chunkHeader(replyFlagDone, replyTypeOffsetData, req.handle, uint32(8+n))
		h = binary.BigEndian.AppendUint64(h, req.offset)
	}
	c.send(append([][]byte{h}, data...)...)
}

func (c *conn) replyError(req request, errno uint32, msg string) {
	if !c.structured {
		c.replySimple(req, errno)
		return
	}
	msg = truncate(msg, maxString)
	h := chunkHeader(replyFlagDone, replyTypeError, req.handle, uint32(6+len(msg)))
	h = binary.BigEndian.AppendUint32(h, errno)
	h = binary.BigEndian.AppendUint16(h, uint16(len(msg)))
	c.send(h, []byte(msg))
}

// replyBlockStatus describes ext, cut to the n bytes asked for.
func (c *conn) replyBlockStatus(req request, n int64, ext []Extent) {
	body := binary.BigEndian.AppendUint32(nil, metaBaseAllocationID)
	left := n
	for _, e := range ext {
		if left == 0 || e.Length <= 0 {
			break
		}
		l := min(e.Length, left)
		var st uint32
		if e.Hole {
			st = stateHole | stateZero
		}
		body = binary.BigEndian.AppendUint32(body, uint32(l))
		body = binary.BigEndian.AppendUint32(body, st)
		left -= l
		if req.flags&cmdFlagReqOne != 0 {
			break
		}
	}
	if len(body) == 4 { // the export described nothing: report data
		body = binary.BigEndian.AppendUint32(body, uint32(n))
		body = binary.BigEndian.AppendUint32(body, 0)
	}
	c.send(chunkHeader(replyFlagDone, replyTypeBlockStatus, req.handle, uint32(len(body))), body)
}

// limiter bounds the requests in flight on a connection, by count and
// by bytes.
type limiter struct {
	mu    sync.Mutex
	cond  *sync.Cond
	slots int   // requests that may still start
	bytes int64 // bytes that may still be taken
}

func newLimiter(slots int, bytes int64) *limiter {
	l := &limiter{slots: slots, bytes: bytes}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// acquire waits for a request slot and n bytes, and takes them.
func (l *limiter) acquire(n int64) {
	l.mu.Lock()
	for l.slots == 0 || l.bytes < n {
		l.cond.Wait()
	}
	l.slots--
	l.bytes -= n
	l.mu.Unlock()
}

// release gives back a slot and the n bytes taken with it.
func (l *limiter) release(n int64) {
	l.mu.Lock()
	l.slots++
	l.bytes += n
	l.mu.Unlock()
	l.cond.Broadcast()
}
