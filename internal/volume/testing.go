package volume

import (
	"context"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// NewTestVolume creates and opens a writable volume of size bytes with
// 2^shift-byte blocks (0: default) on s, for tests of this and other
// packages. The volume is closed when the test ends.
func NewTestVolume(t testing.TB, s objstore.Store, size uint64, shift uint8) *Volume {
	t.Helper()
	ctx := context.Background()
	id, err := Create(ctx, s, CreateOptions{Size: size, BlockShift: shift})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close(ctx) })
	return v
}

// SmallShift is the smallest block size, which keeps test volumes small
// while crossing many block boundaries.
const SmallShift = blockmap.MinBlockShift
