//go:build ceph

package rados

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestAioWaits runs the data path with its operations waited for each
// way (aio: on the calling thread, on the completion callback's channel,
// and both at once under concurrency), and checks that each reads back
// what was written, a short object's tail as zeros, and a missing
// object as not found.
func TestAioWaits(t *testing.T) {
	for _, c := range []struct {
		name string
		max  int32
	}{{"channel", 0}, {"here", 1 << 30}, {"mixed", 2}} {
		t.Run(c.name, func(t *testing.T) {
			old := waitHereMax
			waitHereMax = c.max
			t.Cleanup(func() { waitHereMax = old })
			s := OpenTestStore(t)
			if err := s.ReadAt(ctx, "blk/missing", make([]byte, 4096), 0); !objstore.IsNotExist(err) {
				t.Fatalf("read of a missing object: %v, want not found", err)
			}
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					name := fmt.Sprintf("blk/o%d", g)
					want := bytes.Repeat([]byte{byte(g + 1)}, 8192)
					for i := range 16 {
						p := want[i*512 : (i+1)*512]
						if err := s.WriteAt(ctx, name, p, int64(i*512)); err != nil {
							t.Error(err)
							return
						}
					}
					got := make([]byte, 12288) // past the object's end
					for i := range got {
						got[i] = 0xee
					}
					if err := s.ReadAt(ctx, name, got, 0); err != nil {
						t.Error(err)
						return
					}
					if !bytes.Equal(got[:8192], want) || !bytes.Equal(got[8192:], make([]byte, 4096)) {
						t.Errorf("%s: read back differs from what was written", name)
					}
				}()
			}
			wg.Wait()
			if n := inFlight.Load(); n != 0 {
				t.Fatalf("%d operations still counted in flight", n)
			}
		})
	}
}
