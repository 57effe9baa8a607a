package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore/s3"
)

// cutProxy forwards TCP connections to an S3 server until it is cut:
// then it breaks every open connection and refuses new ones, as a server
// that stopped, until it is mended. It cuts itself once, when cutAfter
// bytes (if set) went to the server.
type cutProxy struct {
	l        net.Listener
	target   string
	cutAfter atomic.Int64
	sent     atomic.Int64
	mu       sync.Mutex
	down     bool
	conns    map[net.Conn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil || !p.track(up) {
			c.Close()
			if up != nil {
				up.Close()
			}
			continue
		}
		// NB: a server may answer before it read a request's body (a
		// refused conditional PUT) and close; the rest of the body is
		// drained and the answer passed on with a half close, as a TCP
		// path would, so that the client reads the answer.
		go func() {
			buf := make([]byte, 32<<10)
			for upOK := true; ; {
				n, err := c.Read(buf)
				if n > 0 && upOK {
					if _, werr := up.Write(buf[:n]); werr != nil {
						upOK = false
					} else if a := p.cutAfter.Load(); a > 0 && p.sent.Add(int64(n)) > a && p.cutAfter.CompareAndSwap(a, 0) {
						p.cut()
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
			up.Close()
		}()
		go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite() }()
	}
}

func (p *cutProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *cutProxy) mend() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// TestS3ServerStopsMidImport: the S3 server goes away in the middle of an
// image import. The import fails with an error that says so, the image
// does not exist, and once the server is back the same command imports
// it, storing what it did not store before, and the image exports
// byte-identical. (A gc would wait here for the failed import's hold,
// which it could not release with the server gone, to lapse: a minute.)
func TestS3ServerStopsMidImport(t *testing.T) {
	for _, srv := range s3.TestServerNames {
		t.Run(srv, func(t *testing.T) {
			c := s3.TestServer(t, srv)
			u, err := url.Parse(c.Endpoint)
			if err != nil {
				t.Fatal(err)
			}
			p := newCutProxy(t, u.Host)
			c.Endpoint = "http://" + p.l.Addr().String()
			e := &env{t: t, dir: t.TempDir()}
			e.store = s3.TestStoreURL(t, c, fmt.Sprintf("cut%d-%d-%s", os.Getpid(), time.Now().UnixNano()%1e9, srv)) + "&attempts=2&timeout=5s"
			e.archip("store", "init")
			img := e.randomFile("img.raw", 24<<20, 24<<20, 11)

			p.cutAfter.Store(10 << 20)
			cmd := exec.Command(archipBin, "--store", e.store, "-q", "image", "import", "--block-size", "1M", img, "img")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err == nil {
				t.Fatal("import succeeded with the S3 server gone midway")
			}
			if msg := stderr.String(); !strings.Contains(msg, "s3") {
				t.Fatalf("the failed import's error does not say the S3 server failed: %q", msg)
			}
			p.mend()
			if out, err := exec.Command(archipBin, "--store", e.store, "image", "export", "img", e.path("none.raw")).CombinedOutput(); err == nil {
				t.Fatalf("a failed import left an image behind:\n%s", out)
			}

			e.archip("image", "import", "--block-size", "1M", img, "img")
			e.archip("image", "export", "img", e.path("out.raw"))
			want, _ := os.ReadFile(img)
			got, err := os.ReadFile(e.path("out.raw"))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("the image imported again after the failure exports differently (err %v, first difference at byte %d)", err, firstDiff(got, want))
			}
		})
	}
}

// flakyWriter: for each line "OFF" of its ops file, a 4 KiB write of
// record("w", i) at OFF to the export, then a FLUSH; it prints "w i" when
// the write and "f i" when the flush was acknowledged, and "e i" when one
// failed, and goes on (a guest retries). One request at a time.
const flakyWriter = `
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i, line in enumerate(open(sys.argv[2])):
    rec = b"w %08d\n" % i
    try:
        h.pwrite((rec * (4096 // len(rec) + 1))[:4096], int(line))
        print("w", i, flush=True)
        h.flush()
        print("f", i, flush=True)
    except nbd.Error as e:
        print("e", i, e, flush=True)
        time.sleep(0.05)
`

// TestS3ServerStopsMidFlush: the S3 server goes away for a while under a
// guest that writes and flushes. The guest sees errors while it is gone
// and goes on once it is back; after the daemon is stopped and started
// again, every write that a later acknowledged flush covered reads back.
func TestS3ServerStopsMidFlush(t *testing.T) {
	needLibnbd(t)
	for _, srv := range s3.TestServerNames {
		t.Run(srv, func(t *testing.T) {
			c := s3.TestServer(t, srv)
			u, err := url.Parse(c.Endpoint)
			if err != nil {
				t.Fatal(err)
			}
			p := newCutProxy(t, u.Host)
			c.Endpoint = "http://" + p.l.Addr().String()
			e := &env{t: t, dir: t.TempDir()}
			e.store = s3.TestStoreURL(t, c, fmt.Sprintf("flush%d-%d-%s", os.Getpid(), time.Now().UnixNano()%1e9, srv)) + "&attempts=2&timeout=5s"
			const slot, size, nops = 4096, 1 << 20, 300
			e.archip("volume", "create", "v", "--size", "1M", "--block-size", "64K")
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
			offs := make([]int, nops)
			var f strings.Builder
			for i := range offs {
				offs[i] = rng.IntN(size/slot) * slot
				fmt.Fprintln(&f, offs[i])
			}
			if err := os.WriteFile(e.path("ops"), []byte(f.String()), 0o644); err != nil {
				t.Fatal(err)
			}

			d := e.serve("--flush-interval", "0")
			cmd := exec.Command("/usr/bin/python3", "-c", flakyWriter, d.uri("v"), e.path("ops"))
			out, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			wrote := make([]bool, nops)
			maxFlushed, errs := -1, 0
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				var kind string
				var i int
				fmt.Sscan(sc.Text(), &kind, &i)
				switch kind {
				case "w":
					wrote[i] = true
				case "f":
					maxFlushed = i
					if i == 40 {
						p.cut()
					}
				case "e":
					if errs++; errs == 3 {
						p.mend()
					}
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("writer: %v", err)
			}
			if errs < 3 || maxFlushed < 100 {
				t.Fatalf("%d errors while the server was gone (want 3 or more), last acknowledged flush %d (want the writer to go on after)", errs, maxFlushed)
			}
			d.kill()

			d = e.serve()
			got := []byte(run(t, "/usr/bin/python3", "-c", exportReader, d.uri("v")))
			for s := 0; s < size/slot; s++ {
				lower := -1 // the last write to s that an acknowledged flush covers
				for i := 0; i <= maxFlushed; i++ {
					if offs[i] == s*slot && wrote[i] {
						lower = i
					}
				}
				b := got[s*slot : (s+1)*slot]
				ok := lower < 0 && bytes.Equal(b, make([]byte, slot))
				for i := max(lower, 0); i < nops && !ok; i++ {
					ok = offs[i] == s*slot && bytes.Equal(b, flushEachRecord("w", i))
				}
				if !ok {
					t.Fatalf("slot %d reads %.12q..., want write %d or a later one (last acknowledged flush %d)", s, b, lower, maxFlushed)
				}
			}
			t.Logf("%d failed requests while the server was gone; last acknowledged flush %d: all present", errs, maxFlushed)
		})
	}
}
