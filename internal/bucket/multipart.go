package bucket

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// Upload is a multipart upload's record.
type Upload struct {
	ID          string            `json:"-"`
	Key         string            `json:"key"`
	ContentType string            `json:"type,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	Created     time.Time         `json:"created"`
}

// Part is an uploaded part's record.
type Part struct {
	Number  int       `json:"-"`
	ETag    string    `json:"etag"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	Pieces  []Piece   `json:"pieces,omitempty"`
}

// CreateUpload starts a multipart upload of key and returns its ID.
func (b *Store) CreateUpload(ctx context.Context, bucket, key string, o PutOptions) (string, error) {
	if _, err := b.objectName(ctx, bucket, key); err != nil {
		return "", err
	}
	u := Upload{Key: key, ContentType: o.ContentType, Meta: o.Meta, Created: b.now()}
	rec, _ := json.Marshal(u)
	id := randomID()
	if _, err := b.S.Create(ctx, blockmap.UploadName(bucket, id), rec); err != nil {
		return "", err
	}
	// A DeleteBucket that ran meanwhile did not see this upload.
	if err := b.HeadBucket(ctx, bucket); err != nil {
		b.S.Delete(ctx, blockmap.UploadName(bucket, id))
		return "", err
	}
	return id, nil
}

func validUploadID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// GetUpload returns an upload's record.
func (b *Store) GetUpload(ctx context.Context, bucket, id string) (*Upload, error) {
	u, _, _, err := b.getUpload(ctx, bucket, id)
	return u, err
}

// getUpload returns an upload's record, its version and its bytes.
func (b *Store) getUpload(ctx context.Context, bucket, id string) (*Upload, objstore.Version, []byte, error) {
	if err := b.HeadBucket(ctx, bucket); err != nil {
		return nil, 0, nil, err
	}
	if !validUploadID(id) {
		return nil, 0, nil, ErrNoUpload
	}
	raw, ver, err := b.S.Get(ctx, blockmap.UploadName(bucket, id))
	if objstore.IsNotExist(err) {
		return nil, 0, nil, ErrNoUpload
	}
	if err != nil {
		return nil, 0, nil, err
	}
	var u Upload
	if err := json.Unmarshal(raw, &u); err != nil {
		return nil, 0, nil, fmt.Errorf("bucket: upload %s: %w", id, err)
	}
	u.ID = id
	return &u, ver, raw, nil
}

// UploadPart stores part n (1 to MaxParts) of an upload, replacing any
// part n stored before.
func (b *Store) UploadPart(ctx context.Context, bucket, id string, n int, r io.Reader, size int64, contentMD5 []byte) (*Part, error) {
	if n < 1 || n > MaxParts {
		return nil, fmt.Errorf("%w: part number %d is not within 1..%d", ErrBadPart, n, MaxParts)
	}
	if _, err := b.GetUpload(ctx, bucket, id); err != nil {
		return nil, err
	}
	var p *Part
	// A collection that ran while this stalled past its hold may have
	// deleted the blocks and segments of the map the record names: then
	// the head and the record go (the head first: a record alone is
	// refused by CompleteUpload).
	err := b.heldUndo(ctx, func() (func(context.Context) bool, error) {
		st, err := b.store(ctx, r, size)
		if err != nil {
			return nil, err
		}
		if contentMD5 != nil && string(contentMD5) != string(st.sum) {
			return nil, ErrBadDigest
		}
		p = &Part{Number: n, ETag: `"` + hex.EncodeToString(st.sum) + `"`, ModTime: b.now(), Pieces: st.pieces()}
		for _, pc := range p.Pieces {
			p.Size += pc.Size
		}
		rec, _ := json.Marshal(p)
		// The map's head and the part record at once (the blocks and
		// segments are durable): a crash may leave either without the
		// other. A head alone names durable objects and nothing names
		// it (collected). A record alone names a map without a head:
		// a collection skips it (a root whose head is gone), ListParts
		// lists it, and CompleteUpload refuses it (ErrBadPart: the
		// client uploads the part again, as it does one whose
		// UploadPart was never answered). The part is answered only
		// once both are durable.
		pname := blockmap.PartName(bucket, id, n)
		var herr, perr error
		var pver objstore.Version
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			herr = b.writeHead(ctx, st)
		}()
		pver, perr = b.S.Put(ctx, pname, rec)
		wg.Wait()
		if perr != nil {
			return nil, perr
		}
		if herr != nil {
			// The record may have landed over one a retry of this part
			// made meanwhile (a client that gave up on this request):
			// make it whole, even if the request ended, rather than
			// leave the part naming a missing head. Only if that fails
			// too does the record go (its version: not a later one's).
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), headRetryTimeout)
			defer cancel()
			if err := b.writeHead(wctx, st); err != nil && !errors.Is(err, objstore.ErrExists) {
				b.S.DeleteVersion(wctx, pname, pver)
				return nil, herr
			}
			if herr = ctx.Err(); herr != nil {
				return nil, herr // whole, but its client went away
			}
		}
		// An abort or complete that ran meanwhile did not see this part.
		if _, err := b.GetUpload(ctx, bucket, id); err != nil {
			b.S.Delete(ctx, blockmap.PartName(bucket, id, n))
			return nil, err
		}
		return func(ctx context.Context) bool {
			if st.head == nil || b.keepWhole(ctx, st.head.ID) {
				return true
			}
			b.deleteHead(ctx, st)
			b.S.DeleteVersion(ctx, pname, pver)
			return false
		}, nil
	})
	return p, err
}

