package blockmap

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"testing"
	"unsafe"
)

func sampleHead() *Head {
	return &Head{
		ID: NewID(), Size: 100<<30 + 12345, BlockShift: DefaultShift, Epoch: 3,
		SeqReserved: 1 << 20,
		Segments: []SegmentRef{
			{Index: 0, Owner: NewID(), Seq: 7, CRC: 0xdeadbeef, Shared: true},
			{Index: 2, Owner: NewID(), Seq: 9, CRC: 1},
		},
	}
}

func TestHeadRoundTrip(t *testing.T) {
	h := sampleHead()
	got, err := DecodeHead(EncodeHead(h))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(EncodeHead(got), EncodeHead(h)) || got.Size != h.Size || got.Segments[0] != h.Segments[0] {
		t.Fatalf("round trip changed the head: %+v vs %+v", got, h)
	}
}

// TestHeadVersion1: a head stored before Unsealed existed (format version
// 1) still decodes, with no unsealed epochs; a new head keeps Unsealed.
func TestHeadVersion1(t *testing.T) {
	h := sampleHead()
	b := EncodeHead(h)
	body := b[:len(b)-4]
	old := append([]byte(nil), body[:headFixedV1-4]...) // up to SeqReserved
	old[9] = 1
	old = append(old, body[headFixed-4:headFixed+len(h.Segments)*segRefSize]...) // segment count and segments
	got, err := DecodeHead(seal(old))
	if err != nil {
		t.Fatal(err)
	}
	if got.Unsealed != 0 || got.SeqReserved != h.SeqReserved || len(got.Segments) != 2 || got.Segments[1] != h.Segments[1] {
		t.Fatalf("version 1 head decoded as %+v", got)
	}
	h.Unsealed = 2
	if got, err := DecodeHead(EncodeHead(h)); err != nil || got.Unsealed != 2 {
		t.Fatalf("round trip of Unsealed: %+v, %v", got, err)
	}
	for _, bad := range []Head{{Epoch: 3, Unsealed: 3}, {Epoch: 3, Unsealed: 1, ReadOnly: true}} {
		bad.BlockShift, bad.Size = DefaultShift, 1
		if _, err := DecodeHead(EncodeHead(&bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("head %+v decoded: %v", bad, err)
		}
	}
	b[9] = 6
	if _, err := DecodeHead(seal(b[:len(b)-4])); !errors.Is(err, ErrCorrupt) {
		t.Errorf("head version 6 decoded: %v", err)
	}
}

// TestHeadLogs: a version 4 head's write logs round-trip, with or without
// a delta; a head without logs is written as before (version 2 or 3); a
// read-only head or too many logs is corrupt.
func TestHeadLogs(t *testing.T) {
	h := sampleHead()
	h.Logs = []LogRef{{Epoch: 3, Seq: 7, From: 100}, {Epoch: 4, Seq: 1 << 40, From: 0}}
	for _, delta := range [][]DeltaEntry{nil, {{Block: 2, Entry: PrivateEntry(h.ID, 4, 9)}}} {
		h.Delta = delta
		b := EncodeHead(h)
		if b[9] != 4 {
			t.Fatalf("a head with logs written as version %d", b[9])
		}
		got, err := DecodeHead(b)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.Logs, h.Logs) || len(got.Delta) != len(delta) || len(got.Segments) != len(h.Segments) {
			t.Fatalf("decoded as %+v", got)
		}
	}
	h.Logs, h.Delta = nil, nil
	if b := EncodeHead(h); b[9] != 2 {
		t.Fatalf("a head without logs written as version %d", b[9])
	}
	h.Logs = make([]LogRef, MaxLogs+1)
	if _, err := DecodeHead(EncodeHead(h)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("%d logs decoded: %v", len(h.Logs), err)
	}
	h.Logs, h.ReadOnly = h.Logs[:1], true
	if _, err := DecodeHead(EncodeHead(h)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a read-only head with a log decoded: %v", err)
	}
}

