// Package bucket stores files as objects in buckets, on the same blocks
// as volumes: the object model under the S3 API (package s3fe).
//
// A bucket is a namespace: one record (blockmap.BucketName). An object
// is a record (blockmap.ObjectName) holding its metadata (size, content
// type, ETag, user metadata, time) and its data as a list of pieces, each
// a read-only block map (an image, as image.Import makes one: chunked,
// hashed and deduplicated as it streams, in bounded memory) and the number of
// bytes of it the object uses. An object read is the concatenation of its
// pieces. A plain upload has one piece; an object of zero bytes has none.
//
// Multipart: each uploaded part is stored as its own map with a part
// record (blockmap.PartName); completing the upload writes an object
// record whose pieces are the parts' maps, in order, and deletes the
// upload's records. No data is copied or re-read, whatever the part
// sizes: a part whose size is not a multiple of the block size is simply
// a piece that ends inside its last block. (Only a bridge that needs one
// map, a volume cloned from the object, cares: it can join the pieces'
// maps without copying when every piece but the last is block-aligned,
// which parts of the usual 8 MiB are at the default 4 MiB blocks.)
//
// CopyObject copies the record: O(1) in the object's size.
//
// Garbage collection: object records, and the part records of uploads
// in progress, are roots (Roots, which package gc calls): the maps they
// name and the blocks those reference are kept. An upload's map is younger than the grace period until its
// record is written; the operations that copy references to existing
// maps (copy, complete) and that deduplicate onto existing blocks
// (uploads) run under a hold (Store.Hold), as snapshots and imports do;
// the S3 frontend shares one among its requests in flight (gc.SharedHold),
// so that a part costs only the durable writes of its data. Those are
// two stages one after another for a part (its blocks and its map's
// segments at once, then its map's head and its record at once), three
// for a PutObject (the record after the head); the crash argument is in
// upload.go and UploadPart, and CompleteUpload refuses a part whose map's
// head a crash left missing (ErrBadPart). An operation whose hold a
// collection took for dead meanwhile (a stall past it: gc.ErrHoldLost)
// keeps its result if it finds its new map whole under a new hold
// (uploads), else removes the records and head it wrote, which may name
// objects that collection deleted (heldUndo).
// Deleting or overwriting an object only removes or replaces the record:
// the next collection reclaims what nothing else references. A read in
// progress of an object deleted meanwhile may then fail.
//
// Listing: the store lists in no order, so a listing reads every record
// name of the bucket, keeping the page's names only (at most 1001, in a
// heap), then reads the records of one page (at most 1000): O(objects in
// the bucket) time per page, fine for thousands to a few hundred thousand
// objects, but O(page) memory whatever the bucket's size.
// ListMultipartUploads costs more: an upload's record is named by its ID
// alone, so ListUploads reads every upload record of the bucket (one
// store read each) to learn their keys, whatever the page, prefix or
// markers asked: O(uploads in progress) reads per page. Uploads in
// progress are few in practice (each is completed or aborted); a bucket
// with many thousands of abandoned ones makes each page slow until they
// are aborted. Bounding it would need the key in the record's name.
//
// Limits: keys up to about 300 bytes (their encoded form must fit a store
// name; blockmap.ErrKeyTooLong), bucket names as S3 (3 to 63 of [a-z0-9.-]).
// Not atomic with each other: a bucket deleted while an object is put in
// it, or an upload created (each re-checks the bucket after writing and
// removes its record).
package bucket

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// Errors of the package.
var (
	ErrNoBucket       = errors.New("bucket: no such bucket")
	ErrBucketExists   = errors.New("bucket: the bucket exists already")
	ErrBucketNotEmpty = errors.New("bucket: the bucket is not empty: delete its objects and abort its uploads first")
	ErrBadBucketName  = errors.New("bucket: invalid bucket name: 3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit")
	ErrNoKey          = errors.New("bucket: no such key")
	ErrNoUpload       = errors.New("bucket: no such upload: it was completed or aborted")
	ErrBadPart        = errors.New("bucket: a part of the list was not uploaded, or its ETag differs")
	ErrPartOrder      = errors.New("bucket: the parts must be listed in ascending order")
	ErrPartTooSmall   = errors.New("bucket: a part other than the last is smaller than 5 MiB")
	ErrBadDigest      = errors.New("bucket: the data's MD5 differs from Content-MD5")
	ErrPrecondition   = errors.New("bucket: a precondition failed")
	ErrIncomplete     = errors.New("bucket: the body ended before its announced length")
	ErrTooLong        = errors.New("bucket: the body is longer than its announced length")
	ErrBadRange       = errors.New("bucket: the range is not within the object")
	ErrNotAligned     = errors.New("bucket: the object's pieces are not block-aligned; it cannot be one volume's map without copying")
)

