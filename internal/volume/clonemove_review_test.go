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

// lateFresh is a LateStore over Mem, whose Stat is fresh: writers log.
type lateFresh struct{ *LateStore }

func (lateFresh) FreshStat() bool { return true }

// TestReviewLateSubBlockMoveLogged (issue 11 review of the fresh-clone
// writes): a logging writer's write past the burst that moves a sub-block
// into its own partial block times out (it may still land); the guest
// writes the same range again, flushes; then the first write lands. The
// flushed bytes, and the base's around them, are what the volume and a
// reopen read: the late write (the base's bytes around its own) must not
// reach the object the map names.
func TestReviewLateSubBlockMoveLogged(t *testing.T) {
	defer setLogBurst(0)()
	mem := objstore.NewMem()
	id := newClone(t, mem, 1)
	ls := lateFresh{NewLateStore(mem)}
	v := openLogged(t, ls, id, OpenOptions{})
	defer v.Close(ctx)
	if !v.logOn {
		t.Skip("the late store does not log")
	}
	sub := int64(bs) / 64
	want := mustRead(t, v, 0, bs)
	first := pattern(100, 7)
	if err := v.WriteAt(ctx, first, 5*sub+10, false); err != nil {
		t.Fatal(err)
	}
	copy(want[5*sub+10:], first)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	off := 40*sub + sub/2
	ls.Arm()
	if err := v.WriteAt(ctx, pattern(100, 'L'), off, false); err == nil {
		t.Fatal("the write that timed out succeeded")
	}
	second := pattern(50, 'B')
	if err := v.WriteAt(ctx, second, off+25, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ls.Land()
	got := mustRead(t, v, 0, bs)
	// The late write's range outside the second write's is unknown.
	copy(got[off:off+25], want[off:off+25])
	copy(got[off+75:off+100], want[off+75:off+100])
	copy(want[off+25:], second)
	if !bytes.Equal(got, want) {
		t.Fatal("the writer reads other bytes than the flushed ones after the late write landed")
	}
	r, err := Open(ctx, ls, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	got = mustRead(t, r, 0, bs)
	copy(got[off:off+25], want[off:off+25])
	copy(got[off+75:off+100], want[off+75:off+100])
	if !bytes.Equal(got, want) {
		t.Fatal("a reopen reads other bytes than the flushed ones after the late write landed")
	}
}
