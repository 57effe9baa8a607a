package image

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// segStore is a store without in-place writes (as S3): volumes log in
// segments and keep a write log index after Close.
type segStore struct{ objstore.Store }

func (segStore) FreshStat() bool { return true }

// TestReviewExportIndexedZeroBlock: small writes to blocks the map has as
// zero, on a store without in-place writes, stay in the write log index
// after Close (no block is written). An export of the closed volume must
// still hold them: it skipped every block whose map entry is zero.
func TestReviewExportIndexedZeroBlock(t *testing.T) {
	s := segStore{objstore.NewMem()}
	id, err := volume.Create(ctx, s, volume.CreateOptions{Size: 8 * bs, BlockShift: 16})
	if err != nil {
		t.Fatal(err)
	}
	w, err := volume.Open(ctx, s, id, volume.OpenOptions{Writable: true, Log: true})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 8*bs)
	p := randomImage(7, 4096)
	for _, off := range []int64{0, 3*bs + 4096, 7*bs + 512} {
		if err := w.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h, _, err := volume.ReadHead(ctx, s, id)
	if err != nil {
		t.Fatal(err)
	}
	if h.Index.IsZero() {
		t.Fatal("the closed head names no write log index (test premise)")
	}
	v, err := volume.Open(ctx, s, id, volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	got := make([]byte, len(want))
	if err := v.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the volume reads other bytes (%v)", err)
	}
	out := filepath.Join(t.TempDir(), "out.raw")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := Export(ctx, v, f, Options{}); err != nil {
		t.Fatal(err)
	}
	f.Truncate(v.Size())
	f.Close()
	if b, _ := os.ReadFile(out); !bytes.Equal(b, want) {
		t.Fatal("the exported file lacks the indexed writes")
	}
	var buf bytes.Buffer
	if err := ExportStream(ctx, v, &buf, Options{}); err != nil || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("the streamed export differs (%v)", err)
	}
}