// MinPartSize is the smallest size of a part that is not the last.
const MinPartSize = 5 << 20

// MaxParts bounds the parts of an upload.
const MaxParts = 10000

// uploadWorkers bounds the blocks being stored per upload (storeBlocks):
// with as many queued and the one being read, at most 2*4+1 blocks of
// memory per upload.
const uploadWorkers = 4

// Store is the buckets of one object store.
type Store struct {
	S objstore.Store
	// Hold holds garbage collections off until the returned function is
	// called, which reports whether the hold lasted (package gc's
	// AcquireHold and Hold.Release). Nil: no collection runs (tests).
	Hold func(ctx context.Context) (release func() error, err error)
	// Now tells the time (nil: time.Now).
	Now func() time.Time
	// BlockShift is the block size of new maps (0: blockmap.DefaultShift).
	BlockShift uint8
	// MinPart is the smallest part but the last of a multipart upload
	// (0: MinPartSize; tests lower it).
	MinPart int64
}

func (b *Store) now() time.Time {
	if b.Now != nil {
		return b.Now().UTC()
	}
	return time.Now().UTC()
}

// held runs fn under a hold.
func (b *Store) held(ctx context.Context, fn func() error) error {
	return b.heldUndo(ctx, func() (func(context.Context) bool, error) { return nil, fn() })
}

// heldUndo runs fn under a hold. If fn succeeds but the hold's release
// fails (gc.ErrHoldLost: a collection ran meanwhile, which may have
// deleted what fn's result names), it calls the undo fn returned, even if
// ctx has ended, which either finds the result whole and keeps it
// (reporting true: heldUndo then returns nil) or removes it.
func (b *Store) heldUndo(ctx context.Context, fn func() (undo func(context.Context) (kept bool), err error)) error {
	if b.Hold == nil {
		_, err := fn()
		return err
	}
	release, err := b.Hold(ctx)
	if err != nil {
		return err
	}
	undo, err := fn()
	if rerr := release(); err == nil && rerr != nil {
		err = rerr
		if undo != nil && undo(context.WithoutCancel(ctx)) {
			err = nil
		}
	}
	return err
}

// keepWhole reports whether map id (one this process made: content and
// zero blocks) is whole, checked under a new hold: its head, each of its
// segments and each block they name exist, and no collection ran during
// the check. A map named by a record and found whole so stays whole.
func (b *Store) keepWhole(ctx context.Context, id blockmap.ID) bool {
	release, err := b.Hold(ctx)
	if err != nil {
		return false
	}
	err = b.whole(ctx, id)
	if rerr := release(); err == nil {
		err = rerr
	}
	return err == nil
}

// whole returns an error unless every object map id references exists.
func (b *Store) whole(ctx context.Context, id blockmap.ID) error {
	h, _, err := volume.ReadHead(ctx, b.S, id)
	if err != nil {
		return err
	}
	if len(h.Delta) > 0 || len(h.Logs) > 0 || !h.Index.IsZero() {
		return fmt.Errorf("bucket: map %s is not an upload's", id)
	}
	seen := map[string]bool{}
	for _, ref := range h.Segments {
		raw, _, err := b.S.Get(ctx, ref.Name())
		if err != nil {
			return err
		}
		seg := make([]blockmap.Entry, blockmap.SegmentEntries)
		if err := blockmap.DecodeSegment(raw, ref, seg); err != nil {
			return err
		}
		for _, e := range seg {
			switch e.Kind() {
			case blockmap.Zero:
			case blockmap.Content:
				if name := e.ObjectName(); !seen[name] {
					seen[name] = true
					if _, err := b.S.Stat(ctx, name); err != nil {
						return err
					}
				}
			default:
				return fmt.Errorf("bucket: map %s is not an upload's", id)
			}
		}
	}
	return nil
}

