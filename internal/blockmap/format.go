package blockmap

import (
	"encoding/binary"
	"fmt"
)

// Head is the root of a volume's map: its geometry and the segments that
// hold its entries.
type Head struct {
	ID         ID
	Size       uint64 // bytes
	BlockShift uint8  // block size is 1 << BlockShift
	Epoch      uint64 // current epoch of private blocks (writable volumes)
	ReadOnly   bool   // a snapshot or image: never written
	// SeqReserved: sequence numbers below it may have been used by a
	// writer; a writer that opens the volume starts from it and moves it
	// forward (durably) before using numbers past it.
	SeqReserved uint64
	// Unsealed, when not 0, is the first of the epochs that ended with a
	// takeover (the volume was opened in a new epoch because its writer
	// did not release it) whose private blocks this map may still
	// reference: the writer taken over may still change them in place (a
	// write that passed its lease check before it stalled). Every epoch
	// from Unsealed to Epoch-1 is unsealed. A writer seals them (turns
	// their blocks into content blocks) before anything takes a
	// read-only view of the map, then sets Unsealed to 0. Version 1 heads
	// decode with 0.
	Unsealed uint64
	Segments []SegmentRef // ascending by Index; absent segments are all Zero
	// Delta holds entries that override the segments' (ascending by
	// Block, at most MaxDelta, none past the end): a flush that changed
	// a few entries stores them here, in the head it swaps in anyway,
	// instead of writing whole segments. Version 1 and 2 heads have none.
	Delta []DeltaEntry
	// Logs are the volume's write logs (oldest first, at most MaxLogs):
	// objects of records appended by writers since the map was last
	// checkpointed; a reader applies each log's valid records from its
	// From position, in order, over the map. Version 1 to 3 heads have
	// none.
	Logs []LogRef
	// Index, when not zero, names the persisted index of a segmented
	// write log (see "Write log index" in docs/format.md): extents of
	// blocks whose newest bytes are in segments of logs, read over the
	// map; a reader loads it, then replays Logs over it. Only a writable
	// head has one (heads before version 5 have none).
	Index IndexRef
}

// IndexRef names a write log index object of a volume: the epoch of the
// writer that stored it and a sequence number it reserved.
type IndexRef struct{ Epoch, Seq uint64 }

// IsZero reports whether r names no index.
func (r IndexRef) IsZero() bool { return r == IndexRef{} }

// LogRef names one write log of a volume and the position in it up to
// which its records are already in the map (checkpointed).
type LogRef struct {
	Epoch, Seq uint64 // the writer's epoch and a sequence number it reserved
	From       uint64
}

// MaxLogs bounds a head's Logs.
const MaxLogs = 16

// LogName names the write log of volume id with the given epoch and seq.
func LogName(id ID, epoch, seq uint64) string {
	return fmt.Sprintf("vol/%s/l/%x-%x", id, epoch, seq)
}

// LogSegmentName returns the name of the segment of a write log that
// starts at position start of the log's byte stream: on a store without
// in-place writes a log is stored as immutable segments (see "Write log"
// in docs/format.md), each LogName(id, epoch, seq) + "/" + start in hex.
func LogSegmentName(id ID, epoch, seq uint64, start int64) string {
	return fmt.Sprintf("vol/%s/l/%x-%x/%x", id, epoch, seq, start)
}

// DeltaEntry is one entry of a head's Delta.
type DeltaEntry struct {
	Block int64
	Entry Entry
}

// MaxDelta bounds a head's Delta: past it, a flush writes the segments
// (a checkpoint) and empties it. It keeps a head, which every flush that
// changes the map rewrites, within about 20 KiB.
const MaxDelta = 256

// SegmentRef locates one segment object.
type SegmentRef struct {
	Index  uint32 // covers blocks [Index*SegmentEntries, (Index+1)*SegmentEntries)
	Owner  ID     // the volume that wrote it (its object is named under Owner)
	Seq    uint64
	CRC    uint32 // the segment object's own checksum, checked on load
	Shared bool   // another head may point at it too: never delete it in place
}

// Name returns the segment's object name.
func (r SegmentRef) Name() string { return SegmentName(r.Owner, r.Index, r.Seq) }

