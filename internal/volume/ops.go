package volume

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// CreateOptions describe a new volume.
type CreateOptions struct {
	Size       uint64
	BlockShift uint8       // 0: blockmap.DefaultShift
	ID         blockmap.ID // zero: a new one; else one from blockmap.NewID that the caller names meanwhile (one that names a head already: objstore.ErrExists)
}

// checkGeometry checks a size and block size for a new map: at most
// blockmap.MaxBlocks blocks, the bound of what an open holds in memory.
func checkGeometry(size uint64, shift uint8) error {
	if shift < blockmap.MinBlockShift || shift > blockmap.MaxBlockShift {
		return fmt.Errorf("%w: block size 2^%d (must be a power of two from 64 KiB to 32 MiB)", ErrBadSize, shift)
	}
	if size == 0 {
		return fmt.Errorf("%w: 0 bytes (must be at least 1 byte)", ErrBadSize)
	}
	if max := blockmap.MaxSizeFor(shift); size > max {
		return fmt.Errorf("%w: %d bytes is over the maximum of %d bytes (%d blocks of %d KiB: %s); use larger blocks for a larger volume",
			ErrBadSize, size, max, blockmap.MaxBlocks, 1<<shift>>10, formatBinary(max))
	}
	return nil
}

// formatBinary prints a power-of-two size: 16 TiB.
func formatBinary(n uint64) string {
	for _, u := range []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"} {
		if n < 1024 || n%1024 != 0 {
			return fmt.Sprintf("%d %s", n, u)
		}
		n /= 1024
	}
	return fmt.Sprintf("%d EiB", n)
}

// Create makes a new, empty volume and returns its ID.
func Create(ctx context.Context, s objstore.Store, opts CreateOptions) (blockmap.ID, error) {
	if opts.BlockShift == 0 {
		opts.BlockShift = blockmap.DefaultShift
	}
	if err := checkGeometry(opts.Size, opts.BlockShift); err != nil {
		return blockmap.ID{}, err
	}
	if opts.ID.IsZero() {
		opts.ID = blockmap.NewID()
	}
	h := &blockmap.Head{ID: opts.ID, Size: opts.Size, BlockShift: opts.BlockShift, Epoch: 1}
	if _, err := s.Create(ctx, blockmap.HeadName(h.ID), blockmap.EncodeHead(h)); err != nil {
		return blockmap.ID{}, fmt.Errorf("volume: create: %w", err)
	}
	return h.ID, nil
}

// CreateImage stores a read-only volume whose map is entries (an image
// import): it writes the segments, then the head.
func CreateImage(ctx context.Context, s objstore.Store, size uint64, shift uint8, entries []blockmap.Entry) (blockmap.ID, error) {
	h, err := ImageHead(blockmap.NewID(), size, shift, len(entries))
	if err != nil {
		return blockmap.ID{}, err
	}
	if h.Segments, err = WriteImageSegments(ctx, s, h.ID, entries, 1); err != nil {
		return blockmap.ID{}, err
	}
	if _, err := s.Create(ctx, blockmap.HeadName(h.ID), blockmap.EncodeHead(h)); err != nil {
		return blockmap.ID{}, fmt.Errorf("volume: write image head: %w", err)
	}
	return h.ID, nil
}

// ImageHead returns the head CreateImage writes for a map id of size
// bytes in blocks of 2^shift bytes and n entries, but for its segments
// (WriteImageSegments'), for a writer that writes them and then the head
// itself: the head must be written only once they are durable.
func ImageHead(id blockmap.ID, size uint64, shift uint8, n int) (*blockmap.Head, error) {
	if err := checkGeometry(size, shift); err != nil {
		return nil, err
	}
	h := &blockmap.Head{ID: id, Size: size, BlockShift: shift, ReadOnly: true}
	if int64(n) != h.Blocks() {
		return nil, fmt.Errorf("volume: image map has %d entries for %d blocks", n, h.Blocks())
	}
	h.SeqReserved = uint64(n/blockmap.SegmentEntries + 1)
	return h, nil
}

