package volume

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestPartialSharedBlocksConcurrentCrash (issue 11 review2): writers
// whose byte ranges interleave inside the same blocks (stripes of 700
// bytes, not aligned to sub-blocks, so every sub-block is shared by two
// writers) write, FUA-write and flush blocks that a snapshot shares
// (partial blocks, and blocks made whole by a later write), beside
// snapshots, seals, resizes and flushes, with the head's delta limited
// to 2 entries or not. After each acknowledged FUA write or flush a
// crash image must read every byte the writer knows durable, and at the
// end the volume and a reopen read every byte written.
func TestPartialSharedBlocksConcurrentCrash(t *testing.T) {
	for seed := uint64(1); seed <= seeds(4); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if seed%2 == 0 {
				defer setMaxDelta(2)()
			}
			partialSharedConcurrent(t, seed, false)
		})
	}
}

// TestPartialSharedBlocksConcurrentCrashLogged (issue 11 review of the
// fresh-clone writes): the same on a logging writer, whose writes past
// the burst to its own partial blocks move sub-blocks into them in place
// and leave them partial; with a burst of 0 every write that is not
// logged takes that path, and with the default some are logged.
func TestPartialSharedBlocksConcurrentCrashLogged(t *testing.T) {
	for seed := uint64(1); seed <= seeds(4); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if seed%2 == 0 {
				defer setMaxDelta(2)()
			}
			if seed%4 < 2 {
				defer setLogBurst(0)()
			}
			partialSharedConcurrent(t, seed, true)
		})
	}
}

func partialSharedConcurrent(t *testing.T, seed uint64, logged bool) {
	ctx := context.Background()
	mem := objstore.NewCrashable()
	const writers, blocks, stripe = 3, 3, 700
	size := int64(blocks * bs)
	id, err := Create(ctx, mem, CreateOptions{Size: uint64(size), BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, mem, id, OpenOptions{Writable: true, Log: logged})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	v.handles.max = 2
	initial := make([]byte, size)
	rng0 := rand.New(rand.NewPCG(seed, 1))
	for i := range initial {
		initial[i] = byte(1 + rng0.IntN(255))
	}
	if err := v.WriteAt(ctx, initial, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	owner := func(i int64) int { return int(i/stripe) % writers }
	var crashMu sync.Mutex
	crashRng := rand.New(rand.NewPCG(seed, 99))
	crash := func() *objstore.Mem {
		crashMu.Lock()
		defer crashMu.Unlock()
		return mem.Crash(crashRng)
	}
	stop := make(chan struct{})
	var others sync.WaitGroup
	others.Add(1)
	go func() {
		defer others.Done()
		rng := rand.New(rand.NewPCG(seed, 7))
		grown := uint64(size)
		for {
			select {
			case <-stop:
				return
			default:
			}
			var err error
			switch rng.IntN(5) {
			case 0, 1:
				_, err = v.Snapshot(ctx)
			case 2:
				err = v.Seal(ctx)
			case 3:
				grown += bs / 3
				err = v.Resize(ctx, grown)
			default:
				err = v.Flush(ctx)
			}
			if err != nil {
				t.Errorf("background op: %v", err)
				return
			}
		}
	}()
	final := append([]byte(nil), initial...)
	var finalMu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)+10))
			data := append([]byte(nil), initial...) // its bytes are right
			known := make([]bool, size)
			for i := range known {
				known[i] = owner(int64(i)) == w
			}
			check := func(what string) {
				img := crash()
				r, err := Open(ctx, img, id, OpenOptions{})
				if err != nil {
					t.Errorf("writer %d, after %s: open the crash image: %v", w, what, err)
					return
				}
				got := make([]byte, size)
				if err := r.ReadAt(ctx, got, 0); err != nil {
					t.Errorf("writer %d, after %s: read the crash image: %v", w, what, err)
					return
				}
				for i := range got {
					if known[i] && owner(int64(i)) == w && got[i] != data[i] {
						t.Errorf("writer %d, after %s: byte %d (block %d, sub-block %d) reads %d after a crash, want %d (durable)",
							w, what, i, i/bs, i%bs/(bs/64), got[i], data[i])
						return
					}
				}
			}
			for i := 0; i < 60 && !t.Failed(); i++ {
				// One of its stripes, or a part of it.
				var s int64
				for {
					s = rng.Int64N((size + stripe - 1) / stripe)
					if owner(s*stripe) == w {
						break
					}
				}
				lo := s*stripe + rng.Int64N(stripe/2)
				hi := min(size, s*stripe+stripe-rng.Int64N(stripe/2))
				p := bytes.Repeat([]byte{byte(1 + rng.IntN(255))}, int(hi-lo))
				switch op := rng.IntN(10); {
				case op < 5:
					if err := v.WriteAt(ctx, p, lo, true); err != nil {
						t.Errorf("writer %d: FUA write: %v", w, err)
						return
					}
					copy(data[lo:], p)
					for j := lo; j < hi; j++ {
						known[j] = true
					}
					check(fmt.Sprintf("FUA write %d+%d", lo, hi-lo))
				case op < 8:
					if err := v.WriteAt(ctx, p, lo, false); err != nil {
						t.Errorf("writer %d: write: %v", w, err)
						return
					}
					copy(data[lo:], p)
					clear(known[lo:hi])
				default:
					if err := v.Flush(ctx); err != nil {
						t.Errorf("writer %d: flush: %v", w, err)
						return
					}
					for j := range known {
						known[j] = true
					}
					check("flush")
				}
			}
			finalMu.Lock()
			for i := range data {
				if owner(int64(i)) == w {
					final[i] = data[i]
				}
			}
			finalMu.Unlock()
		}()
	}
	wg.Wait()
	close(stop)
	others.Wait()
	if t.Failed() {
		return
	}
	wantBytes(t, v, 0, final, "after the writers")
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, crash(), id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, r, 0, final, "a crash image after the last flush")
}
