//go:build ceph

package rados

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
)

// TestMergedWritesUnderGC: merged writes (one operation of several
// extents, whose buffers' addresses go to librados in arrays of C
// memory) while the garbage collector runs all the time, each write in a
// buffer of its own that is garbage once written. The arrays were once
// taken from malloc uninitialised: storing a buffer's address over the
// stale one there (an earlier operation's, long freed) made the write
// barrier shade the stale one, and the runtime died ("found bad pointer
// in Go heap", "found pointer to free object"), or could have marked
// freed memory live.
func TestMergedWritesUnderGC(t *testing.T) {
	s := OpenTestStore(t)
	gcLoop(t)
	const writers, writes, size = 8, 300, 4096
	want := make([][]byte, 2)
	for i := range want {
		want[i] = make([]byte, writers*writes*size/2)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range writes {
				// Writer w writes its own extents of object w%2, so
				// that the writes to an object queue and merge.
				obj := w % 2
				off := int64(((w/2)*writes + i) * size)
				p := make([]byte, size)
				for j := range p {
					p[j] = byte(rng.Uint32())
				}
				copy(want[obj][off:], p)
				if err := s.WriteAt(ctx, fmt.Sprintf("gc/%d", obj), p, off); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s.Merged() == 0 {
		t.Fatal("no write was merged with another")
	}
	for i, w := range want {
		name := fmt.Sprintf("gc/%d", i)
		if err := s.Sync(ctx, name); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(w))
		if err := s.ReadAt(ctx, name, got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("%s does not hold what was written", name)
		}
	}
}

// gcLoop runs the collector continuously (GOGC=1 too) until the test ends.
func gcLoop(t *testing.T) {
	old := debug.SetGCPercent(1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait(); debug.SetGCPercent(old) })
}
