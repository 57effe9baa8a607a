// Package image moves whole disk images in and out of the store.
//
// Import reads a raw image block by block, hashes each block and stores
// it as a content object if no identical block is stored yet (put if
// absent), in parallel. All-zero blocks are never stored. The result is a
// read-only volume (an image) whose map points only at content blocks,
// so importing the same data twice stores nothing new, and clones of an
// image share its blocks. StoreBlocks is that pipeline without the map,
// for callers that write the map themselves (the S3 API's uploads).
//
// Memory: about Workers+1 block buffers (4 MiB each by default), one map
// entry (40 bytes) per block, and one more per distinct block (those sent
// to be stored, so that equal blocks are stored once), for at most
// blockmap.MaxBlocks blocks: a larger image is refused before it is read when its size is known, and
// at the first block past the cap when it is a stream.
package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// Options tune Import and Export.
type Options struct {
	BlockShift uint8 // Import: block size of the image (0: the default, 4 MiB)
	Workers    int   // blocks processed at once (0: DefaultWorkers)
	// Progress, if set, is called with the bytes done so far and the
	// total (-1 when the total is not known yet). It may be called from
	// several goroutines, never at once.
	Progress func(done, total int64)

	maxBlocks int64 // Import: 0 is blockmap.MaxBlocks; tests lower it
}

// DefaultWorkers is the default number of blocks in flight. Hashing
// needs only a core or two; the rest overlap the latency of durable
// writes (each stored block is fsynced), measured best at about 16 on a
// 2-core machine whose disk writes 500 MB/s.
func DefaultWorkers() int { return max(16, 2*runtime.GOMAXPROCS(0)) }

func (o *Options) shift() uint8 {
	if o.BlockShift == 0 {
		return blockmap.DefaultShift
	}
	return o.BlockShift
}

func (o *Options) blocksCap() int64 {
	if o.maxBlocks == 0 {
		return blockmap.MaxBlocks
	}
	return o.maxBlocks
}

func (o *Options) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return DefaultWorkers()
}

// progress serializes calls to Options.Progress.
type progress struct {
	mu    sync.Mutex
	fn    func(done, total int64)
	done  int64
	total int64
}

func (p *progress) add(n int64) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.fn(p.done, p.total)
}

// ImportStats say what Import did.
type ImportStats struct {
	ID          blockmap.ID
	Size        int64
	Blocks      int64 // blocks in the image
	ZeroBlocks  int64 // all zeros: not stored
	NewBlocks   int64 // stored now
	DedupBlocks int64 // already stored (in this image or elsewhere)
	StoredBytes int64 // bytes of the new content objects
}

// Import stores the raw image read from r as a new read-only volume.
// size is the image's size if known, or -1 to read r to its end.
func Import(ctx context.Context, s objstore.Store, r io.Reader, size int64, opts Options) (ImportStats, error) {
	shift := opts.shift()
	maxBlocks := opts.blocksCap()
	if size >= 0 && (size+(1<<shift)-1)>>shift > maxBlocks {
		return ImportStats{}, tooLarge(size, shift, maxBlocks)
	}
	st, entries, err := StoreBlocks(ctx, s, r, size, opts, nil)
	if err != nil {
		return st, err
	}
	if size >= 0 && st.Size != size {
		return st, fmt.Errorf("image: read %d bytes, expected %d (the file changed while importing?)", st.Size, size)
	}
	if st.Size == 0 {
		return st, errors.New("image: the image is empty")
	}
	st.ID, err = volume.CreateImage(ctx, s, uint64(st.Size), shift, entries)
	return st, err
}

// Hashed is what StoreBlocks calls once it has read r to its end and
// hashed every block: entries is the map (a zero entry for a block of
// zeros), size the bytes read. It runs while the last blocks are still
// being stored, so that what depends only on the entries (a map's
// segments) is written alongside them; its error fails StoreBlocks.
type Hashed func(ctx context.Context, entries []blockmap.Entry, size int64) error

