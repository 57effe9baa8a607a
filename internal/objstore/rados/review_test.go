//go:build ceph

package rados

import (
	"context"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
)

// TestMarkDirsHoldsOneContext: a create in a new directory below cat/D/
// needs one I/O context at a time. It held one for the marker's check and
// took a second for the directory's key, so contexts creators in new
// directories at once (clones of distinct volumes) each held one and
// waited for another forever. Here every context but one is taken.
func TestMarkDirsHoldsOneContext(t *testing.T) {
	s := OpenTestStore(t)
	var held []*rados.IOContext
	for len(s.ioctxs) > 1 {
		held = append(held, <-s.ioctxs)
	}
	defer func() {
		for _, io := range held {
			s.ioctxs <- io
		}
	}()
	// A deadlock, not slowness, is what this bound detects.
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := s.Create(c, "cat/child/P/c", []byte("x")); err != nil {
		t.Fatalf("create in a new directory with one free I/O context: %v", err)
	}
}
