package nbd

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// probeExport: memExport whose Flush waits on the gate current when it
// begins, whose ReadAt sleeps readDelay, and which records the peak
// number of ReadAt/Flush in progress and whether each request ran on a
// reader (serveAlone in its stack).
type probeExport struct {
	*memExport
	gate      atomic.Pointer[chan struct{}] // Flush waits for it
	readGate  atomic.Pointer[chan struct{}] // ReadAt waits for it
	readDelay time.Duration
	readTail  time.Duration // ReadTo only: work after the data is passed
	in, peak  atomic.Int64
	onReader  atomic.Int64
	onWorker  atomic.Int64
	doneAt    atomic.Int64 // UnixNano when the last Flush returned
	released  atomic.Int64 // UnixNano when the export was released
	afterRel  atomic.Int64 // requests begun after release
}

func (g *probeExport) enter() {
	if g.released.Load() != 0 {
		g.afterRel.Add(1)
	}
	n := g.in.Add(1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	buf := make([]byte, 8<<10)
	if strings.Contains(string(buf[:runtime.Stack(buf, false)]), "serveAlone") {
		g.onReader.Add(1)
	} else {
		g.onWorker.Add(1)
	}
}

func (g *probeExport) Flush(ctx context.Context) error {
	g.enter()
	defer g.in.Add(-1)
	if p := g.gate.Load(); p != nil {
		<-*p
	}
	g.doneAt.Store(time.Now().UnixNano())
	return nil
}

func (g *probeExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	g.enter()
	defer g.in.Add(-1)
	if p := g.readGate.Load(); p != nil {
		<-*p
	}
	if g.readDelay > 0 {
		// a store's latency; time.Sleep here sleeps 1 ms more at times
		ts := syscall.NsecToTimespec(int64(g.readDelay))
		syscall.Nanosleep(&ts, nil)
	}
	return g.memExport.ReadAt(ctx, p, off)
}

func (g *probeExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	g.enter()
	defer g.in.Add(-1)
	return g.memExport.WriteAt(ctx, p, off, fua)
}

// probeTailExport passes the data through ReadTo, then works on for
// readTail (releasing a lent buffer, metrics...).
type probeTailExport struct{ *probeExport }

func (g probeTailExport) ReadTo(ctx context.Context, off, n int64, fn func([][]byte) error) error {
	p := make([]byte, n)
	if err := g.probeExport.ReadAt(ctx, p, off); err != nil {
		return err
	}
	err := fn([][]byte{p})
	time.Sleep(g.readTail)
	return err
}

type probeExports struct {
	memExports
	x   *probeExport
	exp Export
}

func (e probeExports) Open(ctx context.Context, name string) (Export, func(), error) {
	if name == "probe" {
		exp := e.exp
		if exp == nil {
			exp = e.x
		}
		return exp, func() { e.x.released.Store(time.Now().UnixNano()) }, nil
	}
	return e.memExports.Open(ctx, name)
}

func newProbe(t *testing.T) (*Server, *probeExport) {
	s, exps := newTestServer(t)
	x := &probeExport{memExport: exps["rw"]}
	s.Exports = probeExports{memExports: exps, x: x}
	return s, x
}

func (g *probeExport) newGate() chan struct{} {
	ch := make(chan struct{})
	g.gate.Store(&ch)
	return ch
}

// openSlowProbe opens the probe export, whose reads take 1 ms, over a
// TCP or unix socket.
func openSlowProbe(t *testing.T, unixSock bool) (*client, *probeExport) {
	s, x := newProbe(t)
	x.readDelay = time.Millisecond
	c := dialSocket(t, s, unixSock)
	c.open("probe")
	return c, x
}

// dialTCP serves s on a loopback TCP listener and connects to it.
func dialTCP(t *testing.T, s *Server) *client { return dialSocket(t, s, false) }

// dialSocket serves s on a loopback TCP listener, or a unix socket, and
// connects to it.
func dialSocket(t *testing.T, s *Server, unixSock bool) *client {
	network, addr := "tcp", "127.0.0.1:0"
	if unixSock {
		network, addr = "unix", t.TempDir()+"/nbd.sock"
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { l.Close() })
	nc, err := net.Dial(network, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	return &client{t: t, nc: nc}
}

// timedReply: how long the reply to handle took.
func (c *client) timedReply(handle uint64) (uint32, time.Duration) {
	c.t.Helper()
	t0 := time.Now()
	e, _ := c.reply(handle)
	return e, time.Since(t0)
}

// holdUpBound: aloneFor + a tick, plus generous slack for -race on a
// shared 2-core machine.
const holdUpBound = 50 * time.Millisecond

// TestAloneGenerationsOfHandOn: a QD1 flush stalls (served by the reader,
// handed on), is released, the next stalls on the second reader, and so
// on for several generations; each time a read sent beside it must be
// answered within about aloneFor. At the end the connection disconnects
// (DISC) while a request of the last generation is stalled: the export
// must not be released before that request is done, and its reply must
// come.
func TestAloneGenerationsOfHandOn(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		t.Run(fmt.Sprint("tcp=", tcp), func(t *testing.T) { handOnGenerations(t, tcp) })
	}
}

func handOnGenerations(t *testing.T, tcp bool) {
	s, x := newProbe(t)
	c := dial(t, s)
	if tcp {
		c.nc.Close()
		c = dialTCP(t, s)
	}
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	c.open("probe")
	x.released.Store(0) // SET_META_CONTEXT opened and released it
	h := uint64(1)
	for gen := 0; gen < 6; gen++ {
		gate := x.newGate()
		fl := h
		c.request(cmdFlush, 0, fl, 0, 0, nil)
		time.Sleep(5 * time.Millisecond) // let it be handed on
		c.request(cmdRead, 0, fl+1, 0, 5, nil)
		if e, d := c.timedReply(fl + 1); e != 0 || d > holdUpBound {
			t.Fatalf("generation %d: read beside a stalled flush: errno %d after %v", gen, e, d)
		}
		close(gate)
		if e, _ := c.reply(fl); e != 0 {
			t.Fatalf("generation %d: flush errno %d", gen, e)
		}
		h += 2
		// QD1 for a while: back to being served by the reader?
		x.gate.Store(nil)
		for i := 0; i < 70; i++ {
			c.request(cmdFlush, 0, h, 0, 0, nil)
			if e, _ := c.reply(h); e != 0 {
				t.Fatal(e)
			}
			h++
		}
	}
	// Disconnect with a stalled flush on a reader that was handed on.
	gate := x.newGate()
	c.request(cmdFlush, 0, h, 0, 0, nil)
	time.Sleep(10 * time.Millisecond)
	c.request(cmdDisc, 0, h+1, 0, 0, nil)
	time.Sleep(20 * time.Millisecond)
	if x.released.Load() != 0 {
		t.Fatal("export released with a flush in flight")
	}
	close(gate)
	if e, _ := c.reply(h); e != 0 {
		t.Fatalf("last flush errno %d", e)
	}
	deadline := time.Now().Add(5 * time.Second)
	for x.released.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if r, d := x.released.Load(), x.doneAt.Load(); r == 0 || r < d {
		t.Fatalf("released %d, last flush done %d", r, d)
	}
	t.Logf("on reader %d, on worker %d", x.onReader.Load(), x.onWorker.Load())
}

// TestAloneShutdownWhileHandedOnStalled: Shutdown while a flush is stalled
// on a reader that was handed on (and a second generation stalled too)
// waits for both, replies to both, and releases after.
func TestAloneShutdownWhileHandedOnStalled(t *testing.T) {
	s, x := newProbe(t)
	c := dial(t, s)
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	c.open("probe")
	x.released.Store(0) // SET_META_CONTEXT opened and released it
	g1 := x.newGate()
	c.request(cmdFlush, 0, 1, 0, 0, nil)
	time.Sleep(10 * time.Millisecond)
	g2 := x.newGate()
	c.request(cmdFlush, 0, 2, 0, 0, nil) // read by the 2nd reader: crowded, a worker
	time.Sleep(10 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with flushes stalled", err)
	case <-time.After(50 * time.Millisecond):
	}
	if x.released.Load() != 0 {
		t.Fatal("released with flushes in flight")
	}
	close(g1)
	close(g2)
	got := map[uint64]bool{}
	for i := 0; i < 2; i++ {
		r := c.read(16)
		if binary.BigEndian.Uint32(r) != magicSimple && binary.BigEndian.Uint32(r) != magicStruct {
			t.Fatalf("bad reply %x", r)
		}
		got[binary.BigEndian.Uint64(r[8:])] = true
	}
	if !got[1] || !got[2] {
		t.Fatalf("replies %v", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if x.released.Load() == 0 || x.released.Load() < x.doneAt.Load() {
		t.Fatal("release before the last flush")
	}
}

// TestAloneWatchdogIdleRestart: after the watchdog stops (100 ms without a
// request served by a reader) a stalled flush still has the reading
// handed on.
func TestAloneWatchdogIdleRestart(t *testing.T) {
	s, x := newProbe(t)
	c := dial(t, s)
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	c.open("probe")
	h := uint64(1)
	for round := 0; round < 4; round++ {
		c.request(cmdWrite, 0, h, 0, 4, []byte("abcd"))
		c.reply(h)
		time.Sleep(150 * time.Millisecond)
		if s.watching.Load() {
			t.Fatalf("round %d: watchdog still running after 150 ms idle", round)
		}
		gate := x.newGate()
		c.request(cmdFlush, 0, h+1, 0, 0, nil)
		time.Sleep(time.Duration(round) * time.Millisecond)
		c.request(cmdRead, 0, h+2, 0, 4, nil)
		if e, d := c.timedReply(h + 2); e != 0 || d > holdUpBound {
			t.Fatalf("round %d: read beside stalled flush after watchdog idle: errno %d after %v", round, e, d)
		}
		close(gate)
		c.reply(h + 1)
		x.gate.Store(nil)
		h += 3
	}
}

// TestAloneNoGoroutineLeak: after many generations of hand-on and the
// connection closed, the goroutines come back to what they were (after
// the watchdog's idle time).
func TestAloneNoGoroutineLeak(t *testing.T) {
	s, x := newProbe(t)
	time.Sleep(200 * time.Millisecond)
	base := runtime.NumGoroutine()
	for k := 0; k < 3; k++ {
		c := dial(t, s)
		c.nc.SetDeadline(time.Now().Add(30 * time.Second))
		c.open("probe")
		for gen := uint64(0); gen < 5; gen++ {
			g := x.newGate()
			c.request(cmdFlush, 0, 10*gen, 0, 0, nil)
			time.Sleep(5 * time.Millisecond)
			c.request(cmdRead, 0, 10*gen+1, 0, 4, nil)
			c.reply(10*gen + 1)
			close(g)
			c.reply(10 * gen)
		}
		x.gate.Store(nil)
		if k%2 == 0 {
			c.request(cmdDisc, 0, 99, 0, 0, nil)
		}
		c.nc.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

// TestAloneQD2ServedConcurrently: a client that keeps two requests in
// flight, written one at a time (its second one a little after the
// first, as a guest with two threads does), with a store that takes
// 1 ms (under aloneFor). Before the change both requests ran at once;
// the crowdedFor comment says a client that keeps several in flight
// does not wait for one served by the reader.
func TestAloneQD2ServedConcurrently(t *testing.T) {
	// Not over net.Pipe, which has no socket to look into (inputWaiting):
	// the server serves sockets only.
	for _, unixSock := range []bool{false, true} {
		t.Run(fmt.Sprint("unix=", unixSock), func(t *testing.T) {
			c, x := openSlowProbe(t, unixSock)
			const n = 200
			slots := make(chan struct{}, 2)
			slots <- struct{}{}
			start := time.Now()
			go func() {
				for i := 0; i < n; i++ {
					<-slots
					if i > 1 {
						// the network's latency, or the guest's time to
						// issue its next request (spun: a timer here
						// sleeps 1 ms at least)
						for t0 := time.Now(); time.Since(t0) < 300*time.Microsecond; {
						}
					}
					c.request(cmdRead, 0, uint64(i), 0, 512, nil)
					if i == 0 {
						for t0 := time.Now(); time.Since(t0) < 300*time.Microsecond; {
						}
						slots <- struct{}{}
					}
				}
			}()
			for i := 0; i < n; i++ {
				c.readAnyReply()
				slots <- struct{}{}
			}
			el := time.Since(start)
			t.Logf("%d reads at QD2, 1 ms each: %v; peak in store %d; on reader %d, on worker %d",
				n, el, x.peak.Load(), x.onReader.Load(), x.onWorker.Load())
			if x.onReader.Load() > n/4 {
				t.Fatalf("a client keeping 2 reads in flight had %d of %d served one at a time by the reader (peak %d, %v for %d reads of 1 ms)",
					x.onReader.Load(), n, x.peak.Load(), el, n)
			}
		})
	}
}

// TestAloneQD1BackToReaderAfterBurst: a client that once sent two requests
// together, then waits for each reply, has its requests served by the
// reader again after crowdedFor requests (claim 1). The export's ReadTo
// does a little work after passing the data (releasing a lent buffer,
// metrics), as the daemon's does.
func TestAloneQD1BackToReaderAfterBurst(t *testing.T) {
	for _, tail := range []time.Duration{0, 200 * time.Microsecond} {
		for _, tcp := range []bool{false, true} {
			t.Run(fmt.Sprint("tail=", tail, ",tcp=", tcp), func(t *testing.T) {
				s, exps := newTestServer(t)
				x := &probeExport{memExport: exps["rw"], readTail: tail}
				s.Exports = probeExports{memExports: exps, x: x, exp: probeTailExport{x}}
				var c *client
				if tcp {
					c = dialTCP(t, s)
				} else {
					c = dial(t, s)
				}
				c.nc.SetDeadline(time.Now().Add(30 * time.Second))
				c.open("probe")
				// a burst of two
				c.write(append(requests(cmdRead, 0, 512, 1000, 1), requests(cmdRead, 0, 512, 1001, 1)...))
				c.readAnyReply()
				c.readAnyReply()
				for i := 0; i < 300; i++ {
					if i == 100 {
						x.onReader.Store(0)
						x.onWorker.Store(0)
					}
					c.request(cmdRead, 0, uint64(i), 0, 512, nil)
					if e, _ := c.reply(uint64(i)); e != 0 {
						t.Fatal(e)
					}
				}
				r, w := x.onReader.Load(), x.onWorker.Load()
				t.Logf("last 200 QD1 reads: %d on the reader, %d on workers", r, w)
				if w > 20 {
					t.Fatalf("QD1 client after a burst: %d of the last 200 reads on workers", w)
				}
			})
		}
	}
}

// TestAloneStress: many connections, QD1 and pipelined, a store whose
// flushes take 0-4 ms (around aloneFor), random shutdown-free close;
// every request gets exactly one reply, data reads back.
func TestAloneStress(t *testing.T) {
	s, exps := newTestServer(t)
	x := &probeExport{memExport: exps["rw"]}
	s.Exports = probeExports{memExports: exps, x: x, exp: jitterExport{x}}
	var wg sync.WaitGroup
	for k := 0; k < 6; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(k)))
			c := dial(t, s)
			c.nc.SetDeadline(time.Now().Add(60 * time.Second))
			c.open("probe")
			off := uint64(k) * 4096
			for round := 0; round < 40; round++ {
				depth := 1
				if rng.Intn(3) == 0 {
					depth = 1 + rng.Intn(8)
				}
				want := map[uint64]bool{}
				var b []byte
				for i := 0; i < depth; i++ {
					h := uint64(round*100 + i)
					want[h] = true
					p := []byte(fmt.Sprintf("%04d", round))
					var r [requestSize]byte
					binary.BigEndian.PutUint32(r[0:], magicRequest)
					typ := []uint16{cmdWrite, cmdFlush, cmdRead}[i%3]
					binary.BigEndian.PutUint16(r[6:], typ)
					binary.BigEndian.PutUint64(r[8:], h)
					binary.BigEndian.PutUint64(r[16:], off)
					if typ == cmdWrite {
						binary.BigEndian.PutUint32(r[24:], 4)
						b = append(append(b, r[:]...), p...)
					} else if typ == cmdRead {
						binary.BigEndian.PutUint32(r[24:], 4)
						b = append(b, r[:]...)
					} else {
						b = append(b, r[:]...)
					}
				}
				go c.nc.Write(b) // the client writes while replies come
				for i := 0; i < depth; i++ {
					hd := c.read(4)
					var handle uint64
					switch binary.BigEndian.Uint32(hd) {
					case magicSimple:
						r := c.read(12)
						handle = binary.BigEndian.Uint64(r[4:])
					case magicStruct:
						r := c.read(16)
						handle = binary.BigEndian.Uint64(r[4:])
						c.read(int(binary.BigEndian.Uint32(r[12:])))
					}
					if !want[handle] {
						t.Errorf("conn %d: unexpected or duplicate reply %d", k, handle)
						return
					}
					delete(want, handle)
				}
			}
			c.request(cmdDisc, 0, 0, 0, 0, nil)
		}(k)
	}
	wg.Wait()
	t.Logf("on reader %d, on worker %d, peak %d", x.onReader.Load(), x.onWorker.Load(), x.peak.Load())
}

type jitterExport struct{ *probeExport }

func (j jitterExport) Flush(ctx context.Context) error {
	j.enter()
	defer j.in.Add(-1)
	time.Sleep(time.Duration(rand.Intn(4000)) * time.Microsecond)
	return nil
}

// TestAloneSeesRequestSentMeanwhile: a request sent while the reader
// serves another alone (the client keeps two in flight) is served by a
// worker, not alone in its turn: the reader looked into the socket
// before it replied (inputWaiting). The first read is held until the
// second request was sent, whatever the scheduler does (a 1 ms read
// that ended before this goroutine looked once hung it in CI); held past
// aloneFor, the second is read by the reader handed on to, while the
// first is in flight: on a worker too.
func TestAloneSeesRequestSentMeanwhile(t *testing.T) {
	for _, unixSock := range []bool{false, true} {
		t.Run(fmt.Sprint("unix=", unixSock), func(t *testing.T) {
			c, x := openSlowProbe(t, unixSock)
			gate := make(chan struct{})
			x.readGate.Store(&gate)
			c.request(cmdRead, 0, 1, 0, 512, nil)
			deadline := time.Now().Add(10 * time.Second)
			for x.onReader.Load()+x.onWorker.Load() == 0 { // until the first is being served
				if time.Now().After(deadline) {
					t.Fatal("the first request was not served in 10 s")
				}
				runtime.Gosched()
			}
			c.request(cmdRead, 0, 2, 512, 512, nil)
			close(gate)
			c.readAnyReply()
			c.readAnyReply()
			if r, w := x.onReader.Load(), x.onWorker.Load(); r != 1 || w != 1 {
				t.Fatalf("served %d on the reader, %d on workers; want the first alone, the one sent during it on a worker", r, w)
			}
		})
	}
}
