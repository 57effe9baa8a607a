package nbd

import (
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// holdConn: writes are held in memory while hold is set and go out in
// one system call at flush, so that two TLS records reach the server
// in one segment (what a client's TCP stack does with two requests
// written back to back while the previous segment is unacknowledged).
type holdConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte
}

func (h *holdConn) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

func (h *holdConn) flush() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold = false
	b := h.buf
	h.buf = nil
	_, err := h.Conn.Write(b)
	return err
}

func (h *holdConn) start() { h.mu.Lock(); h.hold = true; h.mu.Unlock() }

// dialTLSProbe serves s (with TLS) on loopback TCP and returns a client
// upgraded with STARTTLS whose writes can be held (see holdConn).
func dialTLSProbe(t *testing.T, s *Server) (*client, *holdConn) {
	dir := t.TempDir()
	ca := newTestCA(t, "test CA")
	ca.issue(t, dir, "server", true)
	ca.writePEM(t, filepath.Join(dir, "ca-cert.pem"))
	cfg, err := ServerTLS(filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "ca-cert.pem"), false)
	if err != nil {
		t.Fatal(err)
	}
	s.TLS = cfg
	c := dialTCP(t, s)
	tcfg := c.startTLS(ca)
	hc := &holdConn{Conn: c.nc}
	tc := tls.Client(hc, tcfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	return &client{t: t, nc: tc}, hc
}

// TestAloneTLSPairsNotOneAtATime: a client that keeps two reads in
// flight, sent together (two TLS records in one segment), with a store
// that takes 1 ms. Over plain TCP the pair runs at once (the second is
// in the reader's buffer); over TLS the second record is read by the TLS
// layer into its own buffer along with the first, where neither
// bufio's Buffered() nor SIOCINQ on c.raw sees it: served alone, the
// first would hold up the second, every pair, for good. So nothing is
// served alone under TLS (this failed before that).
func TestAloneTLSPairsNotOneAtATime(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprint("tls=", useTLS), func(t *testing.T) {
			s, x := newProbe(t)
			x.readDelay = time.Millisecond
			var c *client
			var hc *holdConn
			if useTLS {
				c, hc = dialTLSProbe(t, s)
			} else {
				c = dialTCP(t, s)
			}
			if hc != nil {
				c.negotiate("probe") // the greeting came before STARTTLS
			} else {
				c.open("probe")
			}
			const pairs = 100
			for i := 0; i < pairs; i++ {
				if hc != nil {
					hc.start()
				}
				b := append(requests(cmdRead, 0, 512, 2*i, 1), requests(cmdRead, 0, 512, 2*i+1, 1)...)
				if hc != nil {
					// two writes: two records (as two requests from two
					// guest threads are)
					c.write(b[:requestSize])
					c.write(b[requestSize:])
					if err := hc.flush(); err != nil {
						t.Fatal(err)
					}
				} else {
					c.write(b)
				}
				c.readAnyReply()
				c.readAnyReply()
			}
			t.Logf("%d pairs: on reader %d, on worker %d, peak in store %d", pairs, x.onReader.Load(), x.onWorker.Load(), x.peak.Load())
			if x.onReader.Load() > pairs/4 {
				t.Fatalf("a client sending its reads two at a time had %d of %d served one at a time by the reader (peak %d)",
					x.onReader.Load(), 2*pairs, x.peak.Load())
			}
		})
	}
}

// TestAloneUnrepliedStaysRight: oversized writes (refused on the
// reader), errors, a panic, block status (structured), reads through
// ReadTo, on a socket, in QD1 and bursts: every request gets exactly one
// reply, and afterwards conn.unreplied is 0 and a QD1 client is back on
// the reader.
func TestAloneUnrepliedStaysRight(t *testing.T) {
	s, exps := newTestServer(t)
	s.MaxRequest = 64 << 10
	x := &probeExport{memExport: exps["rw"]}
	s.Exports = probeExports{memExports: exps, x: x}
	c := dialTCP(t, s)
	c.open("probe")
	big := make([]byte, 128<<10)
	h := uint64(1)
	for round := 0; round < 20; round++ {
		// QD1: oversized write, then read over the limit, out of range, flag error
		c.request(cmdWrite, 0, h, 0, uint32(len(big)), big)
		if e, _ := c.reply(h); e != EINVAL {
			t.Fatalf("oversized write errno %d", e)
		}
		h++
		c.request(cmdRead, 0, h, 0, 1<<20, nil)
		if e, _ := c.reply(h); e != EINVAL {
			t.Fatalf("oversized read errno %d", e)
		}
		h++
		c.request(cmdRead, 0, h, 1<<30, 512, nil)
		if e, _ := c.reply(h); e != EINVAL {
			t.Fatalf("out of range errno %d", e)
		}
		h++
		c.request(cmdBlockStatus, 0, h, 0, 4096, nil)
		c.readAnyReply()
		h++
		// a burst with an oversized write inside
		var b []byte
		b = append(b, requests(cmdRead, 0, 512, int(h), 1)...)
		w := requests(cmdWrite, 0, uint32(len(big)), int(h+1), 1)
		b = append(append(b, w...), big...)
		b = append(b, requests(cmdRead, 0, 512, int(h+2), 1)...)
		c.write(b)
		for i := 0; i < 3; i++ {
			c.readAnyReply()
		}
		h += 3
	}
	// QD1 for a while: back on the reader?
	for i := 0; i < 200; i++ {
		if i == 100 {
			x.onReader.Store(0)
			x.onWorker.Store(0)
		}
		c.request(cmdRead, 0, h, 0, 512, nil)
		if e, _ := c.reply(h); e != 0 {
			t.Fatal(e)
		}
		h++
	}
	var un int32
	s.mu.Lock()
	for cn := range s.conns {
		un = cn.unreplied.Load()
	}
	s.mu.Unlock()
	t.Logf("unreplied %d; last 100 QD1: reader %d worker %d", un, x.onReader.Load(), x.onWorker.Load())
	if un != 0 || x.onWorker.Load() > 10 {
		t.Fatalf("unreplied %d, %d of the last 100 QD1 reads on workers", un, x.onWorker.Load())
	}
}
