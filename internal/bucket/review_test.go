package bucket_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/objstore"
)

// hookStore runs a hook (once) before the first Put, Create or Delete of
// a name with the given prefix: a deterministic interleaving.
type hookStore struct {
	objstore.Store
	prefix string
	op     string
	hook   func()
}

func (h *hookStore) fire(op, name string) {
	if h.hook != nil && op == h.op && strings.HasPrefix(name, h.prefix) {
		f := h.hook
		h.hook = nil
		f()
	}
}

// Put and Create fail once ctx is done, as the real stores do.
func (h *hookStore) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	h.fire("put", name)
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return h.Store.Put(ctx, name, data)
}

func (h *hookStore) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	h.fire("create", name)
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return h.Store.Create(ctx, name, data)
}

func (h *hookStore) Delete(ctx context.Context, name string) error {
	h.fire("delete", name)
	return h.Store.Delete(ctx, name)
}

func (h *hookStore) DeleteVersion(ctx context.Context, name string, v objstore.Version) error {
	h.fire("delete", name)
	return h.Store.DeleteVersion(ctx, name, v)
}

func hooked(t *testing.T) (*bucket.Store, *hookStore) {
	hs := &hookStore{Store: objstore.NewMem()}
	b := &bucket.Store{S: hs, BlockShift: 16, MinPart: bs}
	if err := b.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	return b, hs
}

// TestAbortRacingComplete: of an abort and a complete of one upload that
// run at once, exactly one succeeds, and the object exists if and only if
// the complete did. Both orders of the race are run.
func TestAbortRacingComplete(t *testing.T) {
	for _, abortFirst := range []bool{false, true} {
		b, hs := hooked(t)
		id, _ := b.CreateUpload(ctx, "bkt", "k", bucket.PutOptions{})
		p, err := b.UploadPart(ctx, "bkt", id, 1, bytes.NewReader(data(1, 1000)), -1, nil)
		if err != nil {
			t.Fatal(err)
		}
		var abortErr, completeErr error
		complete := func() {
			_, completeErr = b.CompleteUpload(ctx, "bkt", id, []bucket.CompletePart{{Number: 1, ETag: p.ETag}})
		}
		abort := func() { abortErr = b.AbortUpload(ctx, "bkt", id) }
		if abortFirst {
			// The complete runs just before the abort deletes the upload.
			hs.prefix, hs.op, hs.hook = blockmap.UploadName("bkt", id), "delete", complete
			abort()
		} else {
			// The abort runs just before the complete writes the object.
			hs.prefix, hs.op, hs.hook = blockmap.ObjectPrefix("bkt"), "put", abort
			complete()
		}
		_, getErr := b.GetObject(ctx, "bkt", "k")
		if (abortErr == nil) == (completeErr == nil) || (completeErr == nil) != (getErr == nil) {
			t.Errorf("abort first %v: abort %v, complete %v, object %v", abortFirst, abortErr, completeErr, getErr)
		}
		if abortErr != nil && !errors.Is(abortErr, bucket.ErrNoUpload) || completeErr != nil && !errors.Is(completeErr, bucket.ErrNoUpload) {
			t.Errorf("abort first %v: the loser's error: abort %v, complete %v", abortFirst, abortErr, completeErr)
		}
	}
}

// TestCreateUploadRacingDeleteBucket: an upload created while its bucket
// is deleted does not survive as a record of the deleted bucket (which a
// bucket of the same name would list).
func TestCreateUploadRacingDeleteBucket(t *testing.T) {
	b, hs := hooked(t)
	var delErr error
	hs.prefix, hs.op, hs.hook = blockmap.UploadPrefix("bkt"), "create", func() { delErr = b.DeleteBucket(ctx, "bkt") }
	_, err := b.CreateUpload(ctx, "bkt", "k", bucket.PutOptions{})
	if delErr == nil && err == nil {
		t.Error("the bucket was deleted and the upload created")
	}
	b.CreateBucket(ctx, "bkt")
	if ups, _ := b.ListUploads(ctx, "bkt"); len(ups) != 0 {
		t.Errorf("a new bucket of the name lists %d uploads", len(ups))
	}
}

// TestReadDuringOverwrite: a read of an object overwritten while it reads
// returns the version it started with, whole.
func TestReadDuringOverwrite(t *testing.T) {
	b, _ := newStore(t)
	old, neu := data(1, 5*bs+17), data(2, 5*bs+17)
	b.PutObject(ctx, "bkt", "k", bytes.NewReader(old), -1, bucket.PutOptions{})
	o, err := b.GetObject(ctx, "bkt", "k")
	if err != nil {
		t.Fatal(err)
	}
	w := &overwriter{fn: func() {
		if _, err := b.PutObject(ctx, "bkt", "k", bytes.NewReader(neu), -1, bucket.PutOptions{}); err != nil {
			t.Error(err)
		}
	}}
	if err := b.Read(ctx, o, 0, o.Size, w); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.buf.Bytes(), old) {
		t.Fatal("a read during an overwrite mixed versions")
	}
	if !bytes.Equal(read(t, b, "k", 0, -1), neu) {
		t.Fatal("the overwrite is not visible")
	}
}

