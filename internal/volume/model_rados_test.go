//go:build ceph

package volume

import (
	"fmt"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore/rados"
)

// TestModelRados runs the model-based test on a real RADOS pool.
func TestModelRados(t *testing.T) {
	for seed := uint64(1); seed <= seeds(3); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runModel(t, rados.OpenTestStore(t), seed, 200, nil, false)
		})
	}
}

// BenchmarkCloneRados measures clone time of fully mapped images on a
// RADOS pool (compare: rbd clone, in bench/rados.sh).
func BenchmarkCloneRados(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			s := rados.OpenTestStore(b)
			img := fullImage(b, s, sz.size)
			for b.Loop() {
				if _, err := Clone(ctx, s, img, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
