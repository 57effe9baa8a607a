package bucket_test

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/objstore"
)

// uncachedStore counts the reads through its handles, cached and not.
type uncachedStore struct {
	*objstore.Mem
	cached, uncached atomic.Int64
}

func (s *uncachedStore) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	h, err := s.Mem.OpenHandle(ctx, name, create, writable)
	if err != nil {
		return nil, err
	}
	return &uncachedHandle{h, s}, nil
}

type uncachedHandle struct {
	objstore.Handle
	s *uncachedStore
}

func (h *uncachedHandle) ReadAt(p []byte, off int64) error {
	h.s.cached.Add(1)
	return h.Handle.ReadAt(p, off)
}

func (h *uncachedHandle) ReadAtUncached(p []byte, off int64) error {
	h.s.uncached.Add(1)
	return h.Handle.ReadAt(p, off)
}

// TestReadStreamsBlocksUncached: an object's read (an S3 GET) asks the
// store for its whole blocks around the page cache, and for the parts of
// blocks through it.
func TestReadStreamsBlocksUncached(t *testing.T) {
	s := &uncachedStore{Mem: objstore.NewMem()}
	b := &bucket.Store{S: s, BlockShift: 16, MinPart: bs}
	if err := b.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	p := data(1, 2*bs+bs/2)
	if _, err := b.PutObject(ctx, "bkt", "k", bytes.NewReader(p), int64(len(p)), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, b, "k", 0, -1); !bytes.Equal(got, p) {
		t.Fatal("the object reads back other bytes")
	}
	// Two whole blocks around the cache, the last half block through it.
	if u, c := s.uncached.Load(), s.cached.Load(); u != 2 || c != 1 {
		t.Fatalf("%d reads around the cache, %d through it; want 2 and 1", u, c)
	}
	s.uncached.Store(0)
	s.cached.Store(0)
	if got := read(t, b, "k", 100, bs); !bytes.Equal(got, p[100:100+bs]) {
		t.Fatal("the range reads back other bytes")
	}
	if u, c := s.uncached.Load(), s.cached.Load(); u != 0 || c != 2 {
		t.Fatalf("a range across two blocks: %d reads around the cache, %d through it; want 0 and 2", u, c)
	}
}
