package s3

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// putCounter counts the PUTs (Put, Create, Swap) and HEADs (Stat) made
// through it, offering the capabilities of the store it wraps.
type putCounter struct {
	*Store
	mu          sync.Mutex
	puts, heads int
	bytes       int64 // PUT since the last takeBytes
}

func (c *putCounter) Capabilities() objstore.Caps { return objstore.CapabilitiesOf(c.Store) }
func (c *putCounter) Unwrap() objstore.Store      { return c.Store }

func (c *putCounter) count(puts, heads int) {
	c.mu.Lock()
	c.puts += puts
	c.heads += heads
	c.mu.Unlock()
}

func (c *putCounter) take() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, h := c.puts, c.heads
	c.puts, c.heads = 0, 0
	return p, h
}

func (c *putCounter) countBytes(n int) {
	c.mu.Lock()
	c.bytes += int64(n)
	c.mu.Unlock()
}

func (c *putCounter) takeBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.bytes
	c.bytes = 0
	return n
}

func (c *putCounter) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	c.count(1, 0)
	c.countBytes(len(data))
	return c.Store.Put(ctx, name, data)
}

func (c *putCounter) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	c.count(1, 0)
	c.countBytes(len(data))
	return c.Store.Create(ctx, name, data)
}

func (c *putCounter) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	c.count(1, 0)
	c.countBytes(len(data))
	return c.Store.Swap(ctx, name, data, old)
}

func (c *putCounter) Stat(ctx context.Context, name string) (objstore.Info, error) {
	c.count(0, 1)
	return c.Store.Stat(ctx, name)
}

// TestVolumeFlushIsOnePut (issue 13): on a real server, a volume's flush
// after small writes is one PUT (a segment of its write log; no HEAD: a
// taker fences the chain), what was flushed reads back after the writer
// is abandoned and the volume taken over, and the abandoned writer's next
// flush meets the taker's fence (ErrFenced). (Before the segmented log,
// each flush put every block it wrote and swapped the head; before the
// fence, it also made a HEAD.)
func TestVolumeFlushIsOnePut(t *testing.T) {
	for _, srv := range TestServerNames {
		t.Run(srv, func(t *testing.T) {
			ctx := context.Background()
			s := &putCounter{Store: OpenTestStore(t, TestServer(t, srv))}
			const bs = 1 << 16
			id, err := volume.Create(ctx, s, volume.CreateOptions{Size: 4 * bs, BlockShift: 16})
			if err != nil {
				t.Fatal(err)
			}
			v, err := volume.Open(ctx, s, id, volume.OpenOptions{Writable: true, Log: true})
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, 4*bs)
			s.take()
			for f := range 4 {
				for i := range 32 {
					off := int64((f*32+i)*4096*7) % (4*bs - 4096)
					p := bytes.Repeat([]byte{byte(f*32 + i + 1)}, 4096)
					if err := v.WriteAt(ctx, p, off, false); err != nil {
						t.Fatal(err)
					}
					copy(want[off:], p)
				}
				if err := v.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				if puts, heads := s.take(); puts != 1 || heads != 0 {
					t.Fatalf("flush %d: %d PUTs and %d HEADs, want 1 and 0", f, puts, heads)
				}
			}
			w, err := volume.Open(ctx, s, id, volume.OpenOptions{Writable: true, Log: true, NewEpoch: true})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4*bs)
			if err := w.ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("the taker reads other bytes than were flushed")
			}
			if err := v.WriteAt(ctx, bytes.Repeat([]byte{0xee}, 4096), 0, false); err != nil {
				t.Fatal(err)
			}
			if err := v.Flush(ctx); !errors.Is(err, volume.ErrFenced) {
				t.Fatalf("the abandoned writer's flush after the takeover: %v, want ErrFenced", err)
			}
			if err := w.ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("the taker reads the abandoned writer's write after the takeover")
			}
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestVolumeIndexBytesPut (issue 13): on a real server, 1024 random 4 KiB
// writes with a flush every 32 and a Close PUT at most 1.1 bytes per byte
// written plus the write log index that Close stores instead of the
// blocks the log touched (before: a 4 MiB PUT per touched block, 16x
// here); a read-only open reads the index and the bytes back.
func TestVolumeIndexBytesPut(t *testing.T) {
	for _, srv := range TestServerNames {
		t.Run(srv, func(t *testing.T) {
			ctx := context.Background()
			s := &putCounter{Store: OpenTestStore(t, TestServer(t, srv))}
			const (
				shift  = 22
				blocks = 16
				writes = 1024
			)
			id, err := volume.Create(ctx, s, volume.CreateOptions{Size: blocks << shift, BlockShift: shift})
			if err != nil {
				t.Fatal(err)
			}
			v, err := volume.Open(ctx, s, id, volume.OpenOptions{Writable: true, Log: true})
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, blocks<<shift)
			rng := rand.New(rand.NewPCG(3, 4))
			s.take()
			s.takeBytes()
			for i := 1; i <= writes; i++ {
				off := rng.Int64N(blocks<<shift/4096) * 4096
				p := bytes.Repeat([]byte{byte(i)}, 4096)
				if err := v.WriteAt(ctx, p, off, false); err != nil {
					t.Fatal(err)
				}
				copy(want[off:], p)
				if i%32 == 0 {
					if err := v.Flush(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := v.Close(ctx); err != nil {
				t.Fatal(err)
			}
			puts, _ := s.take()
			n := s.takeBytes()
			h, _, err := volume.ReadHead(ctx, s, id)
			if err != nil {
				t.Fatal(err)
			}
			if h.Index.IsZero() {
				t.Fatal("the closed head names no write log index")
			}
			idx, _, err := s.Get(ctx, blockmap.IndexName(id, h.Index.Epoch, h.Index.Seq))
			if err != nil {
				t.Fatal(err)
			}
			data := int64(writes * 4096)
			t.Logf("%s: %d random 4 KiB writes, a flush every 32, Close: %d PUTs, %d bytes (%.3f per byte; index %d bytes)",
				srv, writes, puts, n, float64(n)/float64(data), len(idx))
			if float64(n) > 1.1*float64(data)+float64(len(idx)) {
				t.Errorf("%d bytes PUT for %d bytes written and an index of %d", n, data, len(idx))
			}
			r, err := volume.Open(ctx, s, id, volume.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(want))
			if err := r.ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("a read-only open after Close reads other bytes")
			}
		})
	}
}
