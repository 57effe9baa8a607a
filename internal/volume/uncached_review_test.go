package volume

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestReviewUncachedContentBlocks: an image of content blocks of every
// length around 1 MiB (trailing zeros trimmed), on the file store (seen
// through Observed), reads back the same through a volume opened
// Uncached, whole and in parts, from goroutines sharing its handles; each
// read is counted once.
func TestReviewUncachedContentBlocks(t *testing.T) {
	f, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	var reads, readBytes atomic.Int64
	s := objstore.Observe(f, func(op objstore.Op) objstore.Probe {
		return func(n int64, d time.Duration, err error) {
			if op == objstore.OpReadAt {
				reads.Add(1)
				readBytes.Add(n)
			}
		}
	})
	const shift = 22
	const bsz = 1 << shift
	lens := []int{0, 100, 4096, 1<<20 - 1, 1 << 20, 1<<20 + 1, 1<<20 + 4096, 3<<20 + 7, bsz - 1, bsz}
	img := make([]byte, len(lens)*bsz)
	var entries []blockmap.Entry
	for i, n := range lens {
		blk := img[i*bsz : (i+1)*bsz]
		for j := range n {
			blk[j] = byte(j*7+i) | 1
		}
		if n == 0 {
			entries = append(entries, blockmap.Entry{})
			continue
		}
		e, _, err := PutContent(ctx, s, ContentBlock(blk))
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	id, err := CreateImage(ctx, s, uint64(len(img)), shift, entries)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Uncached: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			for i := range lens {
				p := BlockBufs(bsz).Get().(*[]byte)
				buf := *p
				for j := range buf {
					buf[j] = 0xee
				}
				off := int64(i * bsz)
				if g == 3 { // a part, through the cache
					buf = buf[:bsz-4096]
					off += 4096
				}
				if err := v.ReadAt(ctx, buf, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, img[off:off+int64(len(buf))]) {
					errs <- fmt.Errorf("goroutine %d block %d (%d bytes): other bytes", g, i, lens[i])
					return
				}
				BlockBufs(bsz).Put(p)
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
