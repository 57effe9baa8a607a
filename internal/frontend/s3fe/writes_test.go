package s3fe_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/frontend/s3fe"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// writeLog is a store that records the name of every write (each a
// durable write on the file store).
type writeLog struct {
	objstore.Store
	mu    sync.Mutex
	names []string
}

func (w *writeLog) log(name string) {
	w.mu.Lock()
	w.names = append(w.names, name)
	w.mu.Unlock()
}

func (w *writeLog) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.names
	w.names = nil
	return n
}

func (w *writeLog) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	w.log(name)
	return w.Store.Put(ctx, name, data)
}

func (w *writeLog) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	w.log(name)
	return w.Store.Create(ctx, name, data)
}

func (w *writeLog) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	w.log(name)
	return w.Store.Swap(ctx, name, data, old)
}

func (w *writeLog) Delete(ctx context.Context, name string) error {
	w.log(name)
	return w.Store.Delete(ctx, name)
}

func (w *writeLog) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	w.log(name)
	return w.Store.DeleteVersion(ctx, name, old)
}

// An UploadPart, and a PutObject, after the first of a busy server make
// only the writes of their data: its blocks, its map (a segment and a
// head) and its record. The hold on collections is shared by the
// operations in flight, and by those that follow within the linger,
// instead of being created and deleted by each (two durable writes in
// sequence with the data's, ahead of it and after it).
func TestUploadPartWrites(t *testing.T) {
	ws := &writeLog{Store: objstore.NewMem()}
	m := manage.New(ws)
	b := s3fe.Buckets(m, time.Hour)
	b.BlockShift, b.MinPart = 16, 1<<16
	if err := b.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	id, err := b.CreateUpload(ctx, "bkt", "key", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	part := func(n int) []byte {
		return bytes.Repeat([]byte{byte(n)}, 2<<16) // two blocks
	}
	if _, err := b.UploadPart(ctx, "bkt", id, 1, bytes.NewReader(part(1)), 2<<16, nil); err != nil {
		t.Fatal(err)
	}
	ws.take()
	for n := 2; n <= 4; n++ {
		if _, err := b.UploadPart(ctx, "bkt", id, n, bytes.NewReader(part(n)), 2<<16, nil); err != nil {
			t.Fatal(err)
		}
		got := ws.take()
		// One content block (both are equal), a segment, a head, the
		// part record.
		if len(got) != 4 {
			t.Errorf("part %d: %d writes, want 4 (a block, a segment, a head, the part record): %q", n, len(got), got)
		}
		for _, name := range got {
			if strings.HasPrefix(name, "gc/") {
				t.Errorf("part %d wrote %s", n, name)
			}
		}
	}
	if _, err := b.PutObject(ctx, "bkt", "obj", bytes.NewReader(part(9)), 2<<16, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := ws.take(); len(got) != 4 {
		t.Errorf("PutObject: %d writes, want 4 (a block, a segment, a head, the object record): %q", len(got), got)
	}
}
