// Package blockmap is the durable format of a volume's block map: what
// each block of a volume is, and how the map is stored as one head object
// and segment objects. It is pure code: encode, decode, no I/O.
//
// Vocabulary:
//   - block: a fixed-size piece of a volume (a power of two, 64 KiB to
//     32 MiB, default 4 MiB); the last block may be cut short by the
//     volume's size.
//   - entry: what a block is. Zero (never stored, reads as zeros),
//     Content (an immutable object named by the SHA-256 of its bytes,
//     shared by any number of maps), or Private (an object written in
//     place by one volume, its owner, during one epoch).
//   - epoch: a volume's counter of snapshots. A snapshot freezes every
//     private block of the current epoch and starts a new one; a volume
//     writes in place only private blocks of its own current epoch and
//     copies any other block on its first write (copy-on-write).
//   - segment: SegmentEntries consecutive entries stored as one object,
//     so a change rewrites one small segment, never the whole map.
//     Segments are immutable; the head lists which segment object holds
//     each part of the map, so a clone or snapshot shares its parent's
//     segments until it changes them.
//
// Memory: an Entry is 33 bytes (a kind byte and a 32-byte key), so an
// open 1 TiB volume of 4 MiB blocks holds 262,144 entries in 8.7 MB. A
// volume has at most MaxBlocks blocks, and DecodeHead refuses a head that
// claims more, so no stored object can size a map beyond 138 MB; nor
// does a decoder allocate for a count it reads before the bytes it
// counts are there.
//
// Both formats start with a magic and a format version and end with a
// CRC-32C of everything before it; decoders reject anything else with an
// error wrapping ErrCorrupt, never a panic.
package blockmap

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
)

// ErrCorrupt marks a map object that does not decode.
var ErrCorrupt = errors.New("blockmap: corrupt map object")

// Format limits.
const (
	MinBlockShift  = 16 // 64 KiB
	MaxBlockShift  = 25 // 32 MiB
	DefaultShift   = 22 // 4 MiB
	SegmentEntries = 4096
	// MaxSize bounds the size field of the format at 2^60 bytes (1 EiB);
	// MaxBlocks bounds a volume much lower.
	MaxSize = 1 << 60
	// MaxBlocks bounds the blocks of one volume, so that its whole map,
	// which every open holds in memory (Entry: 33 bytes), stays within
	// 132 MiB (138 MB): 16 TiB at the default 4 MiB blocks, 256 GiB at
	// 64 KiB, 128 TiB at 32 MiB. A daemon serving a handful of volumes of
	// the largest size, and an open that briefly holds two copies (a
	// resize, a follower's reload), then still fit in a few GiB. Maps
	// are loaded whole until they are loaded in pieces.
	MaxBlocks = 1 << 22
)

// MaxSizeFor returns the largest volume size at blocks of 2^shift bytes.
func MaxSizeFor(shift uint8) uint64 { return MaxBlocks << shift }

// ID names a volume, snapshot or image for its whole life. It never
// changes, whatever the volume is called.
type ID [16]byte

// NewID returns a random ID.
func NewID() ID {
	var id ID
	rand.Read(id[:])
	return id
}

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID (no volume).
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses the 32-hex-digit form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("blockmap: invalid volume id %q", s)
	}
	copy(id[:], b)
	return id, nil
}

// Kind is what an entry points at.
type Kind uint8

const (
	Zero    Kind = 0
	Content Kind = 1
	Private Kind = 2
)

func (k Kind) String() string {
	switch k {
	case Zero:
		return "zero"
	case Content:
		return "content"
	case Private:
		return "private"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Entry describes one block. The zero Entry is a Zero block.
//
// The key of a Content entry is the SHA-256 of the object's bytes. The key
// of a Private entry is the owner's ID (16 bytes), the epoch (8 bytes) and
// a sequence number unique within the owner (8 bytes), big endian.
type Entry struct {
	kind Kind
	key  [32]byte
}

// ContentEntry returns the entry of a content block with the given hash.
func ContentEntry(sum [32]byte) Entry { return Entry{kind: Content, key: sum} }

// PrivateEntry returns the entry of a private block.
func PrivateEntry(owner ID, epoch, seq uint64) Entry {
	e := Entry{kind: Private}
	copy(e.key[:16], owner[:])
	binary.BigEndian.PutUint64(e.key[16:], epoch)
	binary.BigEndian.PutUint64(e.key[24:], seq)
	return e
}

func (e Entry) Kind() Kind { return e.kind }

// Hash returns a Content entry's SHA-256.
func (e Entry) Hash() [32]byte { return e.key }

// Key returns the entry's 32 key bytes, which identify its object among
// the objects of its kind.
func (e Entry) Key() [32]byte { return e.key }

// Owner, Epoch and Seq describe a Private entry.
func (e Entry) Owner() (id ID) { copy(id[:], e.key[:16]); return id }
func (e Entry) Epoch() uint64  { return binary.BigEndian.Uint64(e.key[16:]) }
func (e Entry) Seq() uint64    { return binary.BigEndian.Uint64(e.key[24:]) }

// ObjectName returns the store object that holds the block's data, or ""
// for a Zero entry.
func (e Entry) ObjectName() string {
	switch e.kind {
	case Content:
		return ContentName(e.key)
	case Private:
		// NB: built by hand, not with fmt: this runs on every I/O.
		owner := e.Owner()
		b := make([]byte, 0, 4+32+3+16+1+16)
		b = append(b, "vol/"...)
		b = hex.AppendEncode(b, owner[:])
		b = append(b, "/d/"...)
		b = strconv.AppendUint(b, e.Epoch(), 16)
		b = append(b, '-')
		b = strconv.AppendUint(b, e.Seq(), 16)
		return string(b)
	}
	return ""
}

func (e Entry) String() string {
	switch e.kind {
	case Content:
		return "content:" + hex.EncodeToString(e.key[:8])
	case Private:
		return fmt.Sprintf("private:%s@%d#%d", e.Owner().String()[:8], e.Epoch(), e.Seq())
	}
	return "zero"
}

// ContentName names the object of a content block.
func ContentName(sum [32]byte) string { return "blk/" + hex.EncodeToString(sum[:]) }

// HeadName names a volume's head object.
func HeadName(id ID) string { return "vol/" + id.String() + "/head" }

// VolumePrefix is the prefix of every object a volume owns.
func VolumePrefix(id ID) string { return "vol/" + id.String() + "/" }

// SegmentName names a segment object.
func SegmentName(owner ID, index uint32, seq uint64) string {
	return fmt.Sprintf("vol/%s/s/%x-%x", owner, index, seq)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// sealed checks and strips the trailing CRC-32C of b.
func sealed(b []byte, what string) ([]byte, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: %s of %d bytes", ErrCorrupt, what, len(b))
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if checksum(body) != sum {
		return nil, fmt.Errorf("%w: %s checksum mismatch", ErrCorrupt, what)
	}
	return body, nil
}

func seal(b []byte) []byte { return binary.BigEndian.AppendUint32(b, checksum(b)) }

// MarshalText and UnmarshalText make IDs hex strings in JSON.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}
