package volume

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestAddExtModel checks the index's extents of a block against a model
// that keeps, per byte, where its newest logged copy is: random writes
// over a small block, each replacing what it overlaps.
func TestAddExtModel(t *testing.T) {
	const size = 512
	type src struct {
		name string
		pos  int64
	}
	for seed := range uint64(50) {
		r := rand.New(rand.NewPCG(seed, 7))
		var exts []logExt
		var model [size]src
		for k := range 200 {
			off := r.Int64N(size)
			n := 1 + r.Int64N(min(size-off, 64))
			x := logExt{off: off, n: n, name: fmt.Sprint("l", k%3), pos: r.Int64N(1 << 20)}
			exts = addExt(exts, x)
			for i := range n {
				model[off+i] = src{x.name, x.pos + i}
			}
			var got [size]src
			for i, e := range exts {
				if e.n <= 0 || i > 0 && exts[i-1].off+exts[i-1].n > e.off {
					t.Fatalf("seed %d, write %d: extents not sorted apart: %+v", seed, k, exts)
				}
				for j := range e.n {
					got[e.off+j] = src{e.name, e.pos + j}
				}
			}
			if got != model {
				t.Fatalf("seed %d, write %d: the extents differ from the model", seed, k)
			}
			lo := r.Int64N(size)
			hi := lo + 1 + r.Int64N(size-lo)
			for _, e := range overlapping(exts, lo, hi-lo) {
				if e.off+e.n <= lo || e.off >= hi {
					t.Fatalf("overlapping(%d, %d) returned %+v", lo, hi-lo, e)
				}
			}
			want := 0
			for _, e := range exts {
				if e.off < hi && e.off+e.n > lo {
					want++
				}
			}
			if got := len(overlapping(exts, lo, hi-lo)); got != want {
				t.Fatalf("overlapping(%d, %d): %d extents, want %d", lo, hi-lo, got, want)
			}
		}
	}
}

// BenchmarkAddExt appends 4 KiB extents at random places of a 4 MiB
// block whose index holds n extents (as a block written at random
// between checkpoints does): each replaces one of them.
func BenchmarkAddExt(b *testing.B) {
	for _, n := range []int{16, 256, 1024} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 1))
			slot := func() int64 { return r.Int64N(int64(n)) * int64(1024/n) << 12 }
			var exts []logExt
			for len(exts) < n {
				exts = addExt(exts, logExt{off: slot(), n: 4096, name: "l"})
			}
			for b.Loop() {
				exts = addExt(exts, logExt{off: slot(), n: 4096, name: "l"})
			}
		})
	}
}

// TestCutReusesStoredDelta: a flush that changed no map entry stores
// the head's delta as it is (when it swaps the head at all) instead of
// building it again from the map, a copy and a sort of up to MaxDelta
// entries per flush.
func TestCutReusesStoredDelta(t *testing.T) {
	s := objstore.NewMem()
	v := NewTestVolume(t, s, 8*bs, SmallShift)
	if err := v.WriteAt(ctx, pattern(8*bs, 3), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(v.Head().Delta); n != 8 {
		t.Fatalf("the head's delta holds %d entries, want 8", n)
	}
	if err := v.WriteAt(ctx, pattern(100, 4), bs+10, false); err != nil {
		t.Fatal(err)
	}
	v.gate.Lock()
	c := v.takeCut()
	v.gate.Unlock()
	v.mu.Lock()
	stored := v.mu.head.Delta
	v.mu.Unlock()
	if !c.inDelta || len(c.delta) != len(stored) || &c.delta[0] != &stored[0] {
		t.Errorf("a cut that changes no entry built its delta again (in delta %v, %d entries)", c.inDelta, len(c.delta))
	}
	v.restore(c, nil)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}