// TestHeadDelta: a version 3 head's delta round-trips and overrides the
// segments' entries; a version 2 head (no delta) still decodes; a delta
// out of order, past the end or too long is corrupt.
func TestHeadDelta(t *testing.T) {
	h := sampleHead()
	p := PrivateEntry(h.ID, 4, 9)
	h.Delta = []DeltaEntry{{Block: 1, Entry: p}, {Block: 7, Entry: Entry{}}, {Block: 9, Entry: ContentEntry([32]byte{1})}}
	b := EncodeHead(h)
	got, err := DecodeHead(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Delta) != 3 || got.Delta[0] != h.Delta[0] || got.Delta[1] != h.Delta[1] || got.Delta[2] != h.Delta[2] {
		t.Fatalf("delta decoded as %+v", got.Delta)
	}
	entries := make([]Entry, 10)
	entries[7] = p
	got.Apply(entries)
	if entries[1] != p || entries[7] != (Entry{}) || entries[9].Kind() != Content {
		t.Fatalf("Apply: %v", entries)
	}
	// Version 2: the same bytes without the delta section.
	if b[9] != 3 {
		t.Fatalf("a head with a delta written as version %d", b[9])
	}
	h.Delta = nil
	v3 := EncodeHead(h)
	if v3[9] != 2 {
		t.Fatalf("a head without a delta written as version %d, want 2 (what older programs read)", v3[9])
	}
	body := v3[:len(v3)-4]
	v2 := append([]byte(nil), body[:headFixed+len(h.Segments)*segRefSize]...)
	v2[9] = 2
	if got, err := DecodeHead(seal(v2)); err != nil || len(got.Delta) != 0 || len(got.Segments) != len(h.Segments) {
		t.Fatalf("version 2 head: %+v, %v", got, err)
	}
	for _, bad := range [][]DeltaEntry{
		{{Block: 3}, {Block: 2}},
		{{Block: 3}, {Block: 3}},
		{{Block: 1 << 40}},
		make([]DeltaEntry, MaxDelta+1),
	} {
		h.Delta = bad
		if _, err := DecodeHead(EncodeHead(h)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("delta %v decoded: %v", bad[:min(2, len(bad))], err)
		}
	}
}

func TestHeadRejectsCorruption(t *testing.T) {
	b := EncodeHead(sampleHead())
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x40
		if _, err := DecodeHead(c); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipping a bit of byte %d: %v, want ErrCorrupt", i, err)
		}
	}
	for n := 0; n < len(b); n++ {
		if _, err := DecodeHead(b[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
}

func TestHeadValidate(t *testing.T) {
	for _, h := range []*Head{
		{BlockShift: 12, Size: 1},
		{BlockShift: 30, Size: 1},
		{BlockShift: DefaultShift, Size: MaxSize + 1},
		{BlockShift: DefaultShift, Size: 4 << 20, Segments: []SegmentRef{{Index: 1}}},
		{BlockShift: DefaultShift, Size: 1 << 40, Segments: []SegmentRef{{Index: 3}, {Index: 3}}},
	} {
		if err := h.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted it", h)
		}
		if _, err := DecodeHead(EncodeHead(h)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("DecodeHead of an invalid head: %v", err)
		}
	}
}

func TestSegmentRoundTrip(t *testing.T) {
	owner := NewID()
	entries := make([]Entry, SegmentEntries)
	entries[0] = ContentEntry(sha256.Sum256([]byte("a")))
	entries[5] = PrivateEntry(owner, 2, 99)
	entries[100] = ContentEntry(sha256.Sum256([]byte("b")))
	b, crc := EncodeSegment(4, entries)
	dst := make([]Entry, SegmentEntries)
	for i := range dst {
		dst[i] = ContentEntry([32]byte{1}) // must be overwritten
	}
	if err := DecodeSegment(b, SegmentRef{Index: 4, CRC: crc}, dst); err != nil {
		t.Fatal(err)
	}
	for i := range entries {
		if dst[i] != entries[i] {
			t.Fatalf("entry %d: %v, want %v", i, dst[i], entries[i])
		}
	}
	if v := b[9]; v != 1 {
		t.Fatalf("a segment without partial entries has format version %d, want 1", v)
	}
	if e := dst[5]; e.Owner() != owner || e.Epoch() != 2 || e.Seq() != 99 || e.Kind() != Private {
		t.Fatalf("private entry fields: %v", e)
	}
	if err := DecodeSegment(b, SegmentRef{Index: 5, CRC: crc}, dst); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("segment under the wrong index: %v", err)
	}
	if err := DecodeSegment(b, SegmentRef{Index: 4, CRC: crc + 1}, dst); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("segment with another checksum than its head says: %v", err)
	}
	if err := DecodeSegment(b, SegmentRef{Index: 4, CRC: crc}, dst[:50]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("segment longer than the volume: %v", err)
	}
}

