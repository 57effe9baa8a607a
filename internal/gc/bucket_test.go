package gc_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestObjectMapsAreRoots: the maps of objects and of uploaded parts of an
// upload in progress are kept, with their blocks; those of deleted
// objects, aborted uploads and replaced objects are collected.
func TestObjectMapsAreRoots(t *testing.T) {
	s := objstore.NewMem()
	m, clk := setup(s)
	b := &bucket.Store{S: s, Now: clk.now, BlockShift: 16,
		Hold: func(ctx context.Context) (func() error, error) {
			h, err := gc.AcquireHold(ctx, s, clk.now)
			if err != nil {
				return nil, err
			}
			return h.Release, nil
		}}
	rng := rand.New(rand.NewPCG(3, 4))
	if err := b.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	keep := randBytes(rng, 5*bs+100)
	if _, err := b.PutObject(ctx, "bkt", "keep", bytes.NewReader(keep), -1, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PutObject(ctx, "bkt", "gone", bytes.NewReader(randBytes(rng, 3*bs)), -1, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteObject(ctx, "bkt", "gone"); err != nil {
		t.Fatal(err)
	}
	up, err := b.CreateUpload(ctx, "bkt", "big", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	part := randBytes(rng, 2*bs+7)
	if _, err := b.UploadPart(ctx, "bkt", up, 1, bytes.NewReader(part), -1, nil); err != nil {
		t.Fatal(err)
	}
	ab, _ := b.CreateUpload(ctx, "bkt", "aborted", bucket.PutOptions{})
	b.UploadPart(ctx, "bkt", ab, 1, bytes.NewReader(randBytes(rng, 2*bs)), -1, nil)
	if err := b.AbortUpload(ctx, "bkt", ab); err != nil {
		t.Fatal(err)
	}

	clk.advance(2 * time.Hour)
	rep, err := m.GC(ctx, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// "gone" and the aborted part: a head each, their segments and blocks.
	if rep.Deleted.Heads != 2 || rep.Deleted.Content != 5 {
		t.Errorf("deleted %+v, want the 2 maps of the deleted object and the aborted part, and their 5 blocks", rep.Deleted)
	}
	o, err := b.GetObject(ctx, "bkt", "keep")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := b.Read(ctx, o, 0, o.Size, &got); err != nil || !bytes.Equal(got.Bytes(), keep) {
		t.Fatalf("object after gc: %v, equal %v", err, bytes.Equal(got.Bytes(), keep))
	}
	parts, err := b.ListParts(ctx, "bkt", up)
	if err != nil || len(parts) != 1 {
		t.Fatalf("parts after gc: %v %v", parts, err)
	}
	o, err = b.CompleteUpload(ctx, "bkt", up, []bucket.CompletePart{{Number: 1, ETag: parts[0].ETag}})
	if err != nil {
		t.Fatal(err)
	}
	got.Reset()
	if err := b.Read(ctx, o, 0, o.Size, &got); err != nil || !bytes.Equal(got.Bytes(), part) {
		t.Fatalf("completed upload after gc: %v, equal %v", err, bytes.Equal(got.Bytes(), part))
	}
}
