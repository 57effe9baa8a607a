package gc_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/objstore"
)

// stallReader gives first, then waits for go before the rest.
type stallReader struct {
	first, rest  io.Reader
	stalled, go_ chan struct{}
}

func (r *stallReader) Read(p []byte) (int, error) {
	n, err := r.first.Read(p)
	if err != io.EOF {
		return n, nil
	}
	if r.stalled != nil {
		close(r.stalled)
		r.stalled = nil
		<-r.go_
	}
	return r.rest.Read(p)
}

// TestGCDuringUpload: a collection with no grace that starts while an
// upload is storing its blocks (deduplicated onto blocks of an object
// deleted meanwhile) waits for it; the object is whole after both.
func TestGCDuringUpload(t *testing.T) {
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
	b.CreateBucket(ctx, "bkt")
	rng := rand.New(rand.NewPCG(7, 8))
	p := randBytes(rng, 12*bs+5)
	// An object with the same blocks, deleted: garbage the upload
	// deduplicates onto.
	b.PutObject(ctx, "bkt", "old", bytes.NewReader(p), -1, bucket.PutOptions{})
	b.DeleteObject(ctx, "bkt", "old")
	clk.advance(2 * time.Hour)

	r := &stallReader{first: bytes.NewReader(p[:6*bs]), rest: bytes.NewReader(p[6*bs:]), stalled: make(chan struct{}), go_: make(chan struct{})}
	stalled := r.stalled
	done := make(chan error, 1)
	go func() {
		_, err := b.PutObject(ctx, "bkt", "new", r, int64(len(p)), bucket.PutOptions{})
		done <- err
	}()
	<-stalled
	gcDone := make(chan error, 1)
	go func() {
		_, err := m.GC(ctx, gc.WithShortGrace(gc.Options{Grace: time.Nanosecond}))
		gcDone <- err
	}()
	// The collection takes its lock and waits for the upload's hold.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := s.Stat(ctx, "gc/lock"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the collection did not start")
		}
	}
	select {
	case err := <-gcDone:
		t.Fatalf("the collection ran during the upload: %v", err)
	case <-time.After(time.Second):
	}
	close(r.go_)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	o, err := b.GetObject(ctx, "bkt", "new")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := b.Read(ctx, o, 0, o.Size, &got); err != nil || !bytes.Equal(got.Bytes(), p) {
		t.Fatalf("after gc: %v, equal %v", err, bytes.Equal(got.Bytes(), p))
	}
}

// TestOrphanPartsCollected: parts whose upload record is gone (an abort
// or complete that stopped between deleting the upload record and its
// parts) are not roots: their maps and blocks are collected.
func TestOrphanPartsCollected(t *testing.T) {
	s := objstore.NewMem()
	m, clk := setup(s)
	b := &bucket.Store{S: s, Now: clk.now, BlockShift: 16}
	b.CreateBucket(ctx, "bkt")
	rng := rand.New(rand.NewPCG(9, 10))
	id, _ := b.CreateUpload(ctx, "bkt", "k", bucket.PutOptions{})
	if _, err := b.UploadPart(ctx, "bkt", id, 1, bytes.NewReader(randBytes(rng, 3*bs)), -1, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, blockmap.UploadName("bkt", id)); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Hour)
	rep, err := m.GC(ctx, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted.Heads != 1 || rep.Deleted.Content != 3 {
		t.Errorf("deleted %+v, want the orphan part's map and its 3 blocks", rep.Deleted)
	}
}
