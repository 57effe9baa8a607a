package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

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
			e.store = s3.TestStoreURL(t, c, fmt.Sprintf("cut%d-%s", os.Getpid(), srv)) + "&attempts=2&timeout=5s"
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
