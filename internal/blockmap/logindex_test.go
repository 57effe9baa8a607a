package blockmap

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"
)

func sampleIndex() *LogIndex {
	return &LogIndex{
		Segs: []IndexSeg{{Epoch: 3, Seq: 7, Start: 0, Len: 4200}, {Epoch: 3, Seq: 7, Start: 4200, Len: 100}, {Epoch: 4, Seq: 1, Start: 1 << 20, Len: 1 << 20}},
		Exts: []IndexExt{
			{Block: 0, Off: 0, Len: 4096, Seg: 0, Pos: 36},
			{Block: 0, Off: 8192, Len: 10, Seg: 1, Pos: 50},
			{Block: 9, Off: 4 << 20, Len: 512, Seg: 2, Pos: 1000},
		},
	}
}

// TestIndexRoundTrip: an index round-trips; it must be the one its name
// says; a flipped byte, an extent outside its segment, extents out of
// order or overlapping are corrupt.
func TestIndexRoundTrip(t *testing.T) {
	id := NewID()
	ref := IndexRef{Epoch: 4, Seq: 12}
	x := sampleIndex()
	b := EncodeIndex(id, ref, x)
	got, err := DecodeIndex(b, id, ref)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, x) {
		t.Fatalf("round trip: %+v, want %+v", got, x)
	}
	if _, err := DecodeIndex(b, id, IndexRef{Epoch: 4, Seq: 13}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("an index decoded under another name: %v", err)
	}
	if _, err := DecodeIndex(b, NewID(), ref); !errors.Is(err, ErrCorrupt) {
		t.Errorf("an index decoded for another volume: %v", err)
	}
	flip := slices.Clone(b)
	flip[len(flip)/2] ^= 1
	if _, err := DecodeIndex(flip, id, ref); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a flipped byte decoded: %v", err)
	}
	for name, mod := range map[string]func(x *LogIndex){
		"past its segment":  func(x *LogIndex) { x.Exts[1].Pos = 95 },
		"no such segment":   func(x *LogIndex) { x.Exts[1].Seg = 3 },
		"overlapping":       func(x *LogIndex) { x.Exts[1].Off = 4000 },
		"out of order":      func(x *LogIndex) { x.Exts[0], x.Exts[1] = x.Exts[1], x.Exts[0] },
		"empty":             func(x *LogIndex) { x.Exts[0].Len = 0 },
		"past a block":      func(x *LogIndex) { x.Exts[2].Off = 1<<MaxBlockShift - 10 },
		"segments unsorted": func(x *LogIndex) { x.Segs[0], x.Segs[1] = x.Segs[1], x.Segs[0] },
		"segments overlap":  func(x *LogIndex) { x.Segs[1].Start = 4000 },
	} {
		x := sampleIndex()
		mod(x)
		if _, err := DecodeIndex(EncodeIndex(id, ref, x), id, ref); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: decoded: %v", name, err)
		}
	}
}

// TestHeadIndex: a head naming an index is written as version 5, with or
// without logs and a delta, and round-trips; a head without one is
// written as before (version 4 with logs: readable by programs of version
// 4); a read-only head with an index is corrupt.
func TestHeadIndex(t *testing.T) {
	h := sampleHead()
	h.Logs = []LogRef{{Epoch: 3, Seq: 7, From: 100}}
	if b := EncodeHead(h); b[9] != 4 {
		t.Fatalf("a head with logs and no index written as version %d", b[9])
	}
	h.Index = IndexRef{Epoch: 3, Seq: 5}
	for _, logs := range [][]LogRef{nil, h.Logs} {
		for _, delta := range [][]DeltaEntry{nil, {{Block: 2, Entry: PrivateEntry(h.ID, 4, 9)}}} {
			h.Logs, h.Delta = logs, delta
			b := EncodeHead(h)
			if b[9] != 5 {
				t.Fatalf("a head with an index written as version %d", b[9])
			}
			got, err := DecodeHead(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.Index != h.Index || !slices.Equal(got.Logs, h.Logs) || len(got.Delta) != len(delta) || !bytes.Equal(EncodeHead(got), b) {
				t.Fatalf("decoded as %+v", got)
			}
		}
	}
	h.ReadOnly, h.Logs = true, nil
	if _, err := DecodeHead(EncodeHead(h)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a read-only head with an index decoded: %v", err)
	}
}

func TestIndexName(t *testing.T) {
	id := NewID()
	name := IndexName(id, 3, 0x1f)
	if n := ParseName(name); n.Kind != IndexObject || n.Volume != id {
		t.Fatalf("ParseName(%q) = %+v", name, n)
	}
	for _, bad := range []string{name + "/0", "vol/" + id.String() + "/x/3", "vol/" + id.String() + "/x/03-1f"} {
		if n := ParseName(bad); n.Kind == IndexObject {
			t.Errorf("ParseName(%q) = %+v", bad, n)
		}
	}
}

func FuzzDecodeIndex(f *testing.F) {
	id := ID{1, 2, 3}
	ref := IndexRef{Epoch: 4, Seq: 12}
	f.Add(EncodeIndex(id, ref, sampleIndex()))
	f.Add(EncodeIndex(id, ref, &LogIndex{}))
	b := EncodeIndex(id, ref, sampleIndex())
	f.Add(b[:len(b)-4])
	f.Add([]byte("ARCHLIDX\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, seal(append([]byte(nil), b...))} {
			x, err := DecodeIndex(in, id, ref)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("error not marked corrupt: %v", err)
				}
				continue
			}
			if !bytes.Equal(EncodeIndex(id, ref, x), in) {
				t.Fatal("decoded index does not encode to the same bytes")
			}
		}
	})
}
