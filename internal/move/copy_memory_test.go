package move

import (
	"bytes"
	"math/rand"
	"runtime"
	"testing"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore/pools"
)

// TestMoveCopyMemory: a move's copy allocates about as many blocks as
// it copies at once (copyWorkers), not one per block copied: the reads
// reuse their buffers (pools.Router.CopyTo). Before, a move of n blocks
// allocated at least n blocks (each read's own buffer).
func TestMoveCopyMemory(t *testing.T) {
	meta, a, b := stores(t, "file")
	s, err := pools.New(meta, []pools.Named{{Name: "a", Store: a}, {Name: "b", Store: b}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := manage.New(s)
	const shift, n = 20, 64
	const bs = 1 << shift
	if _, err := m.CreateVolume(ctx, "big", n*bs, shift); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, n*bs)
	rand.New(rand.NewSource(5)).Read(p)
	manage.WriteT(t, m, "big", 0, p)
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	res, err := Move(ctx, m, "big", "b", Options{})
	runtime.ReadMemStats(&m1)
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != n || res.Bytes != n*bs {
		t.Fatalf("copied %d blocks, %d bytes; want %d, %d", res.Copied, res.Bytes, n, n*bs)
	}
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > (copyWorkers+8)*bs {
		t.Errorf("a move of %d blocks of %d bytes, %d at once, allocated %d bytes (%.1f blocks)", n, bs, copyWorkers, alloc, float64(alloc)/bs)
	}
	if got := manage.ReadT(t, manage.New(s), "big", 0, -1); !bytes.Equal(got, p) {
		t.Error("the moved volume reads other bytes")
	}
}
