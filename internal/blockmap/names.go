package blockmap

import (
	"encoding/hex"
	"strconv"
	"strings"
)

// The objects of block maps, in the store's namespace; blockmap is the
// only package that builds or parses their names (ContentName, HeadName,
// VolumePrefix, SegmentName, LogName, Entry.ObjectName build them; ParseName
// parses them), and of the records of buckets and their objects (package
// bucket encodes their contents), whose maps are block maps too. Other
// packages own their own prefixes: catalog "cat/", lease "lease/", gc "gc/".
//
//	blk/<SHA-256 in hex>             a content block
//	vol/<id>/head                    a volume's head
//	vol/<id>/s/<index>-<seq>         a segment of a map (hex numbers)
//	vol/<id>/d/<epoch>-<seq>         a private block (hex numbers)
//	vol/<id>/l/<epoch>-<seq>         a writer's log (hex numbers)
//	vol/<id>/l/<epoch>-<seq>/<start> a segment of a writer's log (hex)
//	vol/<id>/x/<epoch>-<seq>         a write log index (hex numbers)
//	s3/b/<bucket>                    a bucket
//	s3/o/<bucket>/<key>              an object (key encoded: EncodeKey)
//	s3/u/<bucket>/<upload>           a multipart upload in progress
//	s3/p/<bucket>/<upload>/<part>    an uploaded part (decimal, 5 digits)
const (
	// ContentPrefix is the prefix of every content block.
	ContentPrefix = "blk/"
	// VolumesPrefix is the prefix of every object a volume owns.
	VolumesPrefix = "vol/"
)

// MayHoldBlocks reports whether a name under prefix can be a block (a
// content block or a private block): false for the prefixes of other
// owners' objects, such as the catalog's.
func MayHoldBlocks(prefix string) bool {
	for _, p := range []string{ContentPrefix, VolumesPrefix} {
		if strings.HasPrefix(prefix, p) || strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

// ObjectKind is the kind of a block map object, as ParseName finds it.
type ObjectKind uint8

const (
	NotBlockmap   ObjectKind = iota // a name ParseName does not know: not blockmap's
	ContentObject                   // blk/<hash>: Name.Hash
	HeadObject                      // vol/<id>/head: Name.Volume
	SegmentObject                   // vol/<id>/s/...: Name.Volume
	PrivateObject                   // vol/<id>/d/<epoch>-<seq>: Name.Volume and Name.Entry
	LogObject                       // vol/<id>/l/<epoch>-<seq>[/<start>]: Name.Volume, Name.Log
	VolumeObject                    // any other object under vol/<id>/: Name.Volume
	BucketRecord                    // s3/b/<bucket>: Name.Bucket
	ObjectRecord                    // s3/o/<bucket>/<key>: Name.Bucket, Name.Key
	UploadRecord                    // s3/u/<bucket>/<upload>: Name.Bucket, Name.Upload
	PartRecord                      // s3/p/<bucket>/<upload>/<part>: Name.Bucket, Name.Upload, Name.Part
	IndexObject                     // vol/<id>/x/<epoch>-<seq>: Name.Volume (programs before it: VolumeObject)
)

// Name is an object name parsed by ParseName.
type Name struct {
	Kind   ObjectKind
	Volume ID       // the owner of a volume's object
	Hash   [32]byte // a content block's hash
	Entry  Entry    // a private block's entry (its Owner is Volume)
	Log    string   // a log or a segment of one: the log's name (LogName)
	Bucket string   // a bucket's records: the bucket
	Key    string   // an object record: the object's key
	Upload string   // an upload or part record: the upload's id
	Part   int      // a part record: the part number
}

// ParseName parses the name of a block map object. A name that is not in
// the canonical form its builder gives (a content name whose hash is not
// 64 hex digits, a private name with a malformed number, a volume
// prefix whose id does not parse) is NotBlockmap: no caller may take it
// for one of blockmap's objects.
func ParseName(name string) Name {
	if h, ok := strings.CutPrefix(name, ContentPrefix); ok {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != 32 {
			return Name{}
		}
		return Name{Kind: ContentObject, Hash: [32]byte(b)}
	}
	if strings.HasPrefix(name, BucketsPrefix) {
		return parseBucketName(name)
	}
	rest, ok := strings.CutPrefix(name, VolumesPrefix)
	if !ok {
		return Name{}
	}
	idStr, tail, ok := strings.Cut(rest, "/")
	if !ok {
		return Name{}
	}
	id, err := ParseID(idStr)
	if err != nil {
		return Name{}
	}
	n := Name{Kind: VolumeObject, Volume: id}
	switch {
	case tail == "head":
		n.Kind = HeadObject
	case strings.HasPrefix(tail, "s/"):
		n.Kind = SegmentObject
	case strings.HasPrefix(tail, "x/"):
		epochStr, seqStr, ok := strings.Cut(tail[2:], "-")
		epoch, err1 := strconv.ParseUint(epochStr, 16, 64)
		seq, err2 := strconv.ParseUint(seqStr, 16, 64)
		if !ok || err1 != nil || err2 != nil || IndexName(id, epoch, seq) != name {
			return Name{}
		}
		n.Kind = IndexObject
	case strings.HasPrefix(tail, "d/"), strings.HasPrefix(tail, "l/"):
		epochStr, seqStr, ok := strings.Cut(tail[2:], "-")
		seqStr, startStr, isSeg := strings.Cut(seqStr, "/")
		if isSeg && tail[0] != 'l' {
			return Name{}
		}
		if !ok {
			return Name{}
		}
		epoch, err1 := strconv.ParseUint(epochStr, 16, 64)
		seq, err2 := strconv.ParseUint(seqStr, 16, 64)
		if err1 != nil || err2 != nil {
			return Name{}
		}
		if tail[0] == 'l' {
			n.Kind, n.Log = LogObject, LogName(id, epoch, seq)
			if isSeg {
				start, err := strconv.ParseUint(startStr, 16, 63)
				if err != nil || LogSegmentName(id, epoch, seq, int64(start)) != name {
					return Name{}
				}
			} else if n.Log != name {
				return Name{} // not in canonical form: not ours to judge
			}
			break
		}
		e := PrivateEntry(id, epoch, seq)
		if e.ObjectName() != name {
			return Name{}
		}
		n.Kind, n.Entry = PrivateObject, e
	}
	return n
}
