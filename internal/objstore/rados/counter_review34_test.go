//go:build ceph

package rados

import (
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestReview34bCounterAfterErrors: the counter returns to zero after
// operations that fail (missing object, fenced client), either way.
func TestReview34bCounterAfterErrors(t *testing.T) {
	ss := OpenTestStores(t, 2)
	a, b := ss[0], ss[1]
	p := make([]byte, 4096)
	if err := a.ReadAt(ctx, "x/missing", p, 0); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatal(err)
	}
	if err := a.ReadLend(ctx, "x/missing", 0, 10, func([][]byte) error { return nil }); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatal(err)
	}
	if err := a.ReadLend(ctx, "x/missing", 0, 10, func([][]byte) error { panic("x") }); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatal(err)
	}
	if err := a.WriteAt(ctx, "x/o", p, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx, "x/o"); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { recover() }()
		a.ReadLend(ctx, "x/o", 0, 10, func([][]byte) error { panic("x") })
	}()
	if n := opsInFlight.Load(); n != 0 {
		t.Fatalf("opsInFlight = %d", n)
	}
	id, err := a.FenceID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Fence(ctx, id); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		a.WriteAt(ctx, "x/o", p, 0)
		if err := a.Sync(ctx, "x/o"); !errors.Is(err, objstore.ErrFenced) {
			t.Fatalf("fenced Sync: %v", err)
		}
		if err := a.ReadAt(ctx, "x/o", p, 0); !errors.Is(err, objstore.ErrFenced) {
			t.Logf("fenced ReadAt: %v", err)
		}
	}
	if n := opsInFlight.Load(); n != 0 {
		t.Fatalf("opsInFlight = %d", n)
	}
}