func TestEntrySize(t *testing.T) {
	// The memory budget in the package doc depends on it.
	if s := unsafe.Sizeof(Entry{}); s != 40 {
		t.Fatalf("Entry is %d bytes, want 40", s)
	}
	if s := unsafe.Sizeof(extra{}); s != 48 {
		t.Fatalf("a partial entry's extra is %d bytes, want 48", s)
	}
}

func TestParseID(t *testing.T) {
	id := NewID()
	if got, err := ParseID(id.String()); err != nil || got != id {
		t.Fatalf("ParseID(String()) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "xyz", id.String()[:30], id.String() + "00"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted it", bad)
		}
	}
}

func FuzzDecodeHead(f *testing.F) {
	f.Add(EncodeHead(sampleHead()))
	f.Add(EncodeHead(&Head{BlockShift: DefaultShift}))
	f.Add([]byte("ARCHHEAD\x00\x01"))
	body := EncodeHead(sampleHead())
	f.Add(body[:len(body)-4])
	withDelta := sampleHead()
	withDelta.Delta = []DeltaEntry{{Block: 2, Entry: PrivateEntry(withDelta.ID, 3, 4)}, {Block: 5}}
	f.Add(EncodeHead(withDelta))
	withIndex := sampleHead()
	withIndex.Index = IndexRef{Epoch: 3, Seq: 9}
	f.Add(EncodeHead(withIndex))
	withIndex.Logs = []LogRef{{Epoch: 3, Seq: 10, From: 77}}
	withIndex.Delta = withDelta.Delta
	f.Add(EncodeHead(withIndex))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Try the input as it is and with a valid checksum appended, so
		// the fuzzer gets past the checksum into the parser.
		for _, in := range [][]byte{b, seal(append([]byte(nil), b...))} {
			h, err := DecodeHead(in)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("error not marked corrupt: %v", err)
				}
				continue
			}
			if !bytes.Equal(EncodeHead(h), in) {
				t.Fatal("decoded head does not encode to the same bytes")
			}
		}
	})
}

func FuzzDecodeSegment(f *testing.F) {
	entries := []Entry{ContentEntry([32]byte{9}), {}, PrivateEntry(ID{1}, 1, 1)}
	b, _ := EncodeSegment(0, entries)
	f.Add(b, uint16(3))
	entries = append(entries, PartialEntry(PrivateEntry(ID{2}, 3, 4), ContentEntry([32]byte{7}), 0x8001))
	b, _ = EncodeSegment(0, entries)
	f.Add(b, uint16(4))
	f.Add([]byte("ARCHSEGM\x00\x01"), uint16(10))
	f.Fuzz(func(t *testing.T, b []byte, room uint16) {
		dst := make([]Entry, int(room)%(SegmentEntries+1))
		var crc uint32
		if len(b) >= 4 {
			crc = checksum(b[:len(b)-4])
		}
		err := DecodeSegment(b, SegmentRef{Index: 0, CRC: crc}, dst)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not marked corrupt: %v", err)
			}
			return
		}
		again, _ := EncodeSegment(0, dst)
		var want []Entry = dst
		got := make([]Entry, len(dst))
		if err := DecodeSegment(again, SegmentRef{Index: 0, CRC: checksum(again[:len(again)-4])}, got); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if !got[i].Equal(want[i]) {
				t.Fatalf("entry %d changed in a round trip", i)
			}
		}
	})
}

// TestPrivateName pins private block names to the format docs/format.md
// gives, vol/<id>/d/<epoch>-<seq> in lowercase hex without padding.
func TestPrivateName(t *testing.T) {
	for _, c := range []struct{ epoch, seq uint64 }{{0, 0}, {1, 0x7e}, {0xabc, 1 << 40}, {^uint64(0), ^uint64(0)}} {
		id := NewID()
		want := fmt.Sprintf("vol/%s/d/%x-%x", id, c.epoch, c.seq)
		if got := PrivateEntry(id, c.epoch, c.seq).ObjectName(); got != want {
			t.Errorf("name %q, want %q", got, want)
		}
	}
}