// Piece is a part of an object's data: Size bytes of map Map from offset
// Off.
type Piece struct {
	Map  blockmap.ID `json:"map"`
	Off  int64       `json:"off,omitempty"`
	Size int64       `json:"size"`
}

// slice returns the pieces of bytes [off, off+n) of pieces.
func slice(pieces []Piece, off, n int64) []Piece {
	var out []Piece
	for _, p := range pieces {
		if n == 0 {
			break
		}
		if off >= p.Size {
			off -= p.Size
			continue
		}
		k := min(p.Size-off, n)
		out = append(out, Piece{Map: p.Map, Off: p.Off + off, Size: k})
		off, n = 0, n-k
	}
	return out
}

// Object is an object's record.
type Object struct {
	Key         string            `json:"key"`
	Size        int64             `json:"size"`
	ETag        string            `json:"etag"` // quoted, as S3 sends it
	ContentType string            `json:"type,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"` // user metadata, names lowercase without x-amz-meta-
	ModTime     time.Time         `json:"mtime"`
	Pieces      []Piece           `json:"pieces,omitempty"`
	// Parts are the sizes of the parts of a multipart upload, in order
	// (GET with partNumber); none for other objects.
	Parts []int64 `json:"parts,omitempty"`
}

// PartRange returns the offset and length of part n (1-based) of o: the
// whole object as its part 1 if it was not uploaded in parts.
func (o *Object) PartRange(n int) (off, length int64, ok bool) {
	if len(o.Parts) == 0 {
		return 0, o.Size, n == 1
	}
	if n < 1 || n > len(o.Parts) {
		return 0, 0, false
	}
	for _, p := range o.Parts[:n-1] {
		off += p
	}
	return off, o.Parts[n-1], true
}

// Bucket is a bucket's record.
type Bucket struct {
	Name    string    `json:"-"`
	Created time.Time `json:"created"`
}

// ValidBucketName checks an S3 bucket name.
func ValidBucketName(name string) error {
	if len(name) < 3 || len(name) > 63 || strings.Contains(name, "..") || net.ParseIP(name) != nil {
		return fmt.Errorf("%w: %q", ErrBadBucketName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || i == len(name)-1 || c != '.' && c != '-') {
			return fmt.Errorf("%w: %q", ErrBadBucketName, name)
		}
	}
	return nil
}

// CreateBucket creates a bucket.
func (b *Store) CreateBucket(ctx context.Context, name string) error {
	if err := ValidBucketName(name); err != nil {
		return err
	}
	rec, _ := json.Marshal(Bucket{Created: b.now()})
	_, err := b.S.Create(ctx, blockmap.BucketName(name), rec)
	if errors.Is(err, objstore.ErrExists) {
		return fmt.Errorf("%w: %s", ErrBucketExists, name)
	}
	return err
}

// HeadBucket returns ErrNoBucket if the bucket does not exist.
func (b *Store) HeadBucket(ctx context.Context, name string) error {
	if ValidBucketName(name) != nil {
		return fmt.Errorf("%w: %s", ErrNoBucket, name)
	}
	_, err := b.S.Stat(ctx, blockmap.BucketName(name))
	if objstore.IsNotExist(err) {
		return fmt.Errorf("%w: %s", ErrNoBucket, name)
	}
	return err
}

// DeleteBucket deletes an empty bucket.
func (b *Store) DeleteBucket(ctx context.Context, name string) error {
	if err := b.HeadBucket(ctx, name); err != nil {
		return err
	}
	errFound := errors.New("found")
	for _, p := range []string{blockmap.ObjectPrefix(name), blockmap.UploadPrefix(name)} {
		err := b.S.List(ctx, p, func(objstore.Info) error { return errFound })
		if err == errFound {
			return fmt.Errorf("%w: %s", ErrBucketNotEmpty, name)
		}
		if err != nil {
			return err
		}
	}
	err := b.S.Delete(ctx, blockmap.BucketName(name))
	if objstore.IsNotExist(err) {
		return fmt.Errorf("%w: %s", ErrNoBucket, name)
	}
	return err
}

