package manage_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

func bridgeData(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 5))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

func countBlocks(s objstore.Store) int {
	n := 0
	s.List(context.Background(), blockmap.ContentPrefix, func(objstore.Info) error { n++; return nil })
	return n
}

func readObject(t *testing.T, b *bucket.Store, bkt, key string) []byte {
	t.Helper()
	ctx := context.Background()
	o, err := b.GetObject(ctx, bkt, key)
	if err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	if err := b.Read(ctx, o, 0, o.Size, &w); err != nil {
		t.Fatal(err)
	}
	return w.Bytes()
}

// TestBridges: a volume cloned from an uploaded object shares its blocks;
// a snapshot published as an object reads as the volume did, and stays
// after the snapshot is removed and a collection runs.
func TestBridges(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	clk := time.Unix(1_000_000, 0)
	now := func() time.Time { return clk }
	s.Now = now
	m := manage.New(s)
	m.Now = now
	b := m.Buckets()
	b.BlockShift = 16
	b.MinPart = 1 << 16
	if err := b.CreateBucket(ctx, "images"); err != nil {
		t.Fatal(err)
	}
	img := bridgeData(1, 10<<16)
	if _, err := b.PutObject(ctx, "images", "disk.raw", bytes.NewReader(img), -1, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	blocks := countBlocks(s)
	if _, err := m.CloneObject(ctx, "images", "disk.raw", "vm1", 0); err != nil {
		t.Fatal(err)
	}
	if countBlocks(s) != blocks || !bytes.Equal(manage.ReadT(t, m, "vm1", 0, -1), img) {
		t.Fatal("clone from an object: new blocks or different data")
	}
	// Parts not block-aligned: the clone copies, and reads the same.
	up, _ := b.CreateUpload(ctx, "images", "mp.raw", bucket.PutOptions{})
	var whole []byte
	var list []bucket.CompletePart
	for i, n := range []int{(1 << 16) + 3, 2 << 16} {
		p := bridgeData(uint64(7+i), n)
		whole = append(whole, p...)
		part, err := b.UploadPart(ctx, "images", up, i+1, bytes.NewReader(p), -1, nil)
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, bucket.CompletePart{Number: i + 1, ETag: part.ETag})
	}
	if _, err := b.CompleteUpload(ctx, "images", up, list); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CloneObject(ctx, "images", "mp.raw", "vm2", 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(manage.ReadT(t, m, "vm2", 0, -1), whole) {
		t.Fatal("clone of an unaligned multipart object differs")
	}

	// Publish a snapshot taken after writes.
	manage.WriteT(t, m, "vm1", 3<<16+5, bridgeData(3, 2<<16))
	if _, err := m.Snapshot(ctx, "vm1", "vm1@1"); err != nil {
		t.Fatal(err)
	}
	want := manage.ReadT(t, m, "vm1", 0, -1)
	manage.WriteT(t, m, "vm1", 0, bridgeData(4, 1<<16))
	blocks = countBlocks(s)
	if _, err := m.Publish(ctx, "vm1", "images", "vm1.raw"); err == nil {
		t.Fatal("published a writable volume")
	}
	o, err := m.Publish(ctx, "vm1@1", "images", "vm1.raw")
	if err != nil {
		t.Fatal(err)
	}
	if o.Size != int64(len(want)) || countBlocks(s) != blocks || !bytes.Equal(readObject(t, b, "images", "vm1.raw"), want) {
		t.Fatal("published snapshot differs, or stored blocks")
	}
	if err := m.Remove(ctx, "vm1@1"); err != nil {
		t.Fatal(err)
	}
	clk = clk.Add(2 * time.Hour)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readObject(t, b, "images", "vm1.raw"), want) {
		t.Fatal("a published snapshot changed after its snapshot was removed and gc ran")
	}
	// The object as an image: no new blocks; it stays when the object is
	// deleted and a collection runs.
	blocks = countBlocks(s)
	if _, err := m.ImportObject(ctx, "images", "vm1.raw", "golden"); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteObject(ctx, "images", "vm1.raw"); err != nil {
		t.Fatal(err)
	}
	clk = clk.Add(2 * time.Hour)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(manage.ReadT(t, m, "golden", 0, -1), want) || countBlocks(s) > blocks {
		t.Fatal("an image from an object differs, or stored blocks")
	}
	if _, _, err := m.Import(ctx, bytes.NewReader(want), -1, "imp", image.Options{BlockShift: 16}); err != nil {
		t.Fatal(err)
	}
}
