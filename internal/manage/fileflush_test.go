package manage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// TestFileInPlaceFlushAfterTakeover: volume's TestInPlaceFlushAfterTakeover
// on the file store, each writer with a store of its own on one directory
// (two processes): a flush that changed no map entry checks the head with
// a Stat, which no longer lists the head's directory once it has seen it
// (issue 11), and must still see the head another process swapped.
func TestFileInPlaceFlushAfterTakeover(t *testing.T) {
	for _, fua := range []bool{false, true} {
		t.Run(fmt.Sprintf("fua=%v", fua), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			sa, err := objstore.OpenFile(dir, true)
			if err != nil {
				t.Fatal(err)
			}
			sb, err := objstore.OpenFile(dir, false)
			if err != nil {
				t.Fatal(err)
			}
			id, err := volume.Create(ctx, sa, volume.CreateOptions{Size: 1 << 22, BlockShift: volume.SmallShift})
			if err != nil {
				t.Fatal(err)
			}
			a, err := volume.Open(ctx, sa, id, volume.OpenOptions{Writable: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.WriteAt(ctx, []byte("first"), 0, true); err != nil {
				t.Fatal(err)
			}
			_, headVer, _ := volume.ReadHead(ctx, sa, id)
			for i := 0; i < 3; i++ {
				if err := a.WriteAt(ctx, []byte("again"), 0, fua); err != nil {
					t.Fatal(err)
				}
				if err := a.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if _, ver, _ := volume.ReadHead(ctx, sa, id); ver != headVer {
				t.Fatalf("in-place writes and flushes wrote the head (version %d, was %d)", ver, headVer)
			}
			b, err := volume.Open(ctx, sb, id, volume.OpenOptions{Writable: true, NewEpoch: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.WriteAt(ctx, []byte("b"), 100, true); err != nil { // copies block 0
				t.Fatal(err)
			}
			err = a.WriteAt(ctx, []byte("late!"), 0, fua)
			if err == nil && !fua {
				err = a.Flush(ctx)
			}
			if !errors.Is(err, volume.ErrFenced) {
				t.Fatalf("a's write after b took over: %v, want ErrFenced", err)
			}
			got := make([]byte, 5)
			if err := b.ReadAt(ctx, got, 0); err != nil || string(got) != "again" {
				t.Fatalf("b reads %q, %v", got, err)
			}
		})
	}
}
