package blockmap

import (
	"encoding/binary"
	"fmt"
)

// A write log index (see "Write log index" in docs/format.md) is an
// immutable object, IndexName(id, epoch, seq), that a head names (Index):
// the extents of blocks whose newest bytes are in segments of segmented
// write logs, which a reader reads over the map. Stored form:
//
//	magic "ARCHLIDX" | version u16 | volume id [16] | epoch u64 | seq u64 |
//	segment count u32 | segments: log epoch u64 | log seq u64 | start u64 | length u32 |
//	extent count u32 | extents: block u64 | offset u32 | length u32 | segment u32 | position u32 |
//	CRC-32C u32
//
// The segments are those the extents reference (each once, sorted by log
// and start); an extent's segment is its index in that list, and its
// position is where its bytes start in the segment. Extents are sorted by
// block and offset, do not overlap, and each lies inside its segment.
const (
	indexMagic   = "ARCHLIDX"
	indexVersion = 1
	indexFixed   = 8 + 2 + 16 + 8 + 8 + 4 // magic..segment count
	indexSegSize = 8 + 8 + 8 + 4
	indexExtSize = 8 + 4 + 4 + 4 + 4
	// MaxIndexSegLen bounds a segment's length in an index (a segment
	// is a writer's buffer of records, about 1 MiB).
	MaxIndexSegLen = 1 << 30
)

// IndexName names volume id's write log index with the given epoch and
// seq.
func IndexName(id ID, epoch, seq uint64) string {
	return fmt.Sprintf("vol/%s/x/%x-%x", id, epoch, seq)
}

// LogIndex is a write log index's contents.
type LogIndex struct {
	Segs []IndexSeg
	Exts []IndexExt
}

// IndexSeg is a segment of a write log that an index references.
type IndexSeg struct {
	Epoch, Seq uint64 // the log's (LogRef)
	Start      int64  // where the segment starts in the log's byte stream
	Len        uint32
}

// Name returns the segment's object name for volume id.
func (s IndexSeg) Name(id ID) string { return LogSegmentName(id, s.Epoch, s.Seq, s.Start) }

// IndexExt is a range of a block read from a segment.
type IndexExt struct {
	Block    int64
	Off, Len uint32 // the range in the block
	Seg      uint32 // in LogIndex.Segs
	Pos      uint32 // where the range's bytes start in the segment
}

// EncodeIndex returns the stored form of x, the index ref of volume id.
func EncodeIndex(id ID, ref IndexRef, x *LogIndex) []byte {
	b := make([]byte, 0, indexFixed+len(x.Segs)*indexSegSize+4+len(x.Exts)*indexExtSize+4)
	b = append(b, indexMagic...)
	b = binary.BigEndian.AppendUint16(b, indexVersion)
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint64(b, ref.Epoch)
	b = binary.BigEndian.AppendUint64(b, ref.Seq)
	b = binary.BigEndian.AppendUint32(b, uint32(len(x.Segs)))
	for _, s := range x.Segs {
		b = binary.BigEndian.AppendUint64(b, s.Epoch)
		b = binary.BigEndian.AppendUint64(b, s.Seq)
		b = binary.BigEndian.AppendUint64(b, uint64(s.Start))
		b = binary.BigEndian.AppendUint32(b, s.Len)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(x.Exts)))
	for _, e := range x.Exts {
		b = binary.BigEndian.AppendUint64(b, uint64(e.Block))
		b = binary.BigEndian.AppendUint32(b, e.Off)
		b = binary.BigEndian.AppendUint32(b, e.Len)
		b = binary.BigEndian.AppendUint32(b, e.Seg)
		b = binary.BigEndian.AppendUint32(b, e.Pos)
	}
	return seal(b)
}

// DecodeIndex parses the stored index ref of volume id. It checks the
// checksum, that the object is the one ref names, and the structure
// (segments sorted and distinct, extents sorted, apart, non-empty, inside
// a block of the largest size and inside their segments); the caller
// checks the extents against its volume's geometry. Its allocations are
// bounded by len(b).
func DecodeIndex(b []byte, id ID, ref IndexRef) (*LogIndex, error) {
	body, err := sealed(b, "write log index")
	if err != nil {
		return nil, err
	}
	if len(body) < indexFixed || string(body[:8]) != indexMagic {
		return nil, fmt.Errorf("%w: not a write log index", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint16(body[8:]); v != indexVersion {
		return nil, fmt.Errorf("%w: write log index format version %d; this program reads version %d", ErrCorrupt, v, indexVersion)
	}
	r := reader{b: body[10:]}
	var got ID
	copy(got[:], r.next(16))
	if gref := (IndexRef{Epoch: r.u64(), Seq: r.u64()}); got != id || gref != ref {
		return nil, fmt.Errorf("%w: write log index of %s %+v, wanted %s %+v", ErrCorrupt, got, gref, id, ref)
	}
	ns := r.u32()
	if uint64(len(r.b)) < uint64(ns)*indexSegSize+4 {
		return nil, fmt.Errorf("%w: write log index lists %d segments in %d bytes", ErrCorrupt, ns, len(r.b))
	}
	x := &LogIndex{Segs: make([]IndexSeg, ns)}
	for i := range x.Segs {
		s := IndexSeg{Epoch: r.u64(), Seq: r.u64()}
		start := r.u64()
		s.Len = r.u32()
		s.Start = int64(start)
		if start >= 1<<63 || s.Len == 0 || s.Len > MaxIndexSegLen {
			return nil, fmt.Errorf("%w: write log index segment %d at %d of %d bytes", ErrCorrupt, i, start, s.Len)
		}
		if i > 0 {
			p := x.Segs[i-1]
			if p.Epoch > s.Epoch || p.Epoch == s.Epoch && (p.Seq > s.Seq || p.Seq == s.Seq && p.Start+int64(p.Len) > s.Start) {
				return nil, fmt.Errorf("%w: write log index segments not sorted apart", ErrCorrupt)
			}
		}
		x.Segs[i] = s
	}
	ne := r.u32()
	if uint64(len(r.b)) != uint64(ne)*indexExtSize {
		return nil, fmt.Errorf("%w: write log index lists %d extents in %d bytes", ErrCorrupt, ne, len(r.b))
	}
	x.Exts = make([]IndexExt, ne)
	for i := range x.Exts {
		e := IndexExt{Block: int64(r.u64()), Off: r.u32(), Len: r.u32(), Seg: r.u32(), Pos: r.u32()}
		switch {
		case e.Block < 0 || e.Len == 0 || uint64(e.Off)+uint64(e.Len) > 1<<MaxBlockShift:
			return nil, fmt.Errorf("%w: write log index extent %d: block %d, %d bytes at %d", ErrCorrupt, i, e.Block, e.Len, e.Off)
		case e.Seg >= ns || uint64(e.Pos)+uint64(e.Len) > uint64(x.Segs[e.Seg].Len):
			return nil, fmt.Errorf("%w: write log index extent %d outside its segment", ErrCorrupt, i)
		case i > 0 && (x.Exts[i-1].Block > e.Block || x.Exts[i-1].Block == e.Block && x.Exts[i-1].Off+x.Exts[i-1].Len > e.Off):
			return nil, fmt.Errorf("%w: write log index extents not sorted apart", ErrCorrupt)
		}
		x.Exts[i] = e
	}
	return x, nil
}
