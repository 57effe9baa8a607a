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
//     shared by any number of maps), Private (an object written in
//     place by one volume, its owner, during one epoch), or Partial (a
//     private object holding only some of the block's 64 sub-blocks,
//     over a Content or Private base block that holds the others).
//   - epoch: a volume's counter of snapshots. A snapshot freezes every
//     private block of the current epoch and starts a new one; a volume
//     writes in place only private blocks of its own current epoch and
//     copies any other block on its first write (copy-on-write), or,
//     on a store with in-place writes, only the sub-blocks the write
//     touches (a Partial entry).
//   - segment: SegmentEntries consecutive entries stored as one object,
//     so a change rewrites one small segment, never the whole map.
//     Segments are immutable; the head lists which segment object holds
//     each part of the map, so a clone or snapshot shares its parent's
//     segments until it changes them.
//
// Memory: an Entry is 40 bytes (a 32-byte key and a pointer to its kind),
// plus 48 bytes for each Partial entry (its mask and base), so an open
// 1 TiB volume of 4 MiB blocks holds 262,144 entries in 10.5 MB, or
// 23 MB if every block is partial. A volume has at most MaxBlocks
// blocks, and DecodeHead refuses a head that claims more, so no stored
// object can size a map beyond 168 MB (352 MiB all partial); nor does a
// decoder allocate for a count it reads before the bytes it counts are
// there.
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
	// which every open holds in memory (Entry: 40 bytes, 88 for a
	// partial block), stays within 160 MiB (352 MiB if every block is
	// partial): 16 TiB at the default 4 MiB blocks, 256 GiB at
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
	// Partial: a private object that holds only some sub-blocks of the
	// block (the others read from a base block).
	Partial Kind = 3
)

