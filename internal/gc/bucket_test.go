package gc_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
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

// TestOrphanPartRecords: a part record whose upload record is gone (a
// complete or abort whose delete of it failed) is deleted once older than
// the grace period, as other garbage is; a young one is kept.
func TestOrphanPartRecords(t *testing.T) {
	s := objstore.NewMem()
	m, clk := setup(s)
	b := &bucket.Store{S: s, Now: clk.now, BlockShift: 16, MinPart: bs}
	rng := rand.New(rand.NewPCG(5, 6))
	if err := b.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	up, err := b.CreateUpload(ctx, "bkt", "key", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(rng, 2*bs)
	p, err := b.UploadPart(ctx, "bkt", up, 1, bytes.NewReader(data), -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := blockmap.PartName("bkt", up, 1)
	rec, _, err := s.Get(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.CompleteUpload(ctx, "bkt", up, []bucket.CompletePart{{Number: 1, ETag: p.ETag}}); err != nil {
		t.Fatal(err)
	}
	// The complete's delete of the part record failed: it is left.
	if _, err := s.Put(ctx, old, rec); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Hour)
	young := blockmap.PartName("bkt", "0123456789abcdef0123456789abcdef", 1)
	if _, err := s.Put(ctx, young, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, old); !objstore.IsNotExist(err) {
		t.Errorf("orphan part record older than the grace period: %v, want deleted", err)
	}
	if _, err := s.Stat(ctx, young); err != nil {
		t.Errorf("orphan part record younger than the grace period: %v, want kept", err)
	}
	o, err := b.GetObject(ctx, "bkt", "key")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := b.Read(ctx, o, 0, o.Size, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("object after gc: %v", err)
	}
	clk.advance(2 * time.Hour)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, young); !objstore.IsNotExist(err) {
		t.Errorf("orphan part record once older than the grace period: %v, want deleted", err)
	}
}
