package bucket_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/objstore"
)

// upload32 starts an upload of key with 32 parts and returns its ID and
// the list that completes it.
func upload32(t *testing.T, b *bucket.Store, key string) (string, []bucket.CompletePart) {
	t.Helper()
	up, err := b.CreateUpload(ctx, "bkt", key, bucket.PutOptions{})
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
	return up, list
}

func partsLeft(t *testing.T, s objstore.Store, up string) int {
	t.Helper()
	left := 0
	if err := s.List(ctx, blockmap.PartPrefix("bkt", up), func(objstore.Info) error { left++; return nil }); err != nil {
		t.Fatal(err)
	}
	return left
}

// TestAbortFinishesAfterClientGone: an abort whose client goes away
// once the upload record is deleted still deletes every part record:
// nothing else ever would (a retry finds no upload).
func TestAbortFinishesAfterClientGone(t *testing.T) {
	b, s := newStore(t)
	up, _ := upload32(t, b, "k")
	f := objstore.NewFaulty(s)
	b.S = f
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.Add(objstore.Rule{Op: objstore.OpDelete, Prefix: blockmap.PartPrefix("bkt", up), Count: 1,
		Hook: func(context.Context, objstore.Op, string) { cancel() }})
	err := b.AbortUpload(cctx, "bkt", up)
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if _, err := b.GetUpload(ctx, "bkt", up); !errors.Is(err, bucket.ErrNoUpload) {
		t.Fatalf("upload after the abort: %v", err)
	}
	if n := partsLeft(t, s, up); n != 0 {
		t.Fatalf("%d part records left after the abort (err %v)", n, err)
	}
}

// TestCompleteReadFailsMidway: a part record that cannot be read
// fails the complete with the store's error and changes nothing: a
// retry completes the upload.
func TestCompleteReadFailsMidway(t *testing.T) {
	b, s := newStore(t)
	up, list := upload32(t, b, "k")
	f := objstore.NewFaulty(s)
	b.S = f
	boom := errors.New("injected")
	f.Add(objstore.Rule{Op: objstore.OpGet, Prefix: blockmap.PartPrefix("bkt", up), Skip: 20, Count: 1, Err: boom})
	if _, err := b.CompleteUpload(ctx, "bkt", up, list); !errors.Is(err, boom) {
		t.Fatalf("complete with a part record unreadable: %v", err)
	}
	if _, err := b.GetObject(ctx, "bkt", "k"); !errors.Is(err, bucket.ErrNoKey) {
		t.Fatalf("object after a failed complete: %v", err)
	}
	obj, err := b.CompleteUpload(ctx, "bkt", up, list)
	if err != nil {
		t.Fatal(err)
	}
	if obj.Size != 32*bs || partsLeft(t, s, up) != 0 {
		t.Fatalf("retry completed %d bytes, %d part records left", obj.Size, partsLeft(t, s, up))
	}
}

// TestCompleteDeleteFailsMidway: once the object is written the upload
// is complete, whatever happens to the cleanup of its part records: a
// complete that reports a failure then (a client retries and gets
// NoSuchUpload, and takes its upload for failed) must not have written
// the object. A failed delete does not keep the others from running.
func TestCompleteDeleteFailsMidway(t *testing.T) {
	b, s := newStore(t)
	up, list := upload32(t, b, "k")
	f := objstore.NewFaulty(s)
	b.S = f
	f.Add(objstore.Rule{Op: objstore.OpDelete, Prefix: blockmap.PartPrefix("bkt", up), Count: 1, Err: errors.New("injected")})
	obj, err := b.CompleteUpload(ctx, "bkt", up, list)
	got, gerr := b.GetObject(ctx, "bkt", "k")
	if err != nil && gerr == nil {
		t.Fatalf("complete failed (%v) but wrote the object", err)
	}
	if err == nil && (gerr != nil || got.ETag != obj.ETag) {
		t.Fatalf("complete succeeded but the object reads %v", gerr)
	}
	if n := partsLeft(t, s, up); n > 1 {
		t.Errorf("%d part records left after one delete failed", n)
	}
}

// TestCompleteRaces: a complete racing an abort of the same upload, or
// an UploadPart of a part it lists: exactly one of complete and abort
// wins; the object, if written, is what the list names; no part record
// is left once both are done.
func TestCompleteRaces(t *testing.T) {
	b, s := newStore(t)
	for i := range 8 {
		up, list := upload32(t, b, "k")
		done := make(chan error, 1)
		var cerr error
		var obj *bucket.Object
		if i%2 == 0 {
			go func() { done <- b.AbortUpload(ctx, "bkt", up) }()
			obj, cerr = b.CompleteUpload(ctx, "bkt", up, list)
			aerr := <-done
			if (cerr == nil) == (aerr == nil) {
				t.Fatalf("complete %v, abort %v: want one to win", cerr, aerr)
			}
		} else {
			go func() {
				_, err := b.UploadPart(ctx, "bkt", up, 7, bytes.NewReader(data(99, bs)), bs, nil)
				if err != nil && !errors.Is(err, bucket.ErrNoUpload) {
					done <- err
				}
				done <- nil
			}()
			obj, cerr = b.CompleteUpload(ctx, "bkt", up, list)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if cerr != nil && !errors.Is(cerr, bucket.ErrBadPart) {
				t.Fatal(cerr)
			}
		}
		if cerr == nil {
			if got := read(t, b, "k", 6*bs, bs); !bytes.Equal(got, data(7, bs)) {
				t.Fatalf("round %d: part 7 of the object is not the listed one", i)
			}
			if obj.Size != 32*bs {
				t.Fatalf("round %d: %d bytes", i, obj.Size)
			}
		} else if i%2 == 1 {
			b.AbortUpload(ctx, "bkt", up)
		}
		if n := partsLeft(t, s, up); n != 0 {
			t.Fatalf("round %d: %d part records left (complete: %v)", i, n, cerr)
		}
	}
}