func (k Kind) String() string {
	switch k {
	case Zero:
		return "zero"
	case Content:
		return "content"
	case Private:
		return "private"
	case Partial:
		return "partial"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// SubBlocks is how many sub-blocks a block has: the unit of
// copy-on-write of a partial block (64 KiB at 4 MiB blocks).
const SubBlocks = 64

// SubBlockShift returns the log2 of the sub-block size at blocks of
// 2^blockShift bytes.
func SubBlockShift(blockShift uint8) uint8 { return blockShift - 6 }

// AllSubBlocks is the mask of a whole block.
const AllSubBlocks = ^uint64(0)

// Entry describes one block. The zero Entry is a Zero block. Entries are
// comparable: == is true for two copies of one entry, and for equal
// Zero, Content and Private entries; Equal also compares Partial entries
// decoded separately.
//
// The key of a Content entry is the SHA-256 of the object's bytes. The key
// of a Private entry is the owner's ID (16 bytes), the epoch (8 bytes) and
// a sequence number unique within the owner (8 bytes), big endian.
//
// A Partial entry has a key as a Private one (its object, named as a
// private object is, written in place by its owner in its epoch), a mask
// (bit i set: sub-block i is in that object) and a base, a Content or
// Private entry whose object holds every sub-block whose bit is clear.
// The object reads as zeros where its bit is clear (it is sparse there,
// or holds bytes no map reads).
type Entry struct {
	key [32]byte
	// NB: the kind lives behind the pointer, so that an Entry is 40
	// bytes, not 48: Content and Private entries point at a shared
	// kind-only value, Partial entries at their own, nil is Zero.
	x *extra
}

// extra is an entry's kind and, for a Partial entry, its mask and base.
// It is never changed once an Entry points at it.
type extra struct {
	kind     Kind
	baseKind Kind
	mask     uint64
	baseKey  [32]byte
}

var (
	contentX = &extra{kind: Content}
	privateX = &extra{kind: Private}
)

func kindX(k Kind) *extra {
	switch k {
	case Content:
		return contentX
	case Private:
		return privateX
	}
	return nil
}

// ContentEntry returns the entry of a content block with the given hash.
func ContentEntry(sum [32]byte) Entry { return Entry{key: sum, x: contentX} }

// PrivateEntry returns the entry of a private block.
func PrivateEntry(owner ID, epoch, seq uint64) Entry {
	e := Entry{x: privateX}
	copy(e.key[:16], owner[:])
	binary.BigEndian.PutUint64(e.key[16:], epoch)
	binary.BigEndian.PutUint64(e.key[24:], seq)
	return e
}

// PartialEntry returns the entry of a block whose sub-blocks in mask are
// in obj's object (obj is a Private or Partial entry: its object is
// used), and the others in base's (a Content or Private entry). A full
// mask returns obj's object as a Private entry. It panics on other kinds
// or an empty mask: a bug in the caller.
func PartialEntry(obj, base Entry, mask uint64) Entry {
	if k := obj.Kind(); k != Private && k != Partial {
		panic("blockmap: partial entry of a " + k.String() + " object")
	}
	if k := base.Kind(); (k != Content && k != Private) || mask == 0 {
		panic(fmt.Sprintf("blockmap: partial entry over a %v base with mask %#x", k, mask))
	}
	if mask == AllSubBlocks {
		return Entry{key: obj.key, x: privateX}
	}
	return Entry{key: obj.key, x: &extra{kind: Partial, baseKind: base.Kind(), mask: mask, baseKey: base.key}}
}

// Kind returns what the entry points at.
func (e Entry) Kind() Kind {
	if e.x == nil {
		return Zero
	}
	return e.x.kind
}

// Hash returns a Content entry's SHA-256.
func (e Entry) Hash() [32]byte { return e.key }

// Key returns the entry's 32 key bytes, which identify its object among
// the objects of its kind (a Partial entry's among private objects).
func (e Entry) Key() [32]byte { return e.key }

// Owner, Epoch and Seq describe a Private or Partial entry's object.
func (e Entry) Owner() (id ID) { copy(id[:], e.key[:16]); return id }
func (e Entry) Epoch() uint64  { return binary.BigEndian.Uint64(e.key[16:]) }
func (e Entry) Seq() uint64    { return binary.BigEndian.Uint64(e.key[24:]) }

// Mask returns the sub-blocks that the entry's own object holds: all of
// them for Content and Private entries, none for Zero.
func (e Entry) Mask() uint64 {
	switch e.Kind() {
	case Zero:
		return 0
	case Partial:
		return e.x.mask
	}
	return AllSubBlocks
}

// Base returns a Partial entry's base (a Content or Private entry), and
// a Zero entry for other kinds.
func (e Entry) Base() Entry {
	if e.Kind() != Partial {
		return Entry{}
	}
	return Entry{key: e.x.baseKey, x: kindX(e.x.baseKind)}
}

// Object returns the entry of the entry's own object: a Partial entry's
// object as a Private entry, any other entry as it is.
func (e Entry) Object() Entry {
	if e.Kind() == Partial {
		return Entry{key: e.key, x: privateX}
	}
	return e
}

// IsPrivate reports whether the entry's own object is a private object
// (a Private or Partial entry).
func (e Entry) IsPrivate() bool { k := e.Kind(); return k == Private || k == Partial }

// Equal reports whether e and o describe the same block.
func (e Entry) Equal(o Entry) bool {
	if e.x == o.x || e.Kind() != Partial || o.Kind() != Partial {
		return e == o
	}
	return e.key == o.key && *e.x == *o.x
}

// ObjectName returns the store object that holds the block's data (a
// Partial entry's own object, not its base's), or "" for a Zero entry.
func (e Entry) ObjectName() string {
	switch e.Kind() {
	case Content:
		return ContentName(e.key)
	case Private, Partial:
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
	switch e.Kind() {
	case Content:
		return "content:" + hex.EncodeToString(e.key[:8])
	case Private:
		return fmt.Sprintf("private:%s@%d#%d", e.Owner().String()[:8], e.Epoch(), e.Seq())
	case Partial:
		return fmt.Sprintf("partial:%s@%d#%d/%016x over %v", e.Owner().String()[:8], e.Epoch(), e.Seq(), e.x.mask, e.Base())
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
