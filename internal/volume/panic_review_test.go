package volume

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// panicStore panics in its next in-place write once armed: a bug in a
// backend, or a panic further down the write path.
type panicStore struct {
	objstore.Store // a Mem: only its Store methods, so that writes in place go through WriteAt
	mem            *objstore.Mem
	armed          atomic.Bool
}

func (p *panicStore) WriteAt(ctx context.Context, name string, b []byte, off int64) error {
	if p.armed.CompareAndSwap(true, false) {
		panic("backend exploded")
	}
	return p.mem.WriteAt(ctx, name, b, off)
}

func (p *panicStore) Sync(ctx context.Context, name string) error { return p.mem.Sync(ctx, name) }

// TestPanicInWriteLeavesNoLock (review of issue 10 #8): the NBD server
// recovers a panic in a request and answers EIO, and the daemon goes on
// serving. That is only true if the volume's locks unwind with the panic:
// a write that panicked while holding the gate left it held, and the
// next flush (the one at disconnect too) waited for ever.
func TestPanicInWriteLeavesNoLock(t *testing.T) {
	mem := objstore.NewMem()
	s := &panicStore{Store: mem, mem: mem}
	id, err := Create(ctx, s, CreateOptions{Size: 1 << 20, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, make([]byte, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	for _, op := range []struct {
		name string
		fn   func() error
	}{
		{"write", func() error { return v.WriteAt(ctx, make([]byte, 4096), 0, false) }},
		{"write zeroes", func() error { return v.WriteZeroes(ctx, 0, 4096, true, false) }},
	} {
		s.armed.Store(true)
		panicked := func() (p bool) {
			defer func() { p = recover() != nil }()
			op.fn()
			return false
		}()
		if !panicked {
			t.Fatalf("%s: the store's panic did not happen", op.name)
		}
		done := make(chan error, 1)
		go func() { done <- v.Flush(ctx) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("flush after a %s that panicked: still waiting after 10 s", op.name)
		}
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// swapPanicStore panics in its next Swap (a head swap) once armed.
type swapPanicStore struct {
	*objstore.Mem
	armed atomic.Bool
}

func (p *swapPanicStore) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (objstore.Version, error) {
	if p.armed.CompareAndSwap(true, false) {
		panic("backend exploded")
	}
	return p.Mem.Swap(ctx, name, b, old)
}

// TestPanicInFlushKeepsWrites (review of issue 10 #8): a flush that
// panics (recovered by the NBD server: the client gets EIO) must leave
// the writes it was persisting to the next flush. It took them out of
// the handle's dirty set first, so the client's next FLUSH succeeded
// without them, and they were lost at close.
func TestPanicInFlushKeepsWrites(t *testing.T) {
	s := &swapPanicStore{Mem: objstore.NewMem()}
	id, err := Create(ctx, s, CreateOptions{Size: 1 << 20, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("x"), 4096)
	if err := v.WriteAt(ctx, data, 8192, false); err != nil {
		t.Fatal(err)
	}
	s.armed.Store(true)
	panicked := func() (p bool) {
		defer func() { p = recover() != nil }()
		v.Flush(ctx)
		return false
	}()
	if !panicked {
		t.Fatal("the store's panic did not happen")
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if err := r.ReadAt(ctx, got, 8192); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("a write acknowledged before a flush that panicked is lost after the next flush succeeded")
	}
}
