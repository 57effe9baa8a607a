package bucket_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/objstore"
)

var ctx = context.Background()

const bs = 1 << 16

func newStore(t *testing.T) (*bucket.Store, *objstore.Mem) {
	s := objstore.NewMem()
	b := &bucket.Store{S: s, BlockShift: 16, MinPart: bs}
	if err := b.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	return b, s
}

func data(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

func read(t *testing.T, b *bucket.Store, key string, off, n int64) []byte {
	t.Helper()
	o, err := b.GetObject(ctx, "bkt", key)
	if err != nil {
		t.Fatal(err)
	}
	if n < 0 {
		n = o.Size - off
	}
	var w bytes.Buffer
	if err := b.Read(ctx, o, off, n, &w); err != nil {
		t.Fatal(err)
	}
	return w.Bytes()
}

func contentObjects(s objstore.Store) int {
	n := 0
	s.List(ctx, blockmap.ContentPrefix, func(objstore.Info) error { n++; return nil })
	return n
}

func TestPutGetRangeDedup(t *testing.T) {
	b, s := newStore(t)
	p := data(1, 3*bs+17)
	o, err := b.PutObject(ctx, "bkt", "a/b.img", bytes.NewReader(p), int64(len(p)), bucket.PutOptions{ContentType: "x/y", Meta: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if o.Size != int64(len(p)) || o.ETag == "" {
		t.Fatalf("object %+v", o)
	}
	if !bytes.Equal(read(t, b, "a/b.img", 0, -1), p) {
		t.Fatal("whole read differs")
	}
	if !bytes.Equal(read(t, b, "a/b.img", bs-5, bs+10), p[bs-5:2*bs+5]) {
		t.Fatal("range read differs")
	}
	blocks := contentObjects(s)
	if _, err := b.PutObject(ctx, "bkt", "again", bytes.NewReader(p), -1, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if contentObjects(s) != blocks {
		t.Fatalf("the same data again stored new blocks: %d then %d", blocks, contentObjects(s))
	}
	if _, err := b.PutObject(ctx, "bkt", "empty", bytes.NewReader(nil), 0, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, b, "empty", 0, -1); len(got) != 0 {
		t.Fatal("empty object reads bytes")
	}
	if _, err := b.PutObject(ctx, "nobkt", "k", bytes.NewReader(p), -1, bucket.PutOptions{}); !errors.Is(err, bucket.ErrNoBucket) {
		t.Fatalf("put in no bucket: %v", err)
	}
}

// A body that ends early (a client that disconnects) stores nothing
// visible: the key keeps its old object.
func TestTruncatedUploadInvisible(t *testing.T) {
	b, _ := newStore(t)
	old := data(2, bs)
	b.PutObject(ctx, "bkt", "k", bytes.NewReader(old), -1, bucket.PutOptions{})
	p := data(3, 2*bs)
	_, err := b.PutObject(ctx, "bkt", "k", bytes.NewReader(p[:bs+3]), int64(len(p)), bucket.PutOptions{})
	if !errors.Is(err, bucket.ErrIncomplete) {
		t.Fatalf("truncated body: %v, want ErrIncomplete", err)
	}
	broken := io.MultiReader(bytes.NewReader(p[:bs]), iotestErr{})
	if _, err := b.PutObject(ctx, "bkt", "k", broken, -1, bucket.PutOptions{}); err == nil {
		t.Fatal("a failing body stored an object")
	}
	// An HTTP body cut short by a disconnect fails with
	// io.ErrUnexpectedEOF, which must not pass for the data's end.
	cut := io.MultiReader(bytes.NewReader(p[:bs+5]), errReader{io.ErrUnexpectedEOF})
	if _, err := b.PutObject(ctx, "bkt", "k", cut, int64(len(p)), bucket.PutOptions{}); !errors.Is(err, bucket.ErrIncomplete) {
		t.Fatalf("a body cut short: %v, want ErrIncomplete", err)
	}
	if !bytes.Equal(read(t, b, "k", 0, -1), old) {
		t.Fatal("a failed upload changed the object")
	}
	if _, err := b.PutObject(ctx, "bkt", "k2", bytes.NewReader(p), -1, bucket.PutOptions{ContentMD5: []byte("0123456789abcdef")}); !errors.Is(err, bucket.ErrBadDigest) {
		t.Fatalf("bad digest: %v", err)
	}
	if _, err := b.GetObject(ctx, "bkt", "k2"); !errors.Is(err, bucket.ErrNoKey) {
		t.Fatalf("object of a bad digest: %v", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// Parts that are not block-aligned concatenate without copying: the
// object is read back exactly, and no content block is stored twice.
func TestMultipartUnaligned(t *testing.T) {
	b, s := newStore(t)
	up, err := b.CreateUpload(ctx, "bkt", "mp", bucket.PutOptions{ContentType: "a/b"})
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{2*bs + 123, 3 * bs, bs + 1}
	var whole []byte
	var list []bucket.CompletePart
	for i, n := range sizes {
		p := data(uint64(10+i), n)
		whole = append(whole, p...)
		part, err := b.UploadPart(ctx, "bkt", up, i+1, bytes.NewReader(p), int64(n), nil)
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, bucket.CompletePart{Number: i + 1, ETag: part.ETag})
	}
	ups, _ := b.ListUploads(ctx, "bkt")
	if len(ups) != 1 || ups[0].ID != up || ups[0].Key != "mp" {
		t.Fatalf("uploads %+v", ups)
	}
	if _, err := b.CompleteUpload(ctx, "bkt", up, []bucket.CompletePart{list[1], list[0]}); !errors.Is(err, bucket.ErrPartOrder) {
		t.Fatalf("parts out of order: %v", err)
	}
	bad := append([]bucket.CompletePart{}, list...)
	bad[0].ETag = `"00"`
	if _, err := b.CompleteUpload(ctx, "bkt", up, bad); !errors.Is(err, bucket.ErrBadPart) {
		t.Fatalf("wrong etag: %v", err)
	}
	blocks := contentObjects(s)
	o, err := b.CompleteUpload(ctx, "bkt", up, list)
	if err != nil {
		t.Fatal(err)
	}
	if contentObjects(s) != blocks || len(o.Pieces) != 3 || o.ETag[len(o.ETag)-3:] != `-3"` {
		t.Fatalf("complete: %d blocks then %d, object %+v", blocks, contentObjects(s), o)
	}
	if !bytes.Equal(read(t, b, "mp", 0, -1), whole) {
		t.Fatal("multipart object differs")
	}
	off := int64(2*bs + 100)
	if !bytes.Equal(read(t, b, "mp", off, 3*bs), whole[off:off+3*bs]) {
		t.Fatal("range across parts differs")
	}
	if _, err := b.Map(ctx, o); !errors.Is(err, bucket.ErrNotAligned) {
		t.Fatalf("Map of unaligned parts: %v", err)
	}
	if _, err := b.ListParts(ctx, "bkt", up); !errors.Is(err, bucket.ErrNoUpload) {
		t.Fatalf("parts after complete: %v", err)
	}
}

func TestCopyListDelete(t *testing.T) {
	b, s := newStore(t)
	for i, k := range []string{"a", "d/1", "d/2", "d/e/3", "z"} {
		if _, err := b.PutObject(ctx, "bkt", k, bytes.NewReader(data(uint64(i), 100)), -1, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	blocks := contentObjects(s)
	c, err := b.CopyObject(ctx, "bkt", "a", "bkt", "d/copy", nil)
	if err != nil {
		t.Fatal(err)
	}
	if contentObjects(s) != blocks || !bytes.Equal(read(t, b, "d/copy", 0, -1), read(t, b, "a", 0, -1)) || c.ETag == "" {
		t.Fatal("copy")
	}
	pg, err := b.List(ctx, "bkt", bucket.ListOptions{Delimiter: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keys(pg), pg.Prefixes) != "[a z] [d/]" {
		t.Fatalf("list / : %v %v", keys(pg), pg.Prefixes)
	}
	pg, _ = b.List(ctx, "bkt", bucket.ListOptions{Prefix: "d/", Delimiter: "/"})
	if fmt.Sprint(keys(pg), pg.Prefixes) != "[d/1 d/2 d/copy] [d/e/]" {
		t.Fatalf("list d/ : %v %v", keys(pg), pg.Prefixes)
	}
	var all []string
	for after := ""; ; {
		pg, _ := b.List(ctx, "bkt", bucket.ListOptions{Max: 2, After: after})
		all = append(all, keys(pg)...)
		if !pg.Truncated {
			break
		}
		after = pg.Next
	}
	if fmt.Sprint(all) != "[a d/1 d/2 d/copy d/e/3 z]" {
		t.Fatalf("paged: %v", all)
	}
	if err := b.DeleteBucket(ctx, "bkt"); !errors.Is(err, bucket.ErrBucketNotEmpty) {
		t.Fatalf("delete non-empty bucket: %v", err)
	}
	for _, k := range all {
		if err := b.DeleteObject(ctx, "bkt", k); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.DeleteBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"ab", "Abc", "a..b", "-ab", "192.168.1.1", "a_b"} {
		if err := b.CreateBucket(ctx, bad); !errors.Is(err, bucket.ErrBadBucketName) {
			t.Errorf("bucket %q: %v", bad, err)
		}
	}
}

func keys(pg *bucket.ListPage) []string {
	var k []string
	for _, o := range pg.Objects {
		k = append(k, o.Key)
	}
	return k
}

// overlapStore records how many Gets and Deletes of names with a prefix
// run at once. The first of each waits (up to a minute) for a second to
// start: code that issues them one at a time fails at once afterwards,
// and code that overlaps them passes without depending on timing.
type overlapStore struct {
	objstore.Store
	prefix string
	mu     sync.Mutex
	cur    map[string]int
	most   map[string]int
	waited map[string]bool
}

func (o *overlapStore) track(op, name string) func() {
	if !strings.HasPrefix(name, o.prefix) {
		return func() {}
	}
	o.mu.Lock()
	o.cur[op]++
	o.most[op] = max(o.most[op], o.cur[op])
	wait := !o.waited[op]
	o.waited[op] = true
	o.mu.Unlock()
	for deadline := time.Now().Add(time.Minute); wait && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		o.mu.Lock()
		two := o.most[op] >= 2
		o.mu.Unlock()
		if two {
			break
		}
	}
	return func() { o.mu.Lock(); o.cur[op]--; o.mu.Unlock() }
}

func (o *overlapStore) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	defer o.track("get", name)()
	return o.Store.Get(ctx, name)
}

func (o *overlapStore) Delete(ctx context.Context, name string) error {
	defer o.track("delete", name)()
	return o.Store.Delete(ctx, name)
}

// TestCompleteOverlapsPartRecords: completing an upload reads and then
// deletes its part records several at a time, not one after another:
// on a store where each costs a round trip (or an fsync), completing the
// AWS CLI's 2,048 parts of a 16 GiB file one at a time takes seconds.
func TestCompleteOverlapsPartRecords(t *testing.T) {
	b, _ := newStore(t)
	up, err := b.CreateUpload(ctx, "bkt", "k", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var list []bucket.CompletePart
	for n := 1; n <= 32; n++ {
		p, err := b.UploadPart(ctx, "bkt", up, n, bytes.NewReader(data(uint64(n), bs)), bs, nil)
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, bucket.CompletePart{Number: n, ETag: p.ETag})
	}
	o := &overlapStore{Store: b.S, prefix: blockmap.PartPrefix("bkt", up), cur: map[string]int{}, most: map[string]int{}, waited: map[string]bool{}}
	b.S = o
	obj, err := b.CompleteUpload(ctx, "bkt", up, list)
	if err != nil {
		t.Fatal(err)
	}
	if obj.Size != 32*bs || len(obj.Pieces) != 32 {
		t.Fatalf("completed %d bytes in %d pieces", obj.Size, len(obj.Pieces))
	}
	if o.most["get"] < 2 || o.most["delete"] < 2 {
		t.Fatalf("part records read %d at a time and deleted %d at a time, want several", o.most["get"], o.most["delete"])
	}
	left := 0
	o.List(ctx, blockmap.PartPrefix("bkt", up), func(objstore.Info) error { left++; return nil })
	if left != 0 {
		t.Fatalf("%d part records left", left)
	}
}
