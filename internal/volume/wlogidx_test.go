package volume

import (
	"fmt"
	"math/rand/v2"
	"testing"
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
