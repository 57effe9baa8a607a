package volume

import (
	"bytes"
	"context"
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
				if blockmap.ParseName(in.Name).Kind == blockmap.LogObject {
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
		if n := len(segments(t, s)); n > 8 {
			t.Fatalf("after %d flushes, %d segments in the log (bound 8)", i+1, n)
		}
	}
	taker, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, taker); !bytes.Equal(got, want) {
		t.Fatal("the taker reads other bytes than were flushed")
	}
	if err := taker.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