// TestPartialEntry: a partial entry names its own object as a private
// one, keeps its base and mask, compares by value with Equal, survives a
// segment round trip (format version 2), and a full mask is a Private
// entry.
func TestPartialEntry(t *testing.T) {
	owner := NewID()
	obj := PrivateEntry(owner, 3, 7)
	base := ContentEntry(sha256.Sum256([]byte("base")))
	e := PartialEntry(obj, base, 0b1010)
	if e.Kind() != Partial || e.Mask() != 0b1010 || e.Base() != base || e.Object() != obj ||
		e.ObjectName() != obj.ObjectName() || e.Owner() != owner || e.Epoch() != 3 || e.Seq() != 7 || !e.IsPrivate() {
		t.Fatalf("partial entry %v: kind %v mask %b base %v object %v", e, e.Kind(), e.Mask(), e.Base(), e.Object())
	}
	if f := PartialEntry(e, base, e.Mask()|AllSubBlocks); f != obj {
		t.Fatalf("a full partial entry is %v, want %v", f, obj)
	}
	same := PartialEntry(obj, base, 0b1010)
	if !e.Equal(same) || e.Equal(PartialEntry(obj, base, 0b1011)) || e.Equal(PartialEntry(obj, PrivateEntry(owner, 2, 1), 0b1010)) || e.Equal(obj) || obj.Equal(e) {
		t.Fatal("Equal compares partial entries wrongly")
	}
	if m := (Entry{}).Mask(); m != 0 || base.Mask() != AllSubBlocks || obj.Mask() != AllSubBlocks {
		t.Fatal("Mask of whole entries")
	}
	entries := []Entry{e, base, {}, PartialEntry(obj, PrivateEntry(NewID(), 1, 2), 1<<63)}
	b, crc := EncodeSegment(1, entries)
	if v := b[9]; v != 2 {
		t.Fatalf("a segment with a partial entry has format version %d, want 2", v)
	}
	dst := make([]Entry, 10)
	if err := DecodeSegment(b, SegmentRef{Index: 1, CRC: crc}, dst); err != nil {
		t.Fatal(err)
	}
	for i, want := range entries {
		if !dst[i].Equal(want) {
			t.Fatalf("entry %d: %v, want %v", i, dst[i], want)
		}
	}
	// Corrupt partial entries are refused: an empty or full mask, a base
	// that is not a content or private block, a partial entry in a
	// version 1 segment.
	at := 8 + 2 + 4 + 4 + 1 + 32 // the first entry's mask
	for _, bad := range []func(c []byte){
		func(c []byte) { copy(c[at:], make([]byte, 8)) },
		func(c []byte) { copy(c[at:], bytes.Repeat([]byte{0xff}, 8)) },
		func(c []byte) { c[at+8] = byte(Zero) },
		func(c []byte) { c[at+8] = byte(Partial) },
		func(c []byte) { c[9] = 1 },
		func(c []byte) { c[9] = 3 },
	} {
		c := append([]byte(nil), b[:len(b)-4]...)
		bad(c)
		c = seal(c)
		if err := DecodeSegment(c, SegmentRef{Index: 1, CRC: checksum(c[:len(c)-4])}, dst); !errors.Is(err, ErrCorrupt) {
			t.Errorf("corrupt partial entry decoded: %v", err)
		}
	}
}

// TestSegmentVersion1 pins the version 1 segment format (written before
// partial entries existed, and still for segments without one): built
// here byte by byte, it decodes.
func TestSegmentVersion1(t *testing.T) {
	owner := ID{0xaa}
	var b []byte
	b = append(b, "ARCHSEGM"...)
	b = append(b, 0, 1)       // version
	b = append(b, 0, 0, 0, 2) // index
	b = append(b, 0, 0, 0, 3) // entries
	b = append(b, 1)
	b = append(b, bytes.Repeat([]byte{0x11}, 32)...)
	b = append(b, 0)
	b = append(b, 2)
	b = append(b, owner[:]...)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9)
	b = seal(b)
	dst := make([]Entry, 4)
	if err := DecodeSegment(b, SegmentRef{Index: 2, CRC: checksum(b[:len(b)-4])}, dst); err != nil {
		t.Fatal(err)
	}
	want := []Entry{ContentEntry([32]byte(bytes.Repeat([]byte{0x11}, 32))), {}, PrivateEntry(owner, 5, 9), {}}
	for i := range want {
		if dst[i] != want[i] {
			t.Fatalf("entry %d: %v, want %v", i, dst[i], want[i])
		}
	}
	if again, _ := EncodeSegment(2, dst); !bytes.Equal(again, b) {
		t.Fatal("a segment without partial entries does not encode as version 1")
	}
}