// BlockSize returns the block size in bytes.
func (h *Head) BlockSize() int64 { return 1 << h.BlockShift }

// Blocks returns the number of blocks the volume's size covers.
func (h *Head) Blocks() int64 {
	return int64((h.Size + uint64(h.BlockSize()) - 1) >> h.BlockShift)
}

// BlockLen returns the length of block b: the block size, or less for a
// last block cut short by the volume's size.
func (h *Head) BlockLen(b int64) int64 {
	return min(h.BlockSize(), int64(h.Size)-b<<h.BlockShift)
}

// Validate reports whether the head's fields are in range.
func (h *Head) Validate() error {
	var errs []string
	if h.BlockShift < MinBlockShift || h.BlockShift > MaxBlockShift {
		errs = append(errs, fmt.Sprintf("block size 2^%d outside 64 KiB..32 MiB", h.BlockShift))
	}
	if h.Size > MaxSize {
		errs = append(errs, fmt.Sprintf("size %d over the maximum %d", h.Size, uint64(MaxSize)))
	}
	if h.Unsealed != 0 && (h.Unsealed >= h.Epoch || h.ReadOnly) {
		errs = append(errs, fmt.Sprintf("unsealed epochs from %d in epoch %d (read-only %v)", h.Unsealed, h.Epoch, h.ReadOnly))
	}
	if h.BlockShift >= MinBlockShift && h.BlockShift <= MaxBlockShift && h.Size <= MaxSize && h.Blocks() > MaxBlocks {
		errs = append(errs, fmt.Sprintf("%d blocks over the maximum %d (size %d, blocks of %d bytes)", h.Blocks(), MaxBlocks, h.Size, h.BlockSize()))
	}
	if h.BlockShift >= MinBlockShift && h.Size <= MaxSize {
		nseg := (h.Blocks() + SegmentEntries - 1) / SegmentEntries
		for i, s := range h.Segments {
			if int64(s.Index) >= nseg {
				errs = append(errs, fmt.Sprintf("segment %d beyond the volume's %d segments", s.Index, nseg))
				break
			}
			if i > 0 && s.Index <= h.Segments[i-1].Index {
				errs = append(errs, "segments not in ascending order")
				break
			}
		}
	}
	if len(h.Delta) > MaxDelta {
		errs = append(errs, fmt.Sprintf("%d delta entries over the maximum %d", len(h.Delta), MaxDelta))
	}
	for i, d := range h.Delta {
		if d.Block < 0 || h.BlockShift >= MinBlockShift && h.Size <= MaxSize && d.Block >= h.Blocks() {
			errs = append(errs, fmt.Sprintf("delta entry for block %d beyond the volume's end", d.Block))
			break
		}
		if i > 0 && d.Block <= h.Delta[i-1].Block {
			errs = append(errs, "delta entries not in ascending order")
			break
		}
	}
	if len(h.Logs) > MaxLogs || len(h.Logs) > 0 && h.ReadOnly {
		errs = append(errs, fmt.Sprintf("%d write logs (read-only %v)", len(h.Logs), h.ReadOnly))
	}
	if !h.Index.IsZero() && h.ReadOnly {
		errs = append(errs, "a read-only head names a write log index")
	}
	if len(errs) > 0 {
		return fmt.Errorf("blockmap: invalid head: %v", errs)
	}
	return nil
}

const (
	headMagic = "ARCHHEAD"
	segMagic  = "ARCHSEGM"
	// headVersion 2 added Unsealed, 3 Delta, 4 Logs, 5 Index (and
	// allows no Logs beside it); versions 1 to 4 still decode. A head is
	// written in the oldest version that holds it, so a volume without
	// logs stays readable by older programs, and one without an index by
	// programs of version 4 (which refuse a version 5 head: its map is
	// incomplete without the index).
	headVersion = 5
	// segVersion is the newest segments' version: version 2 added
	// Partial entries. A segment without one is still written as version
	// 1, which programs older than version 2 read too.
	segVersion  = 2
	headFixedV1 = 8 + 2 + 16 + 8 + 1 + 8 + 1 + 8 + 4 // magic..segment count
	headFixed   = headFixedV1 + 8
	segRefSize  = 4 + 16 + 8 + 4 + 1
)

