package volume

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// stallingWrites stalls, once armed, the next in-place write through a
// writable handle of a data object halfway: half its bytes are written,
// then it waits for release.
type stallingWrites struct {
	*objstore.Mem
	armed    atomic.Bool
	halfway  chan struct{}
	released chan struct{}
}

type stallingHandle struct {
	objstore.Handle
	s *stallingWrites
}

func (h stallingHandle) WriteAt(p []byte, off int64) error {
	if !h.s.armed.CompareAndSwap(true, false) {
		return h.Handle.WriteAt(p, off)
	}
	n := len(p) / 2
	if err := h.Handle.WriteAt(p[:n], off); err != nil {
		return err
	}
	close(h.s.halfway)
	<-h.s.released
	return h.Handle.WriteAt(p[n:], off+int64(n))
}

func (s *stallingWrites) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	h, err := s.Mem.OpenHandle(ctx, name, create, writable)
	if err != nil || !writable || !strings.Contains(name, "/d/") {
		return h, err
	}
	return stallingHandle{h, s}, nil
}

// TestReviewSubBlockMovedInReadMidway (issue 11 review of the fresh-clone
// writes): a logging writer's write past the burst moves a sub-block its
// partial block lacks into the block's object in place (the base's bytes
// around the guest's). Stalled halfway through that write, a reader of
// the same volume and a follower reading the flushed map see the base's
// bytes outside the guest's range (never zeros or the half-written
// object) and old or new bytes inside it; after it, the new bytes.
func TestReviewSubBlockMovedInReadMidway(t *testing.T) {
	defer setLogBurst(0)()
	s := &stallingWrites{Mem: objstore.NewMem(), halfway: make(chan struct{}), released: make(chan struct{})}
	id := newClone(t, s, 1)
	v := openLogged(t, s, id, OpenOptions{})
	defer v.Close(ctx)
	sub := int64(bs) / 64
	base := mustRead(t, v, 0, bs)
	first := pattern(100, 7)
	if err := v.WriteAt(ctx, first, 5*sub+10, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	old := append([]byte(nil), base...)
	copy(old[5*sub+10:], first)
	f, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(ctx)

	off, p := 40*sub+sub/2+3, pattern(100, 9)
	want := append([]byte(nil), old...)
	copy(want[off:], p)
	s.armed.Store(true)
	done := make(chan error, 1)
	go func() { done <- v.WriteAt(ctx, p, off, false) }()
	<-s.halfway
	for _, r := range []struct {
		name string
		v    *Volume
	}{{"the writer", v}, {"a follower", f}} {
		got := mustRead(t, r.v, 0, bs)
		for i := range got {
			if got[i] != old[i] && got[i] != want[i] {
				t.Errorf("%s, mid-move: byte %d (sub-block %d) reads %d, want %d (old) or %d (new)",
					r.name, i, int64(i)/sub, got[i], old[i], want[i])
				break
			}
		}
		if !bytes.Equal(got[:off], old[:off]) || !bytes.Equal(got[off+100:], old[off+100:]) {
			t.Errorf("%s, mid-move: bytes outside the write changed", r.name)
		}
	}
	close(s.released)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wantBytes(t, v, 0, want, "after the write")
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	wantBytes(t, r, 0, want, "reopened after the flush")
}