// WriteImageSegments writes the segments of read-only map id's entries
// (none for a range of zero blocks), up to workers at once, and returns
// their references, in order.
func WriteImageSegments(ctx context.Context, s objstore.Store, id blockmap.ID, entries []blockmap.Entry, workers int) ([]blockmap.SegmentRef, error) {
	var refs []blockmap.SegmentRef
	var data [][]byte
	for lo, idx := 0, uint32(0); lo < len(entries); lo, idx = lo+blockmap.SegmentEntries, idx+1 {
		seg := entries[lo:min(lo+blockmap.SegmentEntries, len(entries))]
		if allZero(seg) {
			continue
		}
		b, crc := blockmap.EncodeSegment(idx, seg)
		refs = append(refs, blockmap.SegmentRef{Index: idx, Owner: id, Seq: uint64(idx), CRC: crc})
		data = append(data, b)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(workers, 1))
	for i := range refs {
		g.Go(func() error {
			if _, err := s.Create(gctx, refs[i].Name(), data[i]); err != nil {
				return fmt.Errorf("volume: write image map: %w", err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return refs, nil
}

// sharedSegments returns a copy of segs, all marked shared.
func sharedSegments(segs []blockmap.SegmentRef) []blockmap.SegmentRef {
	out := make([]blockmap.SegmentRef, len(segs))
	for i, r := range segs {
		r.Shared = true
		out[i] = r
	}
	return out
}

// Snapshot persists the volume and makes a read-only copy of it that
// shares every segment and block; the volume starts a new epoch. It
// returns the snapshot's ID. No data is copied.
func (v *Volume) Snapshot(ctx context.Context) (blockmap.ID, error) {
	return v.SnapshotAs(ctx, blockmap.NewID())
}

// SnapshotAs is Snapshot with the snapshot's ID chosen by the caller (a
// new one, from blockmap.NewID), who may meanwhile write what names it;
// the zero ID is a new one. An ID that names an object's head already is
// refused (objstore.ErrExists).
func (v *Volume) SnapshotAs(ctx context.Context, id blockmap.ID) (blockmap.ID, error) {
	if id.IsZero() {
		id = blockmap.NewID()
	}
	if err := v.checkIO(0, 0, true); err != nil {
		return blockmap.ID{}, err
	}
	if err := v.lockFlush(); err != nil {
		return blockmap.ID{}, err
	}
	defer v.flushMu.Unlock()
	if err := v.seal(ctx); err != nil {
		return blockmap.ID{}, fmt.Errorf("volume: snapshot: %w", err)
	}
	v.gate.Lock()
	defer v.gate.Unlock()
	// A snapshot must not share an object that a late write may change.
	if err := v.retireLocked(ctx); err != nil {
		return blockmap.ID{}, err
	}
	if err := v.checkpointIfLogged(ctx); err != nil {
		return blockmap.ID{}, fmt.Errorf("volume: snapshot: %w", err)
	}
	if err := v.persist(ctx, v.takeCut()); err != nil {
		return blockmap.ID{}, err
	}
	h := v.Head()
	v.mu.Lock()
	ver := v.mu.headVer
	v.mu.Unlock()

	snap := h
	snap.ID, snap.ReadOnly, snap.SeqReserved, snap.Unsealed, snap.Logs = id, true, 0, 0, nil
	snap.Segments = sharedSegments(h.Segments)
	if _, err := v.store.Create(ctx, blockmap.HeadName(snap.ID), blockmap.EncodeHead(&snap)); err != nil {
		return blockmap.ID{}, fmt.Errorf("volume: snapshot: %w", err)
	}
	nh := h
	nh.Epoch++
	nh.Segments = sharedSegments(h.Segments)
	if err := v.checkGuard(); err != nil {
		v.store.Delete(ctx, blockmap.HeadName(snap.ID))
		return blockmap.ID{}, err
	}
	nv, garbage, err := v.swapHead(ctx, &nh, ver, nil)
	if err != nil {
		v.store.Delete(ctx, blockmap.HeadName(snap.ID))
		if errors.Is(err, ErrFenced) {
			v.restore(&cut{}, err)
		} else {
			// The volume may have moved to the new epoch with the
			// snapshot's segments shared: act as if it did, so that no
			// block is written in place that a snapshot may hold.
			v.mu.Lock()
			v.mu.head.Epoch, v.mu.head.Segments = nh.Epoch, nh.Segments
			v.mu.headDirty = true
			v.mu.Unlock()
		}
		return blockmap.ID{}, fmt.Errorf("volume: snapshot: %w", err)
	}
	for _, name := range garbage {
		v.store.Delete(ctx, name) // best effort: a leftover is an orphan for GC
	}
	v.mu.Lock()
	v.mu.head, v.mu.headVer = nh, nv
	v.mu.Unlock()
	return snap.ID, nil
}

// Clone makes a new writable volume from the read-only volume src (a
// snapshot or image), sharing its map and blocks. size 0 keeps src's
// size; a larger size grows the clone. No data is copied.
func Clone(ctx context.Context, s objstore.Store, src blockmap.ID, size uint64) (blockmap.ID, error) {
	return CloneAs(ctx, s, src, size, blockmap.NewID())
}

// CloneAs is Clone with the clone's ID chosen by the caller (a new one,
// from blockmap.NewID), who may meanwhile write what names it; the zero
// ID is a new one. An ID that names an object's head already is refused
// (objstore.ErrExists).
func CloneAs(ctx context.Context, s objstore.Store, src blockmap.ID, size uint64, id blockmap.ID) (blockmap.ID, error) {
	if id.IsZero() {
		id = blockmap.NewID()
	}
	h, _, err := ReadHead(ctx, s, src)
	if err != nil {
		return blockmap.ID{}, err
	}
	if !h.ReadOnly {
		return blockmap.ID{}, fmt.Errorf("volume: clone source %s is a writable volume; snapshot it and clone the snapshot", src)
	}
	if size == 0 {
		size = h.Size
	}
	if size < h.Size {
		return blockmap.ID{}, fmt.Errorf("%w: a clone cannot be smaller than its source (%d < %d); clone, then shrink", ErrBadSize, size, h.Size)
	}
	if err := checkGeometry(size, h.BlockShift); err != nil {
		return blockmap.ID{}, err
	}
	c := &blockmap.Head{ID: id, Size: size, BlockShift: h.BlockShift, Epoch: 1,
		Segments: sharedSegments(h.Segments), Delta: h.Delta}
	if _, err := s.Create(ctx, blockmap.HeadName(c.ID), blockmap.EncodeHead(c)); err != nil {
		return blockmap.ID{}, fmt.Errorf("volume: clone: %w", err)
	}
	return c.ID, nil
}

// Resize changes the volume's size. Shrinking drops the blocks past the
// new end and zeroes the tail of the new last block, so growing again
// reads zeros there.
func (v *Volume) Resize(ctx context.Context, size uint64) error {
	if err := v.checkIO(0, 0, true); err != nil {
		return err
	}
	if err := checkGeometry(size, v.shift); err != nil {
		return err
	}
	if err := v.lockFlush(); err != nil {
		return err
	}
	defer v.flushMu.Unlock()
	v.gate.Lock()
	defer v.gate.Unlock()
	if err := v.retireLocked(ctx); err != nil {
		return err
	}
	if err := v.checkpointIfLogged(ctx); err != nil {
		return err
	}
	old := uint64(v.Size())
	if size < old && size%uint64(v.bs) != 0 {
		end := min(old, (size/uint64(v.bs)+1)*uint64(v.bs))
		if err := v.zeroRange(ctx, int64(size), int64(end-size), true); err != nil {
			return err
		}
		// Zeros past the new end are in the blocks, not in a log.
		if err := v.checkpointIfLogged(ctx); err != nil {
			return err
		}
	}
	nblocks := int64((size + uint64(v.bs) - 1) / uint64(v.bs))
	v.mu.Lock()
	n := int64(len(v.mu.entries))
	if nblocks < n {
		for b := nblocks; b < n; b++ {
			if e := v.mu.entries[b]; v.owns(e, v.mu.head.Epoch) {
				v.mu.freed = append(v.mu.freed, e.ObjectName())
				delete(v.mu.dirtyObjs, e.ObjectName())
			}
		}
		v.mu.entries = append([]blockmap.Entry(nil), v.mu.entries[:nblocks]...)
		if nblocks > 0 {
			v.mu.dirtySegs[uint32((nblocks-1)/blockmap.SegmentEntries)] = true
		}
		for _, r := range v.mu.head.Segments {
			if int64(r.Index)*blockmap.SegmentEntries >= nblocks {
				v.mu.dirtySegs[r.Index] = true
			}
		}
	} else {
		v.mu.entries = append(v.mu.entries, make([]blockmap.Entry, nblocks-n)...)
	}
	for b := range v.mu.dirtyBlocks {
		if b >= nblocks {
			delete(v.mu.dirtyBlocks, b)
		}
	}
	for b := range v.mu.delta {
		if b >= nblocks {
			delete(v.mu.delta, b)
		}
	}
	v.mu.head.Size = size
	v.mu.headDirty, v.mu.checkpoint = true, true
	v.mu.Unlock()
	return v.persist(ctx, v.takeCut())
}

// Remove deletes the volume: its head first, so it is gone at once,
// then the objects only it can reference (its private blocks of the
// current epoch and its own unshared segments). Blocks and segments that
// snapshots, clones or images may share stay for the garbage collector.
func Remove(ctx context.Context, s objstore.Store, id blockmap.ID) error {
	h, _, err := ReadHead(ctx, s, id)
	if errors.Is(err, ErrCorrupt) {
		// It can never be opened: drop the head, and leave its objects
		// to the garbage collector.
		if err := s.Delete(ctx, blockmap.HeadName(id)); err != nil && !objstore.IsNotExist(err) {
			return fmt.Errorf("volume: remove %s: %w", id, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	entries, loadErr := LoadMap(ctx, s, h)
	if err := s.Delete(ctx, blockmap.HeadName(id)); err != nil {
		return fmt.Errorf("volume: remove %s: %w", id, err)
	}
	if h.ReadOnly || loadErr != nil {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	del := func(name string) {
		g.Go(func() error {
			if err := s.Delete(gctx, name); err != nil && !objstore.IsNotExist(err) {
				return err
			}
			return nil
		})
	}
	for _, e := range entries {
		if e.IsPrivate() && e.Owner() == id && e.Epoch() == h.Epoch {
			del(e.ObjectName())
		}
	}
	for _, r := range h.Segments {
		if r.Owner == id && !r.Shared {
			del(r.Name())
		}
	}
	if !h.Index.IsZero() {
		// The write log index and the segments it references (best
		// effort, as below).
		name := blockmap.IndexName(id, h.Index.Epoch, h.Index.Seq)
		if b, _, err := s.Get(ctx, name); err == nil {
			if x, err := blockmap.DecodeIndex(b, id, h.Index); err == nil {
				for _, sg := range x.Segs {
					del(sg.Name(id))
				}
			}
		}
		del(name)
	}
	_, inPlace := objstore.AsRangeWriter(s)
	for _, l := range h.Logs {
		name := blockmap.LogName(id, l.Epoch, l.Seq)
		if inPlace {
			del(name)
			continue
		}
		// Its segments (best effort: a leftover is the collector's).
		s.List(ctx, name+"/", func(in objstore.Info) error {
			del(in.Name)
			return nil
		})
	}
	return g.Wait()
}

// ContentBlock returns the bytes a content object stores for a block:
// the block without its trailing zeros (an all-zero block stores
// nothing and is a Zero entry instead).
func ContentBlock(block []byte) []byte {
	n := len(block)
	for n > 0 && block[n-1] == 0 {
		n--
	}
	return block[:n]
}

// PutContent stores data as a content object (if absent) and returns its
// entry. It looks first: a create of an object that exists sends its bytes
// for nothing (over the network on RADOS and S3, where a refused
// conditional PUT has carried the whole body), and content objects are
// immutable, so one that exists is the same bytes.
func PutContent(ctx context.Context, s objstore.Store, data []byte) (blockmap.Entry, bool, error) {
	e := blockmap.ContentEntry(sha256.Sum256(data))
	stored, err := PutContentAs(ctx, s, e, data)
	return e, stored, err
}

// PutContentAs is PutContent for data whose entry e (its hash) the caller
// has computed already.
func PutContentAs(ctx context.Context, s objstore.Store, e blockmap.Entry, data []byte) (bool, error) {
	if _, err := s.Stat(ctx, e.ObjectName()); err == nil {
		return false, nil
	} else if !objstore.IsNotExist(err) {
		return false, err
	}
	_, err := s.Create(ctx, e.ObjectName(), data)
	if errors.Is(err, objstore.ErrExists) {
		return false, nil
	}
	return err == nil, err
}

// HashStats says what Hash did.
type HashStats struct {
	Converted   int64 // private blocks now content blocks
	Zeroed      int64 // private blocks that were all zeros
	NewContent  int64 // content objects stored (the rest existed: deduplicated)
	StoredBytes int64 // bytes of the new content objects

	// With HashOptions.KeepReplaced: every block the new map changed, and
	// the replaced private objects this volume owns, which Hash did not
	// delete.
	Replaced []Replaced `json:"-"`
	Freed    []string   `json:"-"`
}

// Replaced is a block Hash changed: Old (a private or partial block)
// reads as New (a content or zero block); Len is the block's length, and
// SubShift the log2 of its sub-blocks' size (for a partial Old).
type Replaced struct {
	Old, New blockmap.Entry
	Len      int64
	SubShift uint8
}

// HashOptions tune HashWith.
type HashOptions struct {
	// Progress, if not nil, is called after each block with the blocks
	// done and the total.
	Progress func(done, total int64)
	// Check, if not nil, is asked just before the new map replaces the
	// stored one. An error leaves the stored map and the handle's as they
	// were (the content objects already stored are garbage), and is
	// returned. A caller holding garbage collections off passes its hold.
	Check func(ctx context.Context) error
	// KeepReplaced: do not delete the private objects the new map no
	// longer references; return them in HashStats (see RepairHash).
	KeepReplaced bool
	// Unsealed: convert only the blocks that a writer this volume was
	// taken over from may still change (what Seal does), under Check.
	Unsealed bool
}

// Hash is HashWith with only a progress function.
func (v *Volume) Hash(ctx context.Context, progress func(done, total int64)) (HashStats, error) {
	return v.HashWith(ctx, HashOptions{Progress: progress})
}

// HashWith turns the volume's private blocks into content blocks, so that
// identical data anywhere in the store is stored once. What it reads does
// not change. The handle must be writable or opened with Remap.
//
// Deduplication points the map at content objects that exist already and
// that, unreferenced, a garbage collection may be deleting: the caller
// holds collections off (package gc), and since a hold can be lost by a
// stall, Hash asks opts.Check last before the head swap and changes
// nothing if it fails. A stall between that check and the swap can still
// persist a map that points at deleted objects; with KeepReplaced the old
// private objects stay, and the caller confirms its hold after the swap
// or, failing that, repairs with RepairHash.
func (v *Volume) HashWith(ctx context.Context, opts HashOptions) (HashStats, error) {
	if v.readOnly && !v.remap {
		return HashStats{}, ErrReadOnly
	}
	v.flushMu.Lock()
	defer v.flushMu.Unlock()
	v.gate.Lock()
	defer v.gate.Unlock()
	// Persist earlier writes first, so that a failure below can drop
	// exactly what the hash changed.
	if err := v.checkpointIfLogged(ctx); err != nil {
		return HashStats{}, err
	}
	if err := v.persist(ctx, v.takeCut()); err != nil {
		return HashStats{}, err
	}
	v.mu.Lock()
	saved, unsealedFrom := append([]blockmap.Entry(nil), v.mu.entries...), v.mu.head.Unsealed
	v.mu.Unlock()
	pick := func(e blockmap.Entry) bool { return e.IsPrivate() }
	if opts.Unsealed {
		h := v.Head()
		pick = func(e blockmap.Entry) bool { return unsealed(&h, e) }
	}
	var repl []Replaced
	st, err := v.contentify(ctx, pick, opts.Progress, &repl)
	var checkErr error
	if err == nil {
		v.mu.Lock()
		if v.mu.head.Unsealed != 0 {
			v.mu.head.Unsealed, v.mu.headDirty = 0, true // no unsealed block is left
		}
		v.mu.checkpoint = true // a map made over: into segments
		v.mu.Unlock()
		c := v.takeCut()
		if opts.KeepReplaced {
			st.Freed, c.freed = c.freed, nil
			st.Replaced = repl
		}
		if opts.Check != nil {
			c.check = func(ctx context.Context) error {
				checkErr = opts.Check(ctx)
				return checkErr
			}
		}
		if err = v.persist(ctx, c); err == nil {
			return st, nil
		}
	}
	// Nothing the hash changed may reach the store by a later flush: put
	// the map back. A swap whose outcome is unknown may have stored the
	// new map: then the next flush stores the old one again.
	v.mu.Lock()
	unknown := err != nil && checkErr == nil && len(v.mu.pending) > 0
	v.mu.dirtySegs, v.mu.dirtyBlocks, v.mu.freed, v.mu.headDirty = map[uint32]bool{}, map[int64]bool{}, nil, unknown
	v.mu.checkpoint = unknown
	if !unknown {
		v.mu.dirtySince = time.Time{}
	}
	for b, e := range saved {
		if unknown && b < len(v.mu.entries) && !v.mu.entries[b].Equal(e) {
			v.mu.dirtySegs[uint32(b/blockmap.SegmentEntries)] = true
			v.mu.dirtyBlocks[int64(b)] = true
		}
	}
	v.mu.entries, v.mu.head.Unsealed = saved, unsealedFrom
	v.mu.Unlock()
	return HashStats{}, err
}

// RepairHash makes the map a hash stored (see HashWith) sound after the
// hash's hold on garbage collections was lost: for each replaced block
// whose content object is gone, it stores it again from the old private
// object. It returns the blocks (indexes into repl) for which both are
// gone. The caller holds collections off for the whole repair.
func RepairHash(ctx context.Context, s objstore.Store, repl []Replaced) ([]int, error) {
	var mu sync.Mutex
	var lost []int
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, r := range repl {
		if r.New.Kind() != blockmap.Content {
			continue
		}
		g.Go(func() error {
			_, err := s.Stat(gctx, r.New.ObjectName())
			if !objstore.IsNotExist(err) {
				return err
			}
			data, err := getBlock(gctx, s, r)
			if err == nil {
				if data = ContentBlock(data[:min(int64(len(data)), r.Len)]); sha256.Sum256(data) == r.New.Hash() {
					_, err = s.Create(gctx, r.New.ObjectName(), data)
					if errors.Is(err, objstore.ErrExists) {
						err = nil
					}
					return err
				}
			}
			if err != nil && !objstore.IsNotExist(err) {
				return err
			}
			mu.Lock()
			lost = append(lost, i)
			mu.Unlock()
			return nil
		})
	}
	err := g.Wait()
	sort.Ints(lost)
	return lost, err
}

// getBlock reads the block r.Old describes whole, from its object and,
// for a partial block, its base.
func getBlock(ctx context.Context, s objstore.Store, r Replaced) ([]byte, error) {
	data, _, err := s.Get(ctx, r.Old.ObjectName())
	if err != nil || r.Old.Kind() != blockmap.Partial {
		return data, err
	}
	base, _, err := s.Get(ctx, r.Old.Base().ObjectName())
	if err != nil {
		return nil, err
	}
	out := make([]byte, r.Len)
	sbs := int64(1) << r.SubShift
	for i := int64(0); i*sbs < r.Len; i++ {
		src := base
		if r.Old.Mask()>>i&1 == 1 {
			src = data
		}
		if lo := i * sbs; lo < int64(len(src)) {
			copy(out[lo:min(lo+sbs, r.Len)], src[lo:])
		}
	}
	return out, nil
}

// contentify turns the blocks whose entries pick selects into content
// blocks (or zero blocks) without changing what they read. A block that
// a write replaced meanwhile is left as the write made it. The caller
// holds flushMu; with the gate held too, no block is left. If repl is not
// nil, the changes are appended to it.
func (v *Volume) contentify(ctx context.Context, pick func(blockmap.Entry) bool, progress func(done, total int64), repl *[]Replaced) (HashStats, error) {
	entries := v.Entries()
	var st HashStats
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for b, e := range entries {
		if !pick(e) {
			done.Add(1)
			continue
		}
		g.Go(func() error {
			bp := v.bufs.Get().(*[]byte)
			defer v.bufs.Put(bp)
			buf := (*bp)[:v.blockLen(int64(b))]
			if err := v.readEntry(gctx, e, buf, 0); err != nil {
				return fmt.Errorf("volume: hash block %d: %w", b, err)
			}
			var ne blockmap.Entry
			if data := ContentBlock(buf); len(data) > 0 {
				var stored bool
				var err error
				ne, stored, err = PutContent(gctx, v.store, data)
				if err != nil {
					return err
				}
				if stored {
					atomic.AddInt64(&st.NewContent, 1)
					atomic.AddInt64(&st.StoredBytes, int64(len(data)))
				}
				atomic.AddInt64(&st.Converted, 1)
			} else {
				atomic.AddInt64(&st.Zeroed, 1)
			}
			v.mu.Lock()
			if b < len(v.mu.entries) && v.mu.entries[b] == e {
				v.setEntryLocked(int64(b), ne)
				if repl != nil {
					*repl = append(*repl, Replaced{Old: e, New: ne, Len: int64(len(buf)), SubShift: v.sshift})
				}
				if v.owns(e, v.mu.head.Epoch) {
					v.mu.freed = append(v.mu.freed, e.ObjectName())
					delete(v.mu.dirtyObjs, e.ObjectName())
				}
			}
			v.mu.Unlock()
			if progress != nil {
				progress(done.Add(1), int64(len(entries)))
			}
			return nil
		})
	}
	return st, g.Wait()
}

// unsealed reports whether e is a block of an epoch that ended with a
// takeover, which the writer taken over may still change in place (see
// blockmap.Head.Unsealed): its own object or, for a partial block, its
// base.
func unsealed(h *blockmap.Head, e blockmap.Entry) bool {
	if h.Unsealed == 0 {
		return false
	}
	if e.Kind() == blockmap.Partial && unsealed(h, e.Base()) {
		return true
	}
	return e.IsPrivate() && e.Owner() == h.ID && e.Epoch() >= h.Unsealed && e.Epoch() < h.Epoch
}

// Seal seals the blocks that a writer this volume was taken over from
// may still change (see seal) and flushes. Snapshot does it first; a
// writer that took a volume over may also run it at once, beside its
// writes, so that blocks it has not written yet stop being the old
// writer's objects sooner. Without unsealed blocks it is a Flush.
func (v *Volume) Seal(ctx context.Context) error {
	if err := v.checkIO(0, 0, true); err != nil {
		return err
	}
	if err := v.lockFlush(); err != nil {
		return err
	}
	defer v.flushMu.Unlock()
	if err := v.seal(ctx); err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	c, err := v.flushCut(ctx)
	if err != nil {
		return err
	}
	return v.persist(ctx, c)
}

// seal makes the volume's map stop relying on objects that a writer it
// took over from may still change: a write of that writer can pass its
// lease check, stall (SIGSTOP, an NFS hang) past the takeover, and land
// late in its own epoch's object, which nothing in the store can refuse.
// seal copies each block of an unsealed epoch into a content block
// (immutable, I3), points the map at it, and clears Head.Unsealed; the
// next flush persists both. Snapshots seal first, so that what they hold
// never changes. Its cost is one read of those blocks, once per takeover
// (none after a clean handover). It runs beside writes (a block written
// meanwhile was copied by the write and needs no seal). The caller holds
// flushMu.
func (v *Volume) seal(ctx context.Context) error {
	v.mu.Lock()
	h := v.mu.head
	v.mu.Unlock()
	if h.Unsealed == 0 {
		return nil
	}
	if _, err := v.contentify(ctx, func(e blockmap.Entry) bool { return unsealed(&h, e) }, nil, nil); err != nil {
		return fmt.Errorf("seal the blocks of the writer taken over: %w", err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for b, e := range v.mu.entries {
		if unsealed(&v.mu.head, e) {
			return fmt.Errorf("volume: block %d of an unsealed epoch is left after sealing (%v)", b, e)
		}
	}
	v.mu.head.Unsealed, v.mu.headDirty = 0, true
	return nil
}

// beginEpochSwap runs in BeginEpoch with the new epoch in effect, before
// its head swap (tests stall it there).
var beginEpochSwap = func() {}

// BeginEpoch makes the writer go on in a new epoch, for a move's
// cut-over (package move, docs/pools.md "Moving a volume"): it flushes
// and swaps in a head whose epoch is one more, under the writer's own
// locks, so that no private block of an earlier epoch is changed in
// place any more and every block it creates from then on is of an epoch
// begun after the call (a store of several pools reads the volume's
// placement again for it). No write log is checkpointed and no map is
// read. It returns the epoch the writer is in.
//
// It is idempotent for an ask of "at least atLeast" with the same key
// (the asker's reason to ask: for a move, the version of the placement
// record it swapped): if the current epoch is at least atLeast and was
// begun by an earlier BeginEpoch with that key whose head swap landed,
// it does nothing. Any other current epoch (begun at open, by a
// snapshot, by a BeginEpoch whose swap's outcome is unknown, or for
// another key, which may have come before this reason to ask) is
// followed by a new one; so is every ask with an empty key. It begins
// at most one per call. A writer taken over or fenced meanwhile fails
// with ErrFenced, as its flush would.
func (v *Volume) BeginEpoch(ctx context.Context, atLeast uint64, key string) (uint64, error) {
	if err := v.checkIO(0, 0, true); err != nil {
		return 0, err
	}
	if err := v.lockFlush(); err != nil {
		return 0, err
	}
	defer v.flushMu.Unlock()
	v.mu.Lock()
	epoch, begun, begunKey, ferr := v.mu.head.Epoch, v.mu.begun, v.mu.begunKey, v.mu.err
	v.mu.Unlock()
	if ferr != nil {
		return 0, ferr
	}
	if epoch >= atLeast && begun == epoch && key != "" && key == begunKey {
		return epoch, nil
	}
	v.gate.Lock()
	// A late write of unknown outcome could still change a tainted
	// object of the ending epoch in place after it is copied elsewhere.
	if err := v.retireLocked(ctx); err != nil {
		v.gate.Unlock()
		return 0, err
	}
	v.mu.Lock()
	// NB: decided before the head is dirty: a flush that swaps the head
	// checkpoints the log with it (flushCut), which would read the log
	// and write a block per block it touched, the pause this avoids. A
	// head of a new epoch naming the same logs is what a reopen after a
	// handover stores too (OpenOptions.Handover).
	ckpt := v.needCheckpointLocked()
	v.mu.head.Epoch++
	epoch = v.mu.head.Epoch
	v.mu.headDirty = true
	v.mu.begun = 0
	v.mu.Unlock()
	if ckpt {
		if err := v.checkpointLog(ctx, false); err != nil {
			v.gate.Unlock()
			return 0, fmt.Errorf("volume: begin epoch %d: %w", epoch, v.storeFenced(err))
		}
	}
	c := v.takeCut()
	v.mu.Lock()
	commit := v.commitAtLocked()
	v.mu.Unlock()
	v.gate.Unlock()
	beginEpochSwap()
	if err := v.writeCommit(ctx, commit); err != nil {
		v.restore(c, nil)
		return 0, fmt.Errorf("volume: begin epoch %d: %w", epoch, v.storeFenced(err))
	}
	if err := v.persist(ctx, c); err != nil {
		// The epoch stays begun in memory (its blocks may be written
		// already); the next flush stores it.
		return 0, fmt.Errorf("volume: begin epoch %d: %w", epoch, err)
	}
	v.mu.Lock()
	if v.mu.head.Epoch == epoch {
		v.mu.begun, v.mu.begunKey = epoch, key
	}
	v.mu.Unlock()
	return epoch, nil
}