// EncodeHead returns the stored form of h.
func EncodeHead(h *Head) []byte {
	b := make([]byte, 0, headFixed+len(h.Segments)*segRefSize+4)
	// NB: a head without a delta is written as version 2, byte for byte
	// what programs before the delta wrote and still read.
	version := uint16(headVersion)
	switch {
	case !h.Index.IsZero():
	case len(h.Logs) > 0:
		version = 4
	case len(h.Delta) > 0:
		version = 3
	default:
		version = 2
	}
	b = append(b, headMagic...)
	b = binary.BigEndian.AppendUint16(b, version)
	b = append(b, h.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, h.Size)
	b = append(b, h.BlockShift)
	b = binary.BigEndian.AppendUint64(b, h.Epoch)
	b = append(b, boolByte(h.ReadOnly))
	b = binary.BigEndian.AppendUint64(b, h.SeqReserved)
	b = binary.BigEndian.AppendUint64(b, h.Unsealed)
	b = binary.BigEndian.AppendUint32(b, uint32(len(h.Segments)))
	for _, s := range h.Segments {
		b = binary.BigEndian.AppendUint32(b, s.Index)
		b = append(b, s.Owner[:]...)
		b = binary.BigEndian.AppendUint64(b, s.Seq)
		b = binary.BigEndian.AppendUint32(b, s.CRC)
		b = append(b, boolByte(s.Shared))
	}
	if version < 3 {
		return seal(b)
	}
	if version >= 4 {
		b = binary.BigEndian.AppendUint32(b, uint32(len(h.Logs)))
		for _, l := range h.Logs {
			b = binary.BigEndian.AppendUint64(b, l.Epoch)
			b = binary.BigEndian.AppendUint64(b, l.Seq)
			b = binary.BigEndian.AppendUint64(b, l.From)
		}
	}
	if version >= 5 {
		b = binary.BigEndian.AppendUint64(b, h.Index.Epoch)
		b = binary.BigEndian.AppendUint64(b, h.Index.Seq)
	}
	// The delta: its blocks, then its entries encoded as a segment (the
	// same entry format, and its own checksum).
	b = binary.BigEndian.AppendUint32(b, uint32(len(h.Delta)))
	entries := make([]Entry, len(h.Delta))
	for i, d := range h.Delta {
		b = binary.BigEndian.AppendUint64(b, uint64(d.Block))
		entries[i] = d.Entry
	}
	seg, _ := EncodeSegment(0, entries)
	b = binary.BigEndian.AppendUint32(b, uint32(len(seg)))
	b = append(b, seg...)
	return seal(b)
}