// overwriter runs fn after the first write.
type overwriter struct {
	buf bytes.Buffer
	fn  func()
}

func (w *overwriter) Write(p []byte) (int, error) {
	if w.buf.Len() == 0 {
		defer w.fn()
	}
	return w.buf.Write(p)
}

// TestDeleteBucketNotEmpty: a bucket with an object, or with only an
// upload in progress, is not deleted.
func TestDeleteBucketNotEmpty(t *testing.T) {
	b, _ := newStore(t)
	b.PutObject(ctx, "bkt", "k", strings.NewReader("x"), -1, bucket.PutOptions{})
	if err := b.DeleteBucket(ctx, "bkt"); !errors.Is(err, bucket.ErrBucketNotEmpty) {
		t.Fatalf("with an object: %v", err)
	}
	b.DeleteObject(ctx, "bkt", "k")
	id, _ := b.CreateUpload(ctx, "bkt", "u", bucket.PutOptions{})
	if err := b.DeleteBucket(ctx, "bkt"); !errors.Is(err, bucket.ErrBucketNotEmpty) {
		t.Fatalf("with an upload: %v", err)
	}
	b.AbortUpload(ctx, "bkt", id)
	if err := b.DeleteBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
}

// memStore measures the heap in use at the first and the last name a
// List delivers: what the listing retains as it reads names.
type memStore struct {
	objstore.Store
	first, last uint64
}

func heapNow() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func (m *memStore) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	var names []objstore.Info
	if err := m.Store.List(ctx, prefix, func(in objstore.Info) error { names = append(names, in); return nil }); err != nil {
		return err
	}
	for i, in := range names {
		if i == 0 {
			m.first = heapNow()
		}
		if i == len(names)-1 {
			m.last = heapNow()
		}
		if err := fn(in); err != nil {
			return err
		}
	}
	return nil
}

// TestListMemoryBounded: a listing page retains O(page) memory as it
// reads the names of a large bucket, not O(bucket); and its pages walk
// the bucket in order.
func TestListMemoryBounded(t *testing.T) {
	ms := &memStore{Store: objstore.NewMem()}
	b := &bucket.Store{S: ms, BlockShift: 16}
	b.CreateBucket(ctx, "big")
	const n = 100000
	rec, _ := json.Marshal(bucket.Object{Size: 1})
	for i := 0; i < n; i++ {
		name, _ := blockmap.ObjectName("big", fmt.Sprintf("dir%d/object-%07d", i%3, i))
		ms.Store.Put(ctx, name, rec)
	}
	pg, err := b.List(ctx, "big", bucket.ListOptions{Max: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(pg.Objects) != 10 || !pg.Truncated || pg.Next != "dir0/object-0000027" {
		t.Fatalf("page: %d objects, truncated %v, next %q", len(pg.Objects), pg.Truncated, pg.Next)
	}
	if grew := int64(ms.last) - int64(ms.first); grew > 1<<20 {
		t.Errorf("a page of 10 retained %d bytes while reading %d names", grew, n)
	}
	pg, _ = b.List(ctx, "big", bucket.ListOptions{Max: 2, Delimiter: "/", After: "dir0/"})
	if !slices.Equal(pg.Prefixes, []string{"dir1/", "dir2/"}) || pg.Truncated {
		t.Errorf("prefixes after dir0/: %v truncated %v", pg.Prefixes, pg.Truncated)
	}
}

// TestCompleteCanceledAfterClaim: a complete whose client goes away once
// it has claimed the upload still makes the object (else the upload,
// already gone, would be lost with its parts).
func TestCompleteCanceledAfterClaim(t *testing.T) {
	b, hs := hooked(t)
	id, _ := b.CreateUpload(ctx, "bkt", "k", bucket.PutOptions{})
	p, err := b.UploadPart(ctx, "bkt", id, 1, bytes.NewReader(data(1, 1000)), -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hs.prefix, hs.op, hs.hook = blockmap.UploadName("bkt", id), "delete", cancel
	_, err = b.CompleteUpload(cctx, "bkt", id, []bucket.CompletePart{{Number: 1, ETag: p.ETag}})
	_, getErr := b.GetObject(ctx, "bkt", "k")
	_, upErr := b.GetUpload(ctx, "bkt", id)
	if getErr != nil && upErr != nil {
		t.Fatalf("complete %v: neither the object (%v) nor the upload (%v) is left", err, getErr, upErr)
	}
	if getErr == nil && !bytes.Equal(read(t, b, "k", 0, -1), data(1, 1000)) {
		t.Fatal("the object differs")
	}
}
