//go:build ceph

package gc_test

import (
	"testing"

	"github.com/archipelago-go/archip/internal/objstore/rados"
)

func TestRados(t *testing.T) { collectOn(t, rados.OpenTestStore(t)) }