// DecodeHead parses a stored head.
func DecodeHead(b []byte) (*Head, error) {
	body, err := sealed(b, "head")
	if err != nil {
		return nil, err
	}
	if len(body) < headFixedV1 || string(body[:8]) != headMagic {
		return nil, fmt.Errorf("%w: not a map head", ErrCorrupt)
	}
	version := binary.BigEndian.Uint16(body[8:])
	switch {
	case version < 1 || version > headVersion:
		return nil, fmt.Errorf("%w: head format version %d; this program reads versions 1 to %d", ErrCorrupt, version, headVersion)
	case version >= 2 && len(body) < headFixed:
		return nil, fmt.Errorf("%w: head of %d bytes", ErrCorrupt, len(body))
	}
	r := reader{b: body[10:]}
	h := &Head{}
	copy(h.ID[:], r.next(16))
	h.Size = r.u64()
	h.BlockShift = r.next(1)[0]
	h.Epoch = r.u64()
	ro := r.next(1)[0]
	h.SeqReserved = r.u64()
	if version >= 2 {
		h.Unsealed = r.u64()
	}
	n := r.u32()
	if ro > 1 {
		return nil, fmt.Errorf("%w: head flag byte %d", ErrCorrupt, ro)
	}
	h.ReadOnly = ro == 1
	refs := r.b
	if version >= 3 {
		if uint64(len(refs)) < uint64(n)*segRefSize {
			return nil, fmt.Errorf("%w: head lists %d segments in %d bytes", ErrCorrupt, n, len(r.b))
		}
		refs, r.b = r.b[:n*segRefSize], r.b[n*segRefSize:]
		if version >= 4 {
			if len(r.b) < 4 {
				return nil, fmt.Errorf("%w: head truncated before its logs", ErrCorrupt)
			}
			nl := r.u32()
			if nl == 0 && version < 5 || nl > MaxLogs || uint64(len(r.b)) < uint64(nl)*24 {
				return nil, fmt.Errorf("%w: head lists %d logs in %d bytes", ErrCorrupt, nl, len(r.b))
			}
			if nl > 0 {
				h.Logs = make([]LogRef, nl)
			}
			for i := range h.Logs {
				h.Logs[i] = LogRef{Epoch: r.u64(), Seq: r.u64(), From: r.u64()}
			}
		}
		if version >= 5 {
			if len(r.b) < 16 {
				return nil, fmt.Errorf("%w: head truncated before its index", ErrCorrupt)
			}
			h.Index = IndexRef{Epoch: r.u64(), Seq: r.u64()}
			if h.Index.IsZero() {
				return nil, fmt.Errorf("%w: a version 5 head names no index", ErrCorrupt)
			}
		}
		if err := decodeDelta(h, &r); err != nil {
			return nil, err
		}
		r.b = refs
	}
	if uint64(len(r.b)) != uint64(n)*segRefSize {
		return nil, fmt.Errorf("%w: head lists %d segments in %d bytes", ErrCorrupt, n, len(r.b))
	}
	h.Segments = make([]SegmentRef, n)
	for i := range h.Segments {
		s := &h.Segments[i]
		s.Index = r.u32()
		copy(s.Owner[:], r.next(16))
		s.Seq = r.u64()
		s.CRC = r.u32()
		sh := r.next(1)[0]
		if sh > 1 {
			return nil, fmt.Errorf("%w: segment flag byte %d", ErrCorrupt, sh)
		}
		s.Shared = sh == 1
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return h, nil
}

// decodeDelta reads a version 3 head's delta, which must fill r.
func decodeDelta(h *Head, r *reader) error {
	if len(r.b) < 4 {
		return fmt.Errorf("%w: head truncated before its delta", ErrCorrupt)
	}
	n := r.u32()
	if n > MaxDelta || uint64(len(r.b)) < uint64(n)*8+4 {
		return fmt.Errorf("%w: head delta of %d entries in %d bytes", ErrCorrupt, n, len(r.b))
	}
	h.Delta = make([]DeltaEntry, n)
	for i := range h.Delta {
		h.Delta[i].Block = int64(r.u64())
		if h.Delta[i].Block < 0 {
			return fmt.Errorf("%w: head delta block %d", ErrCorrupt, h.Delta[i].Block)
		}
	}
	l := r.u32()
	if uint64(len(r.b)) != uint64(l) || l < 4 {
		return fmt.Errorf("%w: head delta entries of %d bytes in %d", ErrCorrupt, l, len(r.b))
	}
	seg := r.next(int(l))
	entries := make([]Entry, n)
	ref := SegmentRef{CRC: binary.BigEndian.Uint32(seg[len(seg)-4:])}
	if err := DecodeSegment(seg, ref, entries); err != nil {
		return fmt.Errorf("%w: head delta: %v", ErrCorrupt, err)
	}
	for i := range h.Delta {
		h.Delta[i].Entry = entries[i]
	}
	return nil
}

// Apply sets the entries h.Delta overrides in entries, the map its
// segments give.
func (h *Head) Apply(entries []Entry) {
	for _, d := range h.Delta {
		if d.Block < int64(len(entries)) {
			entries[d.Block] = d.Entry
		}
	}
}

// EncodeSegment returns the stored form of a segment holding entries for
// blocks starting at index*SegmentEntries, and its checksum for the
// SegmentRef. Trailing Zero entries are left out.
func EncodeSegment(index uint32, entries []Entry) ([]byte, uint32) {
	for len(entries) > 0 && entries[len(entries)-1].Kind() == Zero {
		entries = entries[:len(entries)-1]
	}
	version, size := uint16(1), 0
	for _, e := range entries {
		switch e.Kind() {
		case Content, Private:
			size += 33
		case Partial:
			size += 1 + 32 + 8 + 1 + 32
			version = 2
		default:
			size++
		}
	}
	b := make([]byte, 0, 8+2+4+4+size+4)
	b = append(b, segMagic...)
	b = binary.BigEndian.AppendUint16(b, version)
	b = binary.BigEndian.AppendUint32(b, index)
	b = binary.BigEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = append(b, byte(e.Kind()))
		switch e.Kind() {
		case Content, Private:
			b = append(b, e.key[:]...)
		case Partial:
			b = append(b, e.key[:]...)
			b = binary.BigEndian.AppendUint64(b, e.x.mask)
			b = append(b, byte(e.x.baseKind))
			b = append(b, e.x.baseKey[:]...)
		}
	}
	b = seal(b)
	return b, binary.BigEndian.Uint32(b[len(b)-4:])
}

