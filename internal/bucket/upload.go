package bucket

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/volume"
)

// An upload's data becomes a read-only map (volume.CreateImage's, made
// with its parts: volume.ImageHead, volume.WriteImageSegments, blocks
// stored by volume.PutContentAs) in two durable stages instead of three,
// before its record (docs/format.md, "Crash ordering"):
//
//  1. its blocks, and its map's segments as soon as every block is hashed
//     (the entries are the hashes, known before the blocks are stored);
//  2. once all of them are durable, its head.
//
// A segment is no reference until a head names it: a crash in stage 1
// leaves blocks and segments that nothing names, which collections
// delete. The head, the first object that references the others, is
// written only once they are durable, so no head (and no collection
// marking from one) ever names a missing segment or block. The record
// that names the head is the caller's: an object's after the head (it
// makes the object visible), a part's together with the head (see
// UploadPart).

// staged is an upload's data stored but for its map's head.
type staged struct {
	head *blockmap.Head // nil for no data
	sum  []byte         // the data's MD5
}

// pieces returns the pieces of the staged data.
func (st *staged) pieces() []Piece {
	if st.head == nil {
		return nil
	}
	return []Piece{{Map: st.head.ID, Size: int64(st.head.Size)}}
}

// writeHead makes the staged map's head durable: the map exists.
func (b *Store) writeHead(ctx context.Context, st *staged) error {
	if st.head == nil {
		return nil
	}
	if _, err := b.S.Create(ctx, blockmap.HeadName(st.head.ID), blockmap.EncodeHead(st.head)); err != nil {
		return fmt.Errorf("bucket: write a map's head: %w", err)
	}
	return nil
}

// deleteHead deletes the staged map's head (its segments and blocks are
// left to collections).
func (b *Store) deleteHead(ctx context.Context, st *staged) {
	if st.head != nil {
		b.S.Delete(ctx, blockmap.HeadName(st.head.ID))
	}
}

// store reads r (size bytes, or to its end if size < 0), stores its
// blocks and its map's segments, and returns the head to write.
func (b *Store) store(ctx context.Context, r io.Reader, size int64) (*staged, error) {
	cr := &countingReader{r: r, h: md5.New(), want: size}
	if size == 0 {
		return &staged{sum: cr.h.Sum(nil)}, nil
	}
	h, err := b.storeBlocks(ctx, cr)
	if err != nil {
		return nil, err
	}
	return &staged{head: h, sum: cr.h.Sum(nil)}, nil
}

// storeBlocks chunks r into blocks, hashes them and stores those not
// stored already (deduplicated), uploadWorkers at a time, in bounded
// memory; once every block is hashed it writes the map's segments, while
// the last blocks are still being stored. It returns the map's head (nil
// if r had no bytes), not written.
func (b *Store) storeBlocks(ctx context.Context, r io.Reader) (*blockmap.Head, error) {
	shift := b.BlockShift
	if shift == 0 {
		shift = blockmap.DefaultShift
	}
	bs := int64(1) << shift
	id := blockmap.NewID()
	pool := sync.Pool{New: func() any { b := make([]byte, bs); return &b }}
	zero := make([]byte, bs)

	type job struct {
		idx int64
		buf *[]byte
		n   int
	}
	var (
		mu      sync.Mutex
		entries []blockmap.Entry
		read    bool                  // the reader is at the end
		pending int                   // blocks sent and not hashed yet
		hashed  = make(chan struct{}) // closed once read and every block hashed
		size    int64
		h       *blockmap.Head
	)
	// allHashed closes hashed once the last block is hashed; mu held.
	allHashed := func() {
		if read && pending == 0 {
			close(hashed)
		}
	}
	jobs := make(chan job, uploadWorkers)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		for idx := int64(0); ; idx++ {
			bp := pool.Get().(*[]byte)
			n, err := io.ReadFull(r, *bp)
			if n > 0 && idx >= blockmap.MaxBlocks {
				return fmt.Errorf("%w: %d bytes or more is over the maximum of %d blocks of %d KiB",
					volume.ErrBadSize, size+int64(n), blockmap.MaxBlocks, bs>>10)
			}
			if n == 0 {
				pool.Put(bp)
			} else {
				mu.Lock()
				pending++
				size += int64(n)
				mu.Unlock()
				select {
				case jobs <- job{idx, bp, n}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				mu.Lock()
				read = true
				allHashed()
				mu.Unlock()
				return nil
			}
			if err != nil {
				return err
			}
		}
	})
	for w := 0; w < uploadWorkers; w++ {
		g.Go(func() error {
			for j := range jobs {
				data := (*j.buf)[:j.n]
				var e blockmap.Entry
				zeros := bytes.Equal(data, zero[:j.n])
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
				mu.Unlock()
				if !zeros {
					if _, err := volume.PutContentAs(gctx, b.S, e, data); err != nil {
						return fmt.Errorf("bucket: store block %d: %w", j.idx, err)
					}
				}
				pool.Put(j.buf)
			}
			return nil
		})
	}
	g.Go(func() error {
		select {
		case <-hashed:
		case <-gctx.Done():
			return gctx.Err()
		}
		// No block is sent any more: entries and size are final.
		if size == 0 {
			return nil
		}
		n := (size + bs - 1) / bs
		entries = append(entries, make([]blockmap.Entry, n-int64(len(entries)))...)
		head, err := volume.ImageHead(id, uint64(size), shift, len(entries))
		if err != nil {
			return err
		}
		if head.Segments, err = volume.WriteImageSegments(gctx, b.S, id, entries, uploadWorkers); err != nil {
			return err
		}
		h = head
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return h, nil
}
