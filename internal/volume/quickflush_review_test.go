package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestReviewCloseCoversWriteInFlight (review of the flush without the
// gate): Close flushes, then shuts the handle; a write that was in flight
// when Close began and that returns nil before Close does is persisted by
// Close's flush, as it was when every flush took its cut holding the
// gate (which waited for the write). With the cut taken without the gate
// (nothing dirty yet: the allocating write has not set its entry), Close's
// flush stored nothing, shut then waited for the write, and its entry,
// set in memory after the flush, was never stored: the write returned
// nil and read back as zeros after a reopen, with no crash at all.
func TestReviewCloseCoversWriteInFlight(t *testing.T) {
	m := objstore.NewCrashable()
	s := &stallingWrites{Mem: m, halfway: make(chan struct{}), released: make(chan struct{})}
	v := NewTestVolume(t, s, 4*bs, SmallShift)
	if err := v.WriteAt(ctx, pattern(bs, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b := pattern(bs, 2)
	s.armed.Store(true)
	wrote := make(chan error, 1)
	go func() { wrote <- v.WriteAt(ctx, b, 2*bs, false) }() // allocates block 2
	<-s.halfway
	closed := make(chan error, 1)
	go func() { closed <- v.Close(ctx) }()
	// Wait until Close waits for the gate (a writer pending on it makes
	// TryRLock fail): its flush before the change, shut after it.
	for deadline := time.Now().Add(20 * time.Second); ; {
		if !v.gate.TryRLock() {
			break
		}
		v.gate.RUnlock()
		if time.Now().After(deadline) {
			close(s.released)
			t.Fatal("Close never waited for the write in flight")
		}
		time.Sleep(time.Millisecond)
	}
	close(s.released)
	werr, cerr := <-wrote, <-closed
	if cerr != nil {
		t.Fatalf("close: %v", cerr)
	}
	if werr != nil {
		return // refused: nothing was promised
	}
	r, err := Open(ctx, m, v.ID(), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	if got := mustRead(t, r, 2*bs, bs); !bytes.Equal(got, b) {
		t.Fatal("a write that returned nil before Close did, which then returned nil, is not in the volume after it")
	}
}

// jitterStore delays the in-place writes and syncs of data and log
// objects by a few random microseconds, so that flushes meet writes at
// every step.
type jitterStore struct{ *objstore.Mem }

type jitterHandle struct{ objstore.Handle }

func jitter() {
	if n := rand.IntN(4); n > 0 {
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
	} else {
		runtime.Gosched()
	}
}

func (h jitterHandle) WriteAt(p []byte, off int64) error {
	jitter()
	n := len(p) / 2
	if err := h.Handle.WriteAt(p[:n], off); err != nil {
		return err
	}
	jitter()
	return h.Handle.WriteAt(p[n:], off+int64(n))
}

func (h jitterHandle) Sync() error { jitter(); return h.Handle.Sync() }

func (s jitterStore) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	h, err := s.Mem.OpenHandle(ctx, name, create, writable)
	if err != nil {
		return h, err
	}
	return jitterHandle{h}, nil
}

// TestReviewFlushCoversCompletedWritesConcurrent (review of the flush
// without the gate): writers write, trim and rewrite their own blocks
// (in place, and allocating after a trim: flushes with and without the
// gate mix) while flushes run; after each flush a crash image is taken.
// Every 512-byte chunk of every image must read the value of the last
// write to it that completed before that flush began, or of a later one.
func TestReviewFlushCoversCompletedWritesConcurrent(t *testing.T) {
	for _, logged := range []bool{false, true} {
		t.Run(fmt.Sprintf("log=%v", logged), func(t *testing.T) {
			const blocks, writers, chunk = 8, 4, 512
			m := objstore.NewCrashable()
			s := jitterStore{m}
			var v *Volume
			if logged {
				v = openLogged(t, s, newClone(t, s, blocks), OpenOptions{})
			} else {
				v = NewTestVolume(t, s, blocks*bs, SmallShift)
			}
			defer v.Close(ctx)
			const per = bs / chunk
			// hist[c]: the values chunk c took, by completed writes, in order
			// (0: trimmed); a newClone block starts as pattern 1 bytes.
			var mu sync.Mutex
			hist := make([][]uint32, blocks*per)
			start := uint32(0)
			if logged {
				start = 0x01010101
			}
			for c := range hist {
				hist[c] = []uint32{start}
			}
			var version atomic.Uint32
			version.Store(1000)
			stamp := func(n int) ([]byte, uint32) {
				ver := version.Add(1)
				p := make([]byte, n)
				for i := 0; i < n; i += 4 {
					binary.LittleEndian.PutUint32(p[i:], ver)
				}
				return p, ver
			}
			type fuaImage struct {
				m   *objstore.Mem
				off int64
				p   []byte
			}
			fuas := make(chan fuaImage, 100000)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			errs := make(chan error, writers+1)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 7))
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						b := int64(w*(blocks/writers) + rng.IntN(blocks/writers))
						c0, n := 0, per
						var val uint32
						var err error
						switch k := rng.IntN(10); {
						case k == 0:
							err = v.Trim(ctx, b*bs, bs)
						case k < 4:
							c0 = rng.IntN(per)
							n = 1 + rng.IntN(per-c0)
							fallthrough
						default:
							var p []byte
							p, val = stamp(n * chunk)
							fua := rng.IntN(8) == 0
							err = v.WriteAt(ctx, p, b*bs+int64(c0*chunk), fua)
							if err == nil && fua {
								// Durable now: a crash image reads it (no
								// later write to the block has begun).
								fuas <- fuaImage{m.Crash(rng), b*bs + int64(c0*chunk), p}
							}
						}
						if err != nil {
							errs <- fmt.Errorf("write block %d: %w", b, err)
							return
						}
						mu.Lock()
						for c := c0; c < c0+n; c++ {
							hist[int(b)*per+c] = append(hist[int(b)*per+c], val)
						}
						mu.Unlock()
					}
				}()
			}
			type image struct {
				m    *objstore.Mem
				snap []int
			}
			var images []image
			rng := rand.New(rand.NewPCG(99, 1))
			for range 150 {
				mu.Lock()
				snap := make([]int, len(hist))
				for c := range hist {
					snap[c] = len(hist[c])
				}
				mu.Unlock()
				if err := v.Flush(ctx); err != nil {
					close(stop)
					wg.Wait()
					t.Fatal(err)
				}
				images = append(images, image{m.Crash(rng), snap})
				time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
			}
			close(stop)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			t.Logf("gate cuts %d of %d flushes", v.gateCuts.Load(), len(images))
			close(fuas)
			nf := 0
			for f := range fuas {
				nf++
				r, err := Open(ctx, f.m, v.ID(), OpenOptions{})
				if err != nil {
					t.Fatalf("FUA image: open: %v", err)
				}
				got := mustRead(t, r, f.off, len(f.p))
				r.Close(ctx)
				if !bytes.Equal(got, f.p) {
					t.Fatalf("a crash image taken after a write with FUA returned reads other bytes at %d", f.off)
				}
			}
			t.Logf("%d FUA images", nf)
			for i, im := range images {
				r, err := Open(ctx, im.m, v.ID(), OpenOptions{})
				if err != nil {
					t.Fatalf("image %d: open: %v", i, err)
				}
				got := mustRead(t, r, 0, blocks*bs)
				r.Close(ctx)
				// (Word by word: an unsynced write may be torn anywhere.)
				for c := range hist {
					for j := c * chunk; j < (c+1)*chunk; j += 4 {
						o := binary.LittleEndian.Uint32(got[j:])
						if !slices.Contains(hist[c][im.snap[c]-1:], o) {
							t.Fatalf("image %d: chunk %d (block %d) reads %#x at %d; the writes completed before the flush: %x, after: %x",
								i, c, c/per, o, j, hist[c][:im.snap[c]], hist[c][im.snap[c]:])
						}
					}
				}
			}
		})
	}
}

