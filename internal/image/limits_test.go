package image

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

type unreadable struct{}

func (unreadable) Read([]byte) (int, error) {
	return 0, errors.New("read an image whose size is over the cap")
}

// TestImportOverCap: an image of a known size over the cap is refused
// before anything is read; a stream is refused at the first block past
// the cap, so its map never grows beyond it.
func TestImportOverCap(t *testing.T) {
	s := objstore.NewMem()
	_, err := Import(ctx, s, unreadable{}, int64(blockmap.MaxSizeFor(16))+1, Options{BlockShift: 16})
	if !errors.Is(err, volume.ErrBadSize) {
		t.Fatalf("known size over the cap: %v", err)
	}

	img := randomImage(2, 4*bs)
	if _, err := Import(ctx, s, bytes.NewReader(img), -1, Options{BlockShift: 16, maxBlocks: 4}); err != nil {
		t.Fatalf("stream at the cap: %v", err)
	}
	var read int64
	r := io.TeeReader(io.MultiReader(bytes.NewReader(img), bytes.NewReader(img)), writerFunc(func(p []byte) { read += int64(len(p)) }))
	if _, err := Import(ctx, s, r, -1, Options{BlockShift: 16, Workers: 1, maxBlocks: 4}); !errors.Is(err, volume.ErrBadSize) {
		t.Fatalf("stream over the cap: %v", err)
	}
	if read > 6*bs {
		t.Fatalf("read %d bytes of a stream over a cap of 4 blocks", read)
	}
}

type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }
