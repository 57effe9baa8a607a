package volume

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestReviewSegLogFormFlips: which form a write log has (one object, or
// a chain of segments) follows the store's capabilities, and those of a
// store of several pools change with its configuration (a pool without
// in-place writes added or removed: the router has RangeWriter only if
// every part has it, though logs live in the metadata store). A writer
// dies with flushed records in its log; the next writer opens the volume
// through a store whose capabilities differ: it must replay the log in
// the form it was written, not find it "missing" and drop acknowledged
// flushes.
func TestReviewSegLogFormFlips(t *testing.T) {
	for _, tc := range []struct {
		name        string
		write, read func(objstore.Store) objstore.Store
	}{
		{"segments read in place", wrapSeg, plain},
		{"object read as segments", plain, wrapSeg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			mem := objstore.NewMem()
			id := newClone(t, tc.write(mem), 4)
			v := openLogged(t, tc.write(mem), id, OpenOptions{})
			want := readAll(t, v)
			for k := range 3 {
				off := int64(k*bs + 512)
				if err := v.WriteAt(ctx, pattern(4096, byte(0x40+k)), off, false); err != nil {
					t.Fatal(err)
				}
				copy(want[off:], pattern(4096, byte(0x40+k)))
			}
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if len(v.mu.index) == 0 {
				t.Fatal("no write was logged")
			}
			// The writer dies (no Close); another opens the volume
			// through the store with other capabilities.
			taker, err := Open(ctx, tc.read(mem), id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, taker); !bytes.Equal(got, want) {
				t.Fatal("the taker lost flushed writes of the log written in the other form")
			}
			if err := taker.Close(ctx); err != nil {
				t.Fatal(err)
			}
			var left []string
			mem.List(ctx, "vol/", func(in objstore.Info) error {
				if blockmap.ParseName(in.Name).Kind == blockmap.LogObject && !fenceObject(t, mem, in.Name) {
					left = append(left, in.Name)
				}
				return nil
			})
			if len(left) > 0 {
				t.Errorf("the taker left the old log behind: %v", left)
			}
			r, err := Open(ctx, tc.write(mem), id, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, r); !bytes.Equal(got, want) {
				t.Fatal("after the taker's close, the volume lost flushed writes")
			}
		})
	}
}

func plain(s objstore.Store) objstore.Store { return s }

// TestReviewSegLogSegmentCount: a guest that flushes after each small
// write (a database's fsync per commit) makes a segment of about 600
// bytes per flush; under the 512 MiB byte bound alone, the log would
// reach about a million segments before a checkpoint, and a takeover's
// replay, which follows the chain one GET after the other (each
// segment's name is where the one before ends), would take hours at S3
// latency (and the index of segments read, quadratic time). The number
// of segments since From is bounded too.
func TestReviewSegLogSegmentCount(t *testing.T) {
	defer setSegCount(8)()
	ctx := context.Background()
	s := newOpStore()
	id, v := newSegVolume(t, s, 4)
	want := readAll(t, v)
	for i := range 40 {
		off := int64((i*7919)%(4*bs-512)) &^ 511
		p := pattern(512, byte(i+2))
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		// (Segments the write log index references are before From:
		// not replayed.)
		refs, n := indexSegs(t, s, id), 0
		for _, name := range segments(t, s) {
			if !refs[name] {
				n++
			}
		}
		if n > 8 {
			t.Fatalf("after %d flushes, %d segments in the log (bound 8)", i+1, n)
		}
	}
	taker := takeOver(t, s, id, want)
	if err := taker.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestReviewSegLogFailedSegmentWrite: a segment written without a commit
// (the buffer passed segMax) fails (unknown outcome, every try; or a full
// store). The writes whose records it holds were answered; reads still
// find them (in memory), later writes to their blocks and to others
// succeed, the next flush checkpoints (the log takes no more records),
// and a takeover finds everything flushed.
func TestReviewSegLogFailedSegmentWrite(t *testing.T) {
	for _, fail := range []error{objstore.ErrTimeout, objstore.ErrNoSpace} {
		t.Run(fail.Error(), func(t *testing.T) {
			defer setSegMax(6000)()
			ctx := context.Background()
			s := newOpStore()
			id, v := newSegVolume(t, s, 4)
			want := readAll(t, v)
			failing, failed := true, 0
			s.onCreate = func(name string, data []byte) (objstore.Version, error) {
				if failing && blockmap.ParseName(name).Kind == blockmap.LogObject {
					failed++
					if fail == objstore.ErrTimeout {
						s.Store.Create(ctx, name, data) // landed, but nobody heard
					}
					return 0, fail
				}
				return s.Store.Create(ctx, name, data)
			}
			write := func(off int64, b byte) {
				t.Helper()
				if err := v.WriteAt(ctx, pattern(1000, b), off, false); err != nil {
					t.Fatal(err)
				}
				copy(want[off:], pattern(1000, b))
			}
			for i := range 8 { // past segMax: a segment write, which fails
				write(int64(i*1000), byte(0x10+i))
			}
			if failed == 0 {
				t.Fatal("no segment write failed")
			}
			if got := readAll(t, v); !bytes.Equal(got, want) {
				t.Fatal("the writer reads other bytes than it wrote after a failed segment write")
			}
			failing = false
			write(500, 0x30)            // a block with logged bytes
			write(int64(2*bs+10), 0x31) // another
			if got := readAll(t, v); !bytes.Equal(got, want) {
				t.Fatal("the writer reads other bytes than it wrote")
			}
			if err := v.Flush(ctx); err != nil {
				// One failed flush is allowed; the next must succeed.
				if err := v.Flush(ctx); err != nil {
					t.Fatalf("flush: %v", err)
				}
			}
			write(3*bs+100, 0x32)
			if err := v.Flush(ctx); err != nil {
				t.Fatalf("flush: %v", err)
			}
			taker := takeOver(t, s, id, want)
			if err := taker.Close(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReviewSegLogConcurrentBuffer: writers, each in its own range, read
// back what they wrote while other writers cut the buffer into segments
// (held in flight a moment), flushes commit and checkpoints run; every
// read sees the writer's last bytes, and a takeover sees every flushed
// byte. (Run with -race.)
func TestReviewSegLogConcurrentBuffer(t *testing.T) {
	defer setSegMax(3000)()
	defer setSegCount(5)()
	ctx := context.Background()
	s := newOpStore()
	id, v := newSegVolume(t, s, 4)
	want := readAll(t, v)
	s.onCreate = func(name string, data []byte) (objstore.Version, error) {
		for range 20 {
			runtime.Gosched()
		}
		return s.Store.Create(ctx, name, data)
	}
	const workers = 4
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := int64(w * bs)
			mine := slices.Clone(want[base : base+bs])
			for i := range 60 {
				off := int64((i*977)%(bs-700)) &^ 15
				p := pattern(700, byte(w*64+i%64+1))
				if err := v.WriteAt(ctx, p, base+off, false); err != nil {
					errs <- err
					return
				}
				copy(mine[off:], p)
				got := make([]byte, bs)
				if err := v.ReadAt(ctx, got, base); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, mine) {
					errs <- fmt.Errorf("worker %d, write %d: reads other bytes than it wrote", w, i)
					return
				}
			}
			copy(want[base:], mine)
		}()
	}
	done, stop := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			if err := v.Flush(ctx); err != nil {
				errs <- err
				return
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-done
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	taker := takeOver(t, s, id, want)
	if err := taker.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
