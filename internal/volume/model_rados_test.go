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
			runModel(t, rados.OpenTestStore(t), seed, 200, nil)
		})
	}
}