// DecodeSegment parses a stored segment into dst (SegmentEntries long,
// or shorter for the last segment of a volume); entries it does not
// mention are set to Zero. It checks that the segment is the one ref
// names.
func DecodeSegment(b []byte, ref SegmentRef, dst []Entry) error {
	body, err := sealed(b, "segment")
	if err != nil {
		return err
	}
	if crc := checksum(body); crc != ref.CRC {
		return fmt.Errorf("%w: segment %d has checksum %08x, its head expects %08x", ErrCorrupt, ref.Index, crc, ref.CRC)
	}
	if len(body) < 18 || string(body[:8]) != segMagic {
		return fmt.Errorf("%w: not a map segment", ErrCorrupt)
	}
	version := binary.BigEndian.Uint16(body[8:])
	if version < 1 || version > segVersion {
		return fmt.Errorf("%w: segment format version %d; this program reads versions 1 to %d", ErrCorrupt, version, segVersion)
	}
	r := reader{b: body[10:]}
	if idx := r.u32(); idx != ref.Index {
		return fmt.Errorf("%w: segment object holds index %d, head expects %d", ErrCorrupt, idx, ref.Index)
	}
	n := r.u32()
	if uint64(n) > uint64(len(dst)) {
		return fmt.Errorf("%w: segment %d has %d entries, the volume has room for %d", ErrCorrupt, ref.Index, n, len(dst))
	}
	truncated := func(i uint32) error {
		return fmt.Errorf("%w: segment %d truncated at entry %d", ErrCorrupt, ref.Index, i)
	}
	for i := uint32(0); i < n; i++ {
		if len(r.b) < 1 {
			return truncated(i)
		}
		k := Kind(r.b[0])
		r.b = r.b[1:]
		var e Entry
		switch {
		case k == Zero:
		case k == Content || k == Private:
			if len(r.b) < 32 {
				return truncated(i)
			}
			e = Entry{x: kindX(k)}
			copy(e.key[:], r.next(32))
		case k == Partial && version >= 2:
			if len(r.b) < 32+8+1+32 {
				return truncated(i)
			}
			x := &extra{kind: Partial}
			copy(e.key[:], r.next(32))
			x.mask = r.u64()
			x.baseKind = Kind(r.next(1)[0])
			copy(x.baseKey[:], r.next(32))
			if x.mask == 0 || x.mask == AllSubBlocks || (x.baseKind != Content && x.baseKind != Private) {
				return fmt.Errorf("%w: segment %d entry %d is a partial block with mask %#x over a %v base", ErrCorrupt, ref.Index, i, x.mask, x.baseKind)
			}
			e.x = x
		default:
			return fmt.Errorf("%w: segment %d entry %d has unknown kind %d", ErrCorrupt, ref.Index, i, k)
		}
		dst[i] = e
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: segment %d has %d trailing bytes", ErrCorrupt, ref.Index, len(r.b))
	}
	clear(dst[n:])
	return nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// reader consumes fixed-size fields from a buffer whose length the
// caller has checked.
type reader struct{ b []byte }

func (r *reader) next(n int) []byte {
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.next(4)) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.next(8)) }
