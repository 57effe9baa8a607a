//go:build ceph

package rados

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestReview34AloneUnderGC: operations alone in flight (blocked waits:
// aio read/write, ReadLend, the merger's single-extent write whose waiter
// is a goroutine), mixed with bursts that take the callback, under a
// collector that runs all the time; every byte read back must be what
// was written, and the counter must end at zero.
func TestReview34AloneUnderGC(t *testing.T) {
	s := OpenTestStore(t)
	gcLoop(t)
	const objs, size = 4, 8192
	want := make([][]byte, objs)
	for i := range want {
		want[i] = make([]byte, 64*size)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	before := alone.Load()
	deadline := time.Now().Add(3 * time.Second)
	for it := 0; time.Now().Before(deadline); it++ {
		o := rng.IntN(objs)
		name := fmt.Sprintf("r34/%d", o)
		off := int64(rng.IntN(64)) * size
		switch rng.IntN(4) {
		case 0, 1: // write alone, then sync
			p := make([]byte, size)
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			copy(want[o][off:], p)
			if err := s.WriteAt(ctx, name, p, off); err != nil {
				t.Fatal(err)
			}
			if err := s.Sync(ctx, name); err != nil {
				t.Fatal(err)
			}
		case 2: // ReadAt alone
			if err := s.Sync(ctx, name); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, size)
			n, err := aio(ctx, s.data, false, name, got, off)
			if err != nil {
				// object may not exist yet
				continue
			}
			if !bytes.Equal(got[:n], want[o][off:off+int64(n)]) {
				t.Fatalf("it %d: ReadAt %s@%d: other bytes", it, name, off)
			}
		case 3: // ReadLend alone
			err := s.ReadLend(ctx, name, off, size, func(bufs [][]byte) error {
				got := bytes.Join(bufs, nil)
				if !bytes.Equal(got, want[o][off:off+int64(len(got))]) {
					return fmt.Errorf("it %d: ReadLend %s@%d: other bytes", it, name, off)
				}
				return nil
			})
			if err != nil && !isNotFound(err) {
				t.Fatal(err)
			}
		}
	}
	if alone.Load() == before {
		t.Fatal("nothing waited blocked")
	}
	if n := opsInFlight.Load(); n != 0 {
		t.Fatalf("opsInFlight = %d after all operations ended", n)
	}
}

func isNotFound(err error) bool {
	return err != nil && bytes.Contains([]byte(err.Error()), []byte("not found"))
}

// TestReview34PanicInSubmitKeepsCounter: a panic in aioSubmit between
// opStart and the send (the merger recovers such panics: start's defer,
// run's recover) must not leave opsInFlight counted, or every later
// operation of the process takes the callback (claim e).
func TestReview34PanicInSubmitKeepsCounter(t *testing.T) {
	s := OpenTestStore(t)
	base := opsInFlight.Load()
	for _, ext := range [][]extent{
		{{p: nil, off: 0}},                         // single extent
		{{p: []byte{1}, off: 0}, {p: nil, off: 1}}, // merged
	} {
		func() {
			defer func() { recover() }()
			aioSubmit(s.data, "r34/panic", ext, func(error) {})
		}()
	}
	if n := opsInFlight.Load(); n != base {
		t.Fatalf("opsInFlight = %d after panicking submits, want %d: an operation alone no longer waits blocked", n, base)
	}
}

// TestReview34ReadLendAloneDuringFn: once ReadLend's read has completed
// and fn runs, nothing is in flight; an operation started from fn (or by
// anyone while fn runs, e.g. while fn writes a reply to a slow socket) is
// alone and should wait blocked.
func TestReview34ReadLendAloneDuringFn(t *testing.T) {
	s := OpenTestStore(t)
	p := bytes.Repeat([]byte{3}, 4096)
	if err := s.WriteAt(ctx, "r34/l", p, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx, "r34/l"); err != nil {
		t.Fatal(err)
	}
	var inFn int64
	err := s.ReadLend(ctx, "r34/l", 0, 4096, func([][]byte) error {
		inFn = opsInFlight.Load()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if inFn != 0 {
		t.Fatalf("opsInFlight = %d while ReadLend's fn runs, its read complete: operations meanwhile take the callback", inFn)
	}
}