// TestReviewQuickFlushThenTakeoverFencesLateWrite (review of the flush
// without the gate): writer a's in-place write is stalled in the store
// while a flushes without the gate (the flush does not cover it and
// succeeds); b then takes the volume over and copies the block; a's
// write lands and returns. a's next flush must not report it durable
// (ErrFenced), and b reads what a flushed before the takeover.
func TestReviewQuickFlushThenTakeoverFencesLateWrite(t *testing.T) {
	m := objstore.NewMem()
	s := &stallingWrites{Mem: m, halfway: make(chan struct{}), released: make(chan struct{})}
	a := NewTestVolume(t, s, 2*bs, SmallShift)
	first := pattern(bs, 1)
	if err := a.WriteAt(ctx, first, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	before := a.gateCuts.Load()
	s.armed.Store(true)
	wrote := make(chan error, 1)
	go func() { wrote <- a.WriteAt(ctx, pattern(100, 2), 10, false) }()
	<-s.halfway
	if err := a.Flush(ctx); err != nil {
		close(s.released)
		t.Fatal(err)
	}
	if a.gateCuts.Load() != before {
		t.Error("the flush took the gate; the test needs the cut without it")
	}
	b, err := Open(ctx, m, a.ID(), OpenOptions{Writable: true, NewEpoch: true})
	if err != nil {
		close(s.released)
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if err := b.WriteAt(ctx, []byte("b"), bs-1, true); err != nil { // copies block 0
		close(s.released)
		t.Fatal(err)
	}
	close(s.released)
	if err := <-wrote; err != nil {
		return // refused: nothing promised
	}
	if err := a.Flush(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("a's flush after its write landed past b's takeover: %v, want ErrFenced", err)
	}
	got := mustRead(t, b, 0, bs-1)
	want := first[:bs-1]
	if !bytes.Equal(got[:10], want[:10]) || !bytes.Equal(got[110:], want[110:]) {
		t.Fatal("b reads other bytes than a flushed outside the late write's range")
	}
}