// ListBuckets returns every bucket, by name.
func (b *Store) ListBuckets(ctx context.Context) ([]Bucket, error) {
	var names []string
	err := b.S.List(ctx, blockmap.BucketRecordsPrefix(), func(in objstore.Info) error {
		if n := blockmap.ParseName(in.Name); n.Kind == blockmap.BucketRecord {
			names = append(names, n.Bucket)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	out := make([]Bucket, 0, len(names))
	for _, n := range names {
		raw, _, err := b.S.Get(ctx, blockmap.BucketName(n))
		if objstore.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var bk Bucket
		if err := json.Unmarshal(raw, &bk); err != nil {
			return nil, fmt.Errorf("bucket: record of %s: %w", n, err)
		}
		bk.Name = n
		out = append(out, bk)
	}
	return out, nil
}

// PutOptions describe an upload.
type PutOptions struct {
	ContentType string
	Meta        map[string]string
	// ContentMD5, if not nil, is the MD5 the data must have.
	ContentMD5 []byte
	// IfNoneMatch: store only if the key has no object ("*").
	IfNoneMatch bool
	// IfMatch, if not "", is the ETag the current object must have.
	IfMatch string
}

// countingReader counts and hashes what it reads, and fails with
// ErrIncomplete if the stream ends before want bytes (want < 0: any).
type countingReader struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	want int64
	eof  bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.want >= 0 && int64(len(p)) > c.want-c.n {
		p = p[:c.want-c.n]
		if len(p) == 0 {
			// Read on to the stream's end: a reader that checks the data
			// (a digest, a trailing checksum) reports there.
			var one [1]byte
			n, err := c.r.Read(one[:])
			for n == 0 && err == nil {
				n, err = c.r.Read(one[:])
			}
			switch {
			case n > 0:
				return 0, fmt.Errorf("%w: more than the %d bytes announced", ErrTooLong, c.want)
			case err != io.EOF:
				return 0, err
			}
			c.eof = true
			return 0, io.EOF
		}
	}
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	c.eof = err == io.EOF
	switch {
	case err == io.EOF && c.want >= 0 && c.n < c.want, errors.Is(err, io.ErrUnexpectedEOF):
		// Not io.ErrUnexpectedEOF itself, which storeBlocks, reading
		// with io.ReadFull, would take for the end of the data.
		err = fmt.Errorf("%w: %d of %d bytes", ErrIncomplete, c.n, c.want)
	case err != nil && err != io.EOF:
		err = fmt.Errorf("bucket: read the data: %w", err)
	}
	return n, err
}

// PutObject stores r (size bytes; -1 to read to its end) as the object
// key of bucket, replacing any object of that key. The object becomes
// visible only once all its data is stored: an upload that fails (a
// client that disconnects, a digest that differs) leaves the key as it
// was.
func (b *Store) PutObject(ctx context.Context, bucket, key string, r io.Reader, size int64, o PutOptions) (*Object, error) {
	name, err := b.objectName(ctx, bucket, key)
	if err != nil {
		return nil, err
	}
	var obj *Object
	// A collection that ran while this stalled past its hold may have
	// deleted the blocks and segments of the map the record names: then
	// the record and the head go (the record first: no object is ever
	// visible over a missing map).
	err = b.heldUndo(ctx, func() (func(context.Context) bool, error) {
		st, err := b.store(ctx, r, size)
		if err != nil {
			return nil, err
		}
		if o.ContentMD5 != nil && string(o.ContentMD5) != string(st.sum) {
			return nil, ErrBadDigest
		}
		obj = &Object{Key: key, ETag: `"` + hex.EncodeToString(st.sum) + `"`, ContentType: o.ContentType,
			Meta: o.Meta, ModTime: b.now(), Pieces: st.pieces()}
		for _, p := range obj.Pieces {
			obj.Size += p.Size
		}
		// The head before the record, which makes the object visible
		// (to readers, and after a crash).
		if err := b.writeHead(ctx, st); err != nil {
			return nil, err
		}
		v, err := b.writeObjectVersion(ctx, bucket, name, obj, o)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) bool {
			if st.head == nil || b.keepWhole(ctx, st.head.ID) {
				return true
			}
			// The head only once no record of this write names it.
			err := b.S.DeleteVersion(ctx, name, v)
			if err == nil || objstore.IsNotExist(err) || errors.Is(err, objstore.ErrConflict) {
				b.deleteHead(ctx, st)
			}
			return false
		}, nil
	})
	return obj, err
}

func (b *Store) objectName(ctx context.Context, bucket, key string) (string, error) {
	if err := b.HeadBucket(ctx, bucket); err != nil {
		return "", err
	}
	return blockmap.ObjectName(bucket, key)
}

// writeObject writes obj's record under the conditions of o, then checks
// that the bucket was not deleted meanwhile.
func (b *Store) writeObject(ctx context.Context, bucket, name string, obj *Object, o PutOptions) error {
	_, err := b.writeObjectVersion(ctx, bucket, name, obj, o)
	return err
}

// writeObjectVersion is writeObject, and returns the version written.
func (b *Store) writeObjectVersion(ctx context.Context, bucket, name string, obj *Object, o PutOptions) (objstore.Version, error) {
	rec, err := json.Marshal(obj)
	if err != nil {
		return 0, err
	}
	var v objstore.Version
	switch {
	case o.IfNoneMatch:
		v, err = b.S.Create(ctx, name, rec)
		if errors.Is(err, objstore.ErrExists) {
			return 0, ErrPrecondition
		}
	case o.IfMatch != "":
		cur, ver, gerr := b.getRecord(ctx, name)
		if gerr != nil {
			if errors.Is(gerr, ErrNoKey) {
				return 0, ErrPrecondition
			}
			return 0, gerr
		}
		if !etagMatch(o.IfMatch, cur.ETag) {
			return 0, ErrPrecondition
		}
		v, err = b.S.Swap(ctx, name, rec, ver)
		if errors.Is(err, objstore.ErrConflict) {
			return 0, ErrPrecondition
		}
	default:
		v, err = b.S.Put(ctx, name, rec)
	}
	if err != nil {
		return 0, err
	}
	if err := b.HeadBucket(ctx, bucket); err != nil {
		b.S.Delete(ctx, name)
		return 0, err
	}
	return v, nil
}

// etagMatch reports whether an If-Match list names etag.
func etagMatch(list, etag string) bool {
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		if e == "*" || strings.Trim(e, `"`) == strings.Trim(etag, `"`) {
			return true
		}
	}
	return false
}

