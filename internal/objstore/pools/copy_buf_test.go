package pools

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestCopyToReusesBuffers: a move's copies read each block into a
// buffer the earlier copies used (blocks of mixed sizes included), so
// that copying n blocks does not allocate n blocks; each copy is right.
// Before, every copy allocated its block anew (a Get's buffer).
func TestCopyToReusesBuffers(t *testing.T) {
	open := func() objstore.Store {
		s, err := objstore.OpenFile(t.TempDir(), true)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := open(), open()
	s, err := New(objstore.NewMem(), []Named{{"a", a}, {"b", b}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, _ := Of(s)
	rnd := rand.New(rand.NewPCG(3, 4))
	const big = 1 << 20
	sizes := []int{64 << 10, big, 64 << 10, big - 1, 1}
	for len(sizes) < 24 {
		sizes = append(sizes, big)
	}
	want := map[string][]byte{}
	var names []string
	owner := blockmap.NewID()
	for i, n := range sizes {
		name := blockmap.PrivateEntry(owner, 1, uint64(i+1)).ObjectName()
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rnd.Uint32())
		}
		if _, err := a.Put(ctx, name, p); err != nil {
			t.Fatal(err)
		}
		want[name] = p
		names = append(names, name)
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	var copied int64
	for _, name := range names {
		n, err := r.CopyTo(ctx, name, "b")
		if err != nil {
			t.Fatal(err)
		}
		copied += n
	}
	runtime.ReadMemStats(&m1)
	for _, name := range names {
		got, _, err := b.Get(ctx, name)
		if err != nil || !bytes.Equal(got, want[name]) {
			t.Fatalf("%s in the target: %d bytes, %v; want %d", name, len(got), err, len(want[name]))
		}
	}
	// A collection may empty the pool once or twice: a few blocks anew.
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > uint64(copied)/4 {
		t.Errorf("copying %d bytes in %d blocks allocated %d bytes", copied, len(names), alloc)
	}
}
