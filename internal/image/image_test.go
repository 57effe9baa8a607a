package image

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

var ctx = context.Background()

const bs = 1 << 16

func randomImage(seed uint64, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, size)
	for i := 0; i < size; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < size; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func TestImportDedupExport(t *testing.T) {
	s, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	img := randomImage(1, 10*bs+123)
	clear(img[2*bs : 4*bs])              // two zero blocks: never stored
	copy(img[6*bs:7*bs], img[5*bs:6*bs]) // a duplicate block: stored once
	var calls int
	st, err := Import(ctx, s, bytes.NewReader(img), int64(len(img)), Options{BlockShift: 16, Progress: func(done, total int64) { calls++ }})
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks != 11 || st.ZeroBlocks != 2 || st.NewBlocks != 8 || st.DedupBlocks != 1 || calls == 0 {
		t.Fatalf("first import: %+v (progress calls %d)", st, calls)
	}
	again, err := Import(ctx, s, bytes.NewReader(img), -1, Options{BlockShift: 16})
	if err != nil {
		t.Fatal(err)
	}
	if again.NewBlocks != 0 || again.StoredBytes != 0 || again.DedupBlocks != 9 {
		t.Fatalf("second import stored new data: %+v", again)
	}
	v, err := volume.Open(ctx, s, st.ID, volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(img))
	if err := v.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("image reads back different (%v)", err)
	}
	// Sparse export.
	out := filepath.Join(t.TempDir(), "out.raw")
	f, _ := os.Create(out)
	if err := Export(ctx, v, f, Options{}); err != nil {
		t.Fatal(err)
	}
	f.Truncate(v.Size())
	f.Close()
	if b, _ := os.ReadFile(out); !bytes.Equal(b, img) {
		t.Fatal("exported file differs from the image")
	}
	var buf bytes.Buffer
	if err := ExportStream(ctx, v, &buf, Options{}); err != nil || !bytes.Equal(buf.Bytes(), img) {
		t.Fatalf("streamed export differs (%v)", err)
	}
	// Clone of the image: instant, and reads the image.
	cid, err := volume.Clone(ctx, s, st.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := volume.Open(ctx, s, cid, volume.OpenOptions{Writable: true})
	c.WriteAt(ctx, []byte("changed"), 0, true)
	v.ReadAt(ctx, got, 0)
	if !bytes.Equal(got, img) {
		t.Fatal("writing the clone changed the image")
	}
}

func TestImportErrors(t *testing.T) {
	s := objstore.NewMem()
	if _, err := Import(ctx, s, bytes.NewReader(nil), -1, Options{}); err == nil {
		t.Fatal("imported an empty image")
	}
	if _, err := Import(ctx, s, bytes.NewReader(make([]byte, 100)), 200, Options{}); err == nil {
		t.Fatal("imported a short image without error")
	}
	f := objstore.NewFaulty(s)
	f.Add(objstore.Rule{Op: objstore.OpCreate, Prefix: "blk/", Err: objstore.ErrNoSpace})
	if _, err := Import(ctx, f, bytes.NewReader(randomImage(2, 3*bs)), -1, Options{BlockShift: 16}); err == nil {
		t.Fatal("import onto a full store succeeded")
	}
	n := 0
	s.List(ctx, "vol/", func(objstore.Info) error { n++; return nil })
	if n != 0 {
		t.Fatalf("a failed import left %d map objects", n)
	}
}