// headRetryTimeout bounds the second try of a part's head write, made
// after its request ended.
const headRetryTimeout = time.Minute

// ListParts returns an upload's parts, by number.
func (b *Store) ListParts(ctx context.Context, bucket, id string) ([]Part, error) {
	if _, err := b.GetUpload(ctx, bucket, id); err != nil {
		return nil, err
	}
	var nums []int
	err := b.S.List(ctx, blockmap.PartPrefix(bucket, id), func(in objstore.Info) error {
		if n := blockmap.ParseName(in.Name); n.Kind == blockmap.PartRecord {
			nums = append(nums, n.Part)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(nums)
	all := make([]Part, len(nums))
	err = each(ctx, len(nums), func(i int) error {
		raw, _, err := b.S.Get(ctx, blockmap.PartName(bucket, id, nums[i]))
		if objstore.IsNotExist(err) {
			return nil // Number stays 0: dropped below
		}
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &all[i]); err != nil {
			return fmt.Errorf("bucket: part %d of upload %s: %w", nums[i], id, err)
		}
		all[i].Number = nums[i]
		return nil
	})
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(p Part) bool { return p.Number == 0 }), nil
}

// recordWorkers bounds the records of one call read or deleted at once:
// an upload of the AWS CLI's 8 MiB parts has 2,048 records for 16 GiB,
// each a round trip (or an fsync) on the store.
const recordWorkers = 16

// each runs fn(0) to fn(n-1), recordWorkers at a time, and returns the
// first error.
func each(ctx context.Context, n int, fn func(i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(recordWorkers)
	for i := 0; i < n && gctx.Err() == nil; i++ {
		g.Go(func() error { return fn(i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err() // the loop may have stopped early
}

// ListUploads returns the uploads in progress in bucket, by key and then
// ID (the order of ListMultipartUploads' key and upload ID markers). It
// reads every upload record of the bucket (see the package doc).
func (b *Store) ListUploads(ctx context.Context, bucket string) ([]Upload, error) {
	if err := b.HeadBucket(ctx, bucket); err != nil {
		return nil, err
	}
	var ids []string
	err := b.S.List(ctx, blockmap.UploadPrefix(bucket), func(in objstore.Info) error {
		if n := blockmap.ParseName(in.Name); n.Kind == blockmap.UploadRecord {
			ids = append(ids, n.Upload)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var ups []Upload
	for _, id := range ids {
		u, err := b.GetUpload(ctx, bucket, id)
		if errors.Is(err, ErrNoUpload) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ups = append(ups, *u)
	}
	slices.SortFunc(ups, func(x, y Upload) int {
		if c := strings.Compare(x.Key, y.Key); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	})
	return ups, nil
}

// CompletePart names a part in CompleteUpload.
type CompletePart struct {
	Number int
	ETag   string
}

// CompleteUpload makes the listed parts, in order, the object of the
// upload's key: its record names the parts' maps (no data is copied), and
// its ETag is S3's: the MD5 of the parts' MD5s, a dash, and their count.
// The upload's records are then deleted, with the parts not listed; a
// part record whose delete fails is left behind (no root: its maps are
// collected, and the record too once past the grace period, see Scan)
// and the complete still succeeds, the object being written.
//
// The upload record is deleted (at the version read) before the object
// is written: of a complete and an abort (or another complete) of one
// upload, one wins and the other gets ErrNoUpload.
func (b *Store) CompleteUpload(ctx context.Context, bucket, id string, list []CompletePart) (*Object, error) {
	u, ver, raw, err := b.getUpload(ctx, bucket, id)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: no parts listed", ErrBadPart)
	}
	name, err := blockmap.ObjectName(bucket, u.Key)
	if err != nil {
		return nil, err
	}
	var obj *Object
	// A collection that ran while this stalled past its hold, once the
	// upload was claimed (its part records no roots), may have deleted
	// the parts' maps: then the object goes, and the upload with it.
	err = b.heldUndo(ctx, func() (func(context.Context) bool, error) {
		parts, err := b.ListParts(ctx, bucket, id)
		if err != nil {
			return nil, err
		}
		byNum := map[int]Part{}
		for _, p := range parts {
			byNum[p.Number] = p
		}
		minPart := b.MinPart
		if minPart == 0 {
			minPart = MinPartSize
		}
		sums := md5.New()
		obj = &Object{Key: u.Key, ContentType: u.ContentType, Meta: u.Meta, ModTime: b.now()}
		for i, c := range list {
			if i > 0 && c.Number <= list[i-1].Number {
				return nil, ErrPartOrder
			}
		}
		for i, c := range list {
			p, ok := byNum[c.Number]
			if !ok || strings.Trim(c.ETag, `"`) != strings.Trim(p.ETag, `"`) {
				return nil, fmt.Errorf("%w: part %d", ErrBadPart, c.Number)
			}
			if i < len(list)-1 && p.Size < minPart {
				return nil, fmt.Errorf("%w: part %d has %d bytes", ErrPartTooSmall, c.Number, p.Size)
			}
			raw, _ := hex.DecodeString(strings.Trim(p.ETag, `"`))
			sums.Write(raw)
			obj.Pieces = append(obj.Pieces, p.Pieces...)
			obj.Parts = append(obj.Parts, p.Size)
			obj.Size += p.Size
		}
		if err := b.checkMaps(ctx, list, byNum); err != nil {
			return nil, err
		}
		obj.ETag = fmt.Sprintf(`"%s-%d"`, hex.EncodeToString(sums.Sum(nil)), len(list))
		uname := blockmap.UploadName(bucket, id)
		if err := b.S.DeleteVersion(ctx, uname, ver); err != nil {
			if objstore.IsNotExist(err) || errors.Is(err, objstore.ErrConflict) {
				return nil, ErrNoUpload
			}
			return nil, err
		}
		// Claimed: finish even if the client goes away, else the upload
		// would be lost.
		ctx := context.WithoutCancel(ctx)
		v, err := b.writeObjectVersion(ctx, bucket, name, obj, PutOptions{})
		if err != nil {
			if !errors.Is(err, ErrNoBucket) {
				b.S.Create(ctx, uname, raw) // the upload again, for a retry
			}
			return nil, err
		}
		// Completed: a part record left behind (a delete failed) is no
		// GC root, its upload record being gone, so it holds no data;
		// failing the request now would tell the client that an upload
		// it can no longer retry failed.
		b.dropParts(ctx, bucket, id)
		return func(ctx context.Context) bool { b.S.DeleteVersion(ctx, name, v); return false }, nil
	})
	return obj, err
}

// checkMaps returns ErrBadPart unless the head of every map the listed
// parts name exists: UploadPart writes a part's record and its map's head
// at once, so a crash may have left the record alone. A head exists only
// once its segments and blocks are durable (see store), so a head is
// all there is to check. It reads recordWorkers heads' names at a time.
func (b *Store) checkMaps(ctx context.Context, list []CompletePart, byNum map[int]Part) error {
	type ref struct {
		part int
		id   blockmap.ID
	}
	var refs []ref
	seen := map[blockmap.ID]bool{}
	for _, c := range list {
		for _, pc := range byNum[c.Number].Pieces {
			if !seen[pc.Map] {
				seen[pc.Map] = true
				refs = append(refs, ref{c.Number, pc.Map})
			}
		}
	}
	return each(ctx, len(refs), func(i int) error {
		_, err := b.S.Stat(ctx, blockmap.HeadName(refs[i].id))
		if objstore.IsNotExist(err) {
			return fmt.Errorf("%w: part %d: its data was not stored whole (its upload was cut): upload it again", ErrBadPart, refs[i].part)
		}
		return err
	})
}

// AbortUpload deletes an upload and its parts. Once the upload record is
// gone it deletes every part record it can, even if ctx ends, and
// returns what failed.
func (b *Store) AbortUpload(ctx context.Context, bucket, id string) error {
	if _, err := b.GetUpload(ctx, bucket, id); err != nil {
		return err
	}
	// The upload record first, so that no part is added after; whoever
	// deletes it (an abort, a complete) owns the parts.
	err := b.S.Delete(ctx, blockmap.UploadName(bucket, id))
	if objstore.IsNotExist(err) {
		return ErrNoUpload
	}
	if err != nil {
		return err
	}
	// Claimed: finish even if the client goes away, else the part
	// records would be left with nothing to delete them.
	return b.dropParts(context.WithoutCancel(ctx), bucket, id)
}

// dropParts deletes the part records of an upload whose record is gone.
// A delete that fails does not stop the others: it returns every
// failure.
func (b *Store) dropParts(ctx context.Context, bucket, id string) error {
	var names []string
	err := b.S.List(ctx, blockmap.PartPrefix(bucket, id), func(in objstore.Info) error {
		names = append(names, in.Name)
		return nil
	})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var errs []error
	err = each(ctx, len(names), func(i int) error {
		if err := b.S.Delete(ctx, names[i]); err != nil && !objstore.IsNotExist(err) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}

// CopyPart makes part n of an upload the bytes [off, off+n) of an object
// (UploadPartCopy; n < 0: to its end): a record naming the same maps, no
// data copied. Its ETag is the MD5 of the pieces it names, not of the
// data (which is not read).
func (b *Store) CopyPart(ctx context.Context, bucket, id string, num int, srcBucket, srcKey string, off, n int64) (*Part, error) {
	if num < 1 || num > MaxParts {
		return nil, fmt.Errorf("%w: part number %d is not within 1..%d", ErrBadPart, num, MaxParts)
	}
	if _, err := b.GetUpload(ctx, bucket, id); err != nil {
		return nil, err
	}
	var p *Part
	// As CopyObject: the record goes if the hold was lost.
	err := b.heldUndo(ctx, func() (func(context.Context) bool, error) {
		src, err := b.GetObject(ctx, srcBucket, srcKey)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			n = src.Size - off
		}
		if off < 0 || n < 0 || off+n > src.Size {
			return nil, fmt.Errorf("%w: bytes %d-%d of an object of %d", ErrBadRange, off, off+n-1, src.Size)
		}
		pieces := slice(src.Pieces, off, n)
		raw, _ := json.Marshal(pieces)
		sum := md5.Sum(raw)
		p = &Part{Number: num, ETag: `"` + hex.EncodeToString(sum[:]) + `"`, Size: n, ModTime: b.now(), Pieces: pieces}
		rec, _ := json.Marshal(p)
		pname := blockmap.PartName(bucket, id, num)
		v, err := b.S.Put(ctx, pname, rec)
		if err != nil {
			return nil, err
		}
		if _, err := b.GetUpload(ctx, bucket, id); err != nil {
			b.S.Delete(ctx, pname)
			return nil, err
		}
		return func(ctx context.Context) bool { b.S.DeleteVersion(ctx, pname, v); return false }, nil
	})
	return p, err
}
