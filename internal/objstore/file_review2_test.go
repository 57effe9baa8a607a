package objstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileStaleSwapAcrossRecreate (issue 11 review2): a swapper that
// found its base version with one stat (the fast path of a swap from a
// known version) stalls before its link while another host swaps,
// deletes the object (its generations and directory go) and creates it
// again, then swaps it to the stalled swapper's version number and
// beyond. The stale swap must lose, and the object keep the other
// host's content.
func TestFileStaleSwapAcrossRecreate(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []string{"recreate", "pruned"} {
		t.Run(mode, func(t *testing.T) {
			_, a, b := twoFileStores(t)
			later(b)
			v1, err := b.Put(ctx, "vol/x/head", []byte("1"))
			if err != nil {
				t.Fatal(err)
			}
			paused, resume := make(chan struct{}), make(chan struct{})
			var once sync.Once
			objstore.SetFileHooks(a, objstore.FileHooks{BeforeInstall: func(string) {
				once.Do(func() { close(paused); <-resume })
			}})
			errc := make(chan error, 1)
			go func() { _, err := a.Swap(ctx, "vol/x/head", []byte("stale"), v1); errc <- err }()
			<-paused
			v := v1
			if v, err = b.Swap(ctx, "vol/x/head", []byte("2"), v); err != nil {
				t.Fatal(err)
			}
			if mode == "recreate" {
				if err := b.Delete(ctx, "vol/x/head"); err != nil {
					t.Fatal(err)
				}
				if v, err = b.Create(ctx, "vol/x/head", []byte("3")); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range []string{"4", "5", "6"} {
				if v, err = b.Swap(ctx, "vol/x/head", []byte(s), v); err != nil {
					t.Fatal(err)
				}
			}
			close(resume)
			if err := <-errc; !errors.Is(err, objstore.ErrConflict) {
				t.Fatalf("stale swap: %v, want a conflict", err)
			}
			if got, gv, err := b.Get(ctx, "vol/x/head"); string(got) != "6" || gv != v {
				t.Fatalf("object %q v%d (%v), want 6 v%d", got, gv, err, v)
			}
			if _, err := a.Swap(ctx, "vol/x/head", []byte("7"), v); err != nil {
				t.Fatalf("a swap from the current version: %v", err)
			}
		})
	}
}