// ETagMatch reports whether the If-Match or If-None-Match list names
// etag ("*" names any).
func ETagMatch(list, etag string) bool { return etagMatch(list, etag) }

func (b *Store) getRecord(ctx context.Context, name string) (*Object, objstore.Version, error) {
	raw, ver, err := b.S.Get(ctx, name)
	if objstore.IsNotExist(err) {
		return nil, 0, ErrNoKey
	}
	if err != nil {
		return nil, 0, err
	}
	var o Object
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, 0, fmt.Errorf("bucket: record %s: %w", name, err)
	}
	return &o, ver, nil
}

// GetObject returns the record of an object.
func (b *Store) GetObject(ctx context.Context, bucket, key string) (*Object, error) {
	name, err := b.objectName(ctx, bucket, key)
	if errors.Is(err, blockmap.ErrKeyTooLong) {
		return nil, ErrNoKey
	}
	if err != nil {
		return nil, err
	}
	o, _, err := b.getRecord(ctx, name)
	return o, err
}

// DeleteObject deletes an object; deleting an absent key succeeds, as in
// S3.
func (b *Store) DeleteObject(ctx context.Context, bucket, key string) error {
	name, err := b.objectName(ctx, bucket, key)
	if errors.Is(err, blockmap.ErrKeyTooLong) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := b.S.Delete(ctx, name); err != nil && !objstore.IsNotExist(err) {
		return err
	}
	return nil
}

// CopyObject makes dst a copy of src: a new record naming the same maps.
// With meta nil it keeps src's content type and metadata.
func (b *Store) CopyObject(ctx context.Context, srcBucket, srcKey, dstBucket, dstKey string, meta *PutOptions) (*Object, error) {
	name, err := b.objectName(ctx, dstBucket, dstKey)
	if err != nil {
		return nil, err
	}
	var obj *Object
	// A collection that ran while this stalled past its hold may have
	// deleted the source's maps (the source deleted meanwhile): then the
	// copy goes.
	err = b.heldUndo(ctx, func() (func(context.Context) bool, error) {
		src, err := b.GetObject(ctx, srcBucket, srcKey)
		if err != nil {
			return nil, err
		}
		c := *src
		c.Key, c.ModTime = dstKey, b.now()
		var o PutOptions
		if meta != nil {
			c.ContentType, c.Meta = meta.ContentType, meta.Meta
			o = *meta
		}
		obj = &c
		v, err := b.writeObjectVersion(ctx, dstBucket, name, obj, o)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) bool { b.S.DeleteVersion(ctx, name, v); return false }, nil
	})
	return obj, err
}

