package manage

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/objstore"
)

// countReads records which volumes' heads and segments a store read.
type countReads struct {
	objstore.Store
	mu   sync.Mutex
	vols map[blockmap.ID]int
}

func (s *countReads) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if rest, ok := strings.CutPrefix(name, "vol/"); ok {
		if i := strings.IndexByte(rest, '/'); i > 0 {
			if id, err := blockmap.ParseID(rest[:i]); err == nil {
				s.mu.Lock()
				s.vols[id]++
				s.mu.Unlock()
			}
		}
	}
	return s.Store.Get(ctx, name)
}

func (s *countReads) reset() {
	s.mu.Lock()
	s.vols = map[blockmap.ID]int{}
	s.mu.Unlock()
}

// TestInfoReadsOnlyLineage (issue 12, space accounting): with many
// unrelated volumes, snapshots, clones and images in the store, info of
// a volume reads the maps of its own lineage and of nothing else.
func TestInfoReadsOnlyLineage(t *testing.T) {
	s := &countReads{Store: objstore.NewMem(), vols: map[blockmap.ID]int{}}
	m := New(s)
	data := func(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }
	for i := range 20 {
		name := fmt.Sprintf("other%d", i)
		if _, err := m.CreateVolume(ctx, name, 4*bs, 16); err != nil {
			t.Fatal(err)
		}
		WriteT(t, m, name, 0, data(byte(i+1), 2*bs))
		if i%4 == 0 {
			if _, err := m.Snapshot(ctx, name, name+"@s"); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Clone(ctx, name+"@s", name+"-c", 0); err != nil {
				t.Fatal(err)
			}
			WriteT(t, m, name+"-c", bs, data(0xee, bs))
		}
	}
	img := data(7, 4*bs)
	if _, _, err := m.Import(ctx, bytes.NewReader(img), int64(len(img)), "img", image.Options{BlockShift: 16}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := m.Clone(ctx, "img", fmt.Sprintf("img-c%d", i), 0); err != nil {
			t.Fatal(err)
		}
	}

	// The lineage: a, its snapshots, clones of those and their snapshots.
	if _, err := m.CreateVolume(ctx, "a", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	WriteT(t, m, "a", 0, data(1, 4*bs))
	snap := func(vol, name string) {
		if _, err := m.Snapshot(ctx, vol, name); err != nil {
			t.Fatal(err)
		}
	}
	clone := func(src, name string) {
		if _, err := m.Clone(ctx, src, name, 0); err != nil {
			t.Fatal(err)
		}
	}
	snap("a", "a@1")
	WriteT(t, m, "a", 0, data(2, bs))
	clone("a@1", "b")
	WriteT(t, m, "b", bs, data(3, bs))
	snap("b", "b@1")
	WriteT(t, m, "b", 2*bs+5, []byte("partial"))
	clone("b@1", "c")
	WriteT(t, m, "c", 3*bs, data(4, bs))
	family := map[blockmap.ID]string{}
	for _, n := range []string{"a", "a@1", "b", "b@1", "c"} {
		r, err := m.Lookup(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		family[r.ID] = n
	}
	for _, n := range []string{"a", "a@1", "b", "b@1", "c"} {
		s.reset()
		if _, err := m.Info(ctx, n); err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		for id, k := range s.vols {
			if _, ok := family[id]; !ok {
				t.Errorf("info %s read %d objects of volume %s, not of its lineage", n, k, id)
			}
		}
		s.mu.Unlock()
	}
}
