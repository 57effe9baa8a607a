package volume

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFollowerConcurrentDelta (issue 11 review2): followers read while
// the writer writes increasing byte values into blocks a snapshot shares
// (partial blocks, then whole), flushes into the head's delta, and
// checkpoints, snapshots and grows the volume beside. A read that starts
// after a flush returned must see, at every byte, at least the value it
// had at that flush (values only grow): a follower that keeps an entry
// the delta overrides, or misses one, reads an older value.
func TestFollowerConcurrentDelta(t *testing.T) {
	for _, md := range []int{1, 4, 256} {
		t.Run(fmt.Sprint(md), func(t *testing.T) {
			defer setMaxDelta(md)()
			followerConcurrentDelta(t, uint64(md))
		})
	}
}

func followerConcurrentDelta(t *testing.T, seed uint64) {
	ctx := context.Background()
	for _, s := range []objstore.Store{objstore.NewMem(), newFileStore(t)} {
		const blocks = 6
		size := int64(blocks * bs)
		v := NewTestVolume(t, s, uint64(size), SmallShift)
		cur := bytes.Repeat([]byte{1}, int(size))
		if err := v.WriteAt(ctx, cur, 0, false); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Snapshot(ctx); err != nil {
			t.Fatal(err)
		}
		var flushed atomic.Pointer[[]byte]
		snap := append([]byte(nil), cur...)
		flushed.Store(&snap)
		done := make(chan struct{})
		var wg sync.WaitGroup
		for r := 0; r < 2; r++ {
			f, err := Open(ctx, s, v.ID(), OpenOptions{Follow: true})
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer f.Close(ctx)
				got := make([]byte, size)
				for {
					select {
					case <-done:
						return
					default:
					}
					want := *flushed.Load()
					if err := f.ReadAt(ctx, got, 0); err != nil {
						t.Errorf("follower read: %v", err)
						return
					}
					for i := range got {
						if got[i] < want[i] {
							t.Errorf("follower reads byte %d (block %d) = %d, older than the %d flushed before the read", i, int64(i)/bs, got[i], want[i])
							return
						}
					}
				}
			}()
		}
		rng := rand.New(rand.NewPCG(seed, 3))
		for c := 2; c < 200 && !t.Failed(); c++ {
			off := rng.Int64N(size)
			n := 1 + rng.Int64N(min(size-off, bs/16))
			if rng.IntN(5) == 0 {
				n = min(size-off, 1+rng.Int64N(2*bs))
			}
			if err := v.WriteAt(ctx, bytes.Repeat([]byte{byte(c)}, int(n)), off, false); err != nil {
				t.Fatal(err)
			}
			copy(cur[off:], bytes.Repeat([]byte{byte(c)}, int(n)))
			var err error
			switch rng.IntN(8) {
			case 0:
				err = v.Checkpoint(ctx)
			case 1:
				_, err = v.Snapshot(ctx)
			case 2, 3, 4:
				err = v.Flush(ctx)
			default:
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			snap := append([]byte(nil), cur...)
			flushed.Store(&snap)
		}
		close(done)
		wg.Wait()
		v.Close(ctx)
	}
}