// Read writes n bytes of obj from off to w.
func (b *Store) Read(ctx context.Context, obj *Object, off, n int64, w io.Writer) error {
	if off < 0 || n < 0 || off+n > obj.Size {
		return fmt.Errorf("bucket: read of %d bytes at %d of an object of %d", n, off, obj.Size)
	}
	var buf []byte
	for _, p := range obj.Pieces {
		if n == 0 {
			break
		}
		if off >= p.Size {
			off -= p.Size
			continue
		}
		v, err := volume.Open(ctx, b.S, p.Map, volume.OpenOptions{Uncached: true})
		if err != nil {
			return fmt.Errorf("bucket: object %s: %w", obj.Key, err)
		}
		if buf == nil {
			// One buffer of the first piece's block size for every
			// piece: a chunk is cut to it, and ReadAt takes any range.
			pool := volume.BlockBufs(v.BlockSize())
			bp := pool.Get().(*[]byte)
			defer pool.Put(bp)
			buf = *bp
		}
		bs := int64(len(buf))
		for pos, end := p.Off+off, p.Off+min(p.Size, off+n); pos < end; {
			// Whole blocks where possible: one store read each.
			chunk := buf[:min(bs-pos%bs, end-pos)]
			if err := v.ReadAt(ctx, chunk, pos); err != nil {
				v.Close(ctx)
				return err
			}
			if _, err := w.Write(chunk); err != nil {
				v.Close(ctx)
				return err
			}
			pos += int64(len(chunk))
			n -= int64(len(chunk))
		}
		v.Close(ctx)
		off = 0
	}
	return nil
}

// Map returns the single map that holds obj's data, joining the maps of
// its pieces if it has several (without copying data: only when every
// piece but the last is block-aligned, else ErrNotAligned), for a
// volume to be cloned from it. The caller holds collections off while it
// uses the returned ID. A zero-byte object has no map (volume.ErrBadSize).
func (b *Store) Map(ctx context.Context, obj *Object) (blockmap.ID, error) {
	switch len(obj.Pieces) {
	case 0:
		return blockmap.ID{}, fmt.Errorf("%w: the object is empty", volume.ErrBadSize)
	case 1:
		if p := obj.Pieces[0]; p.Off == 0 {
			if h, _, err := volume.ReadHead(ctx, b.S, p.Map); err == nil && int64(h.Size) == p.Size {
				return p.Map, nil
			}
		}
	}
	var entries []blockmap.Entry
	var shift uint8
	for i, p := range obj.Pieces {
		h, _, err := volume.ReadHead(ctx, b.S, p.Map)
		if err != nil {
			return blockmap.ID{}, err
		}
		if i == 0 {
			shift = h.BlockShift
		}
		if h.BlockShift != shift || p.Off%h.BlockSize() != 0 || i < len(obj.Pieces)-1 && p.Size%h.BlockSize() != 0 {
			return blockmap.ID{}, ErrNotAligned
		}
		e, err := volume.LoadMap(ctx, b.S, h)
		if err != nil {
			return blockmap.ID{}, err
		}
		lo := p.Off / h.BlockSize()
		entries = append(entries, e[lo:lo+(p.Size+h.BlockSize()-1)/h.BlockSize()]...)
	}
	return volume.CreateImage(ctx, b.S, uint64(obj.Size), shift, entries)
}

// PutMap stores map id (a read-only map of content and zero blocks: an
// image or snapshot whose blocks are all content, see volume Seal and
// Hash) of size bytes as the object key. Its ETag is the map's ID with
// "-1" (not an MD5, which clients would check the data against). The
// caller holds collections off.
func (b *Store) PutMap(ctx context.Context, bucket, key string, id blockmap.ID, size int64, contentType string) (*Object, error) {
	name, err := b.objectName(ctx, bucket, key)
	if err != nil {
		return nil, err
	}
	obj := &Object{Key: key, Size: size, ETag: `"` + id.String() + `-1"`, ContentType: contentType,
		ModTime: b.now(), Pieces: []Piece{{Map: id, Size: size}}}
	return obj, b.writeObject(ctx, bucket, name, obj, PutOptions{})
}

func randomID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
