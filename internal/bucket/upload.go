package bucket

import (
	"context"
	"crypto/md5"
	"fmt"
	"io"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/volume"
)

// An upload's data becomes a read-only map (volume.CreateImage's, made
// with its parts: volume.ImageHead, volume.WriteImageSegments, blocks
// stored by image.StoreBlocks) in two durable stages instead of three,
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

// storeBlocks stores r's blocks (image.StoreBlocks: hashed, deduplicated,
// uploadWorkers at a time, in bounded memory) and, once every block is
// hashed, its map's segments, while the last blocks are still being
// stored. It returns the map's head (nil if r had no bytes), not written.
func (b *Store) storeBlocks(ctx context.Context, r io.Reader) (*blockmap.Head, error) {
	opts := image.Options{BlockShift: b.BlockShift, Workers: uploadWorkers}
	var h *blockmap.Head
	_, _, err := image.StoreBlocks(ctx, b.S, r, -1, opts, func(ctx context.Context, entries []blockmap.Entry, size int64) error {
		if size == 0 {
			return nil
		}
		shift := b.BlockShift
		if shift == 0 {
			shift = blockmap.DefaultShift
		}
		head, err := volume.ImageHead(blockmap.NewID(), uint64(size), shift, len(entries))
		if err != nil {
			return err
		}
		if head.Segments, err = volume.WriteImageSegments(ctx, b.S, head.ID, entries, uploadWorkers); err != nil {
			return err
		}
		h = head
		return nil
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}