// StoreBlocks reads r to its end in blocks of opts.BlockShift, hashes
// each, and stores those not all zeros as content objects if no
// identical one is stored yet, opts.Workers at a time (the memory bound
// in the package comment). It refuses a stream past the cap on blocks
// (volume.ErrBadSize). size is r's size if known, or -1: for progress
// only. It calls hashed, if not nil, as Hashed says, and returns what it
// stored and the map's entries, one per block; the map is the caller's
// to write.
func StoreBlocks(ctx context.Context, s objstore.Store, r io.Reader, size int64, opts Options, hashed Hashed) (ImportStats, []blockmap.Entry, error) {
	shift := opts.shift()
	bs := int64(1) << shift
	maxBlocks := opts.blocksCap()
	st := ImportStats{}
	pr := &progress{fn: opts.Progress, total: size}
	nw := opts.workers()
	pool := volume.BlockBufs(bs)

	type job struct {
		idx int64
		buf *[]byte
		n   int
	}
	var (
		mu      sync.Mutex
		entries []blockmap.Entry
		sent    = map[blockmap.Entry]bool{} // content being stored or stored by a worker
		read    bool                        // the reader is at the end
		pending int                         // blocks sent and not hashed yet
		all     = make(chan struct{})       // closed once read and every block hashed
	)
	// allHashed closes all once the last block is hashed; mu held.
	allHashed := func() {
		if read && pending == 0 {
			close(all)
		}
	}
	jobs := make(chan job, nw)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		for idx := int64(0); ; idx++ {
			bp := pool.Get().(*[]byte)
			n, err := io.ReadFull(r, *bp)
			if n > 0 && idx >= maxBlocks {
				return tooLarge(st.Size+int64(n), shift, maxBlocks)
			}
			if n > 0 {
				mu.Lock()
				pending++
				st.Size += int64(n)
				mu.Unlock()
				select {
				case jobs <- job{idx, bp, n}:
				case <-gctx.Done():
					return gctx.Err()
				}
			} else {
				pool.Put(bp)
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				mu.Lock()
				read = true
				allHashed()
				mu.Unlock()
				return nil
			}
			if err != nil {
				return fmt.Errorf("image: read: %w", err)
			}
		}
	})
	for w := 0; w < nw; w++ {
		g.Go(func() error {
			for j := range jobs {
				data := (*j.buf)[:j.n]
				var e blockmap.Entry
				zeros := allZeros(data)
				if !zeros {
					data = volume.ContentBlock(data)
					e = blockmap.ContentEntry(sha256.Sum256(data))
				}
				mu.Lock()
				if need := j.idx + 1; int64(len(entries)) < need {
					entries = append(entries, make([]blockmap.Entry, need-int64(len(entries)))...)
				}
				entries[j.idx] = e
				pending--
				allHashed()
				// A block equal to one another worker stores already is
				// not stored twice: if that store fails, so does this
				// call.
				dup := !zeros && sent[e]
				if !zeros {
					sent[e] = true
				}
				mu.Unlock()
				if zeros {
					atomic.AddInt64(&st.ZeroBlocks, 1)
				} else if dup {
					atomic.AddInt64(&st.DedupBlocks, 1)
				} else if stored, err := volume.PutContentAs(gctx, s, e, data); err != nil {
					return fmt.Errorf("image: store block %d: %w", j.idx, err)
				} else if stored {
					atomic.AddInt64(&st.NewBlocks, 1)
					atomic.AddInt64(&st.StoredBytes, int64(len(data)))
				} else {
					atomic.AddInt64(&st.DedupBlocks, 1)
				}
				pool.Put(j.buf)
				pr.add(int64(j.n))
			}
			return nil
		})
	}
	g.Go(func() error {
		select {
		case <-all:
		case <-gctx.Done():
			return gctx.Err()
		}
		// No block is sent any more: entries and the size are final.
		st.Blocks = (st.Size + bs - 1) / bs
		entries = append(entries, make([]blockmap.Entry, st.Blocks-int64(len(entries)))...)
		if hashed == nil {
			return nil
		}
		return hashed(gctx, entries, st.Size)
	})
	if err := g.Wait(); err != nil {
		return st, nil, err
	}
	return st, entries, nil
}

// zeros is what allZeros compares with, a piece at a time.
var zeros [64 << 10]byte

// allZeros tells whether p holds only zero bytes.
func allZeros(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeros))
		if !bytes.Equal(p[:n], zeros[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// tooLarge says that an image of at least size bytes is over the cap.
func tooLarge(size int64, shift uint8, maxBlocks int64) error {
	return fmt.Errorf("image: %d bytes or more is over the maximum of %d blocks of %d KiB (%d bytes); import with a larger --block-size (%w)",
		size, maxBlocks, 1<<shift>>10, maxBlocks<<shift, volume.ErrBadSize)
}

// Export writes the whole volume to w. Zero blocks and all-zero data
// are skipped, so a file that w writes into stays sparse; the caller
// sets the file's size (Truncate) so that a trailing hole is kept.
func Export(ctx context.Context, v *volume.Volume, w io.WriterAt, opts Options) error {
	bs := v.BlockSize()
	size := v.Size()
	// Blocks to skip: those that read as zeros whole, by BlockStatus,
	// not by the map alone: a block the map has as zero may hold logged
	// bytes (a write log, or the write log index a closed volume on a
	// store without in-place writes keeps).
	ext, err := v.BlockStatus(ctx, 0, size)
	if err != nil {
		return err
	}
	nblocks := (size + bs - 1) / bs
	zeroBlock := make([]bool, nblocks)
	for _, x := range ext {
		if !x.Zero {
			continue
		}
		for b := (x.Offset + bs - 1) / bs; b < nblocks && min((b+1)*bs, size) <= x.Offset+x.Length; b++ {
			zeroBlock[b] = true
		}
	}
	pr := &progress{fn: opts.Progress, total: size}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.workers())
	pool := volume.BlockBufs(bs)
	for b := range nblocks {
		off := b * bs
		n := min(bs, size-off)
		if zeroBlock[b] {
			pr.add(n)
			continue
		}
		g.Go(func() error {
			bp := pool.Get().(*[]byte)
			defer pool.Put(bp)
			p := (*bp)[:n]
			if err := v.ReadAt(gctx, p, off); err != nil {
				return err
			}
			if !allZeros(p) {
				if _, err := w.WriteAt(p, off); err != nil {
					return fmt.Errorf("image: write: %w", err)
				}
			}
			pr.add(n)
			return nil
		})
	}
	return g.Wait()
}

// ExportStream writes the whole volume to w in order, zeros included,
// for pipes.
func ExportStream(ctx context.Context, v *volume.Volume, w io.Writer, opts Options) error {
	bs := v.BlockSize()
	size := v.Size()
	pr := &progress{fn: opts.Progress, total: size}
	p := make([]byte, bs)
	for off := int64(0); off < size; off += bs {
		n := min(bs, size-off)
		if err := v.ReadAt(ctx, p[:n], off); err != nil {
			return err
		}
		if _, err := w.Write(p[:n]); err != nil {
			return fmt.Errorf("image: write: %w", err)
		}
		pr.add(n)
	}
	return nil
}
