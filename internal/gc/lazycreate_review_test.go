package gc_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// TestLazyCreateCrashThenCollect: a clone's writer creates blocks
// without syncs (objstore.LazyCreator), flushes some, and its machine
// crashes (objstore.File.CrashLazy) before it flushes the rest. A
// collection after the crash, an hour later, takes what the crash left
// of the unflushed blocks (absent, a directory with its base only, linked
// without data) as garbage and nothing the clone's head names; the clone
// reads its flushed writes and the base elsewhere, and a writer works on
// it and is collected after again.
func TestLazyCreateCrashThenCollect(t *testing.T) {
	const shift, blocks = 16, 16
	page := func(b, step int) []byte { return bytes.Repeat([]byte{byte(b*16 + step + 1)}, 4096) }
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	for seed := uint64(0); seed < 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			f, err := objstore.OpenFile(t.TempDir(), true)
			if err != nil {
				t.Fatal(err)
			}
			m := manage.New(f)
			want := make([]byte, blocks<<shift)
			for b := 0; b < blocks; b++ {
				copy(want[b<<shift:], page(b, 0))
			}
			if _, _, err := m.Import(ctx, bytes.NewReader(want), -1, "img", image.Options{BlockShift: shift}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Clone(ctx, "img", "vm", 0); err != nil {
				t.Fatal(err)
			}
			rec, err := m.Lookup(ctx, "vm")
			if err != nil {
				t.Fatal(err)
			}
			cid := rec.ID
			w, err := volume.Open(ctx, f, cid, volume.OpenOptions{Writable: true})
			if err != nil {
				t.Fatal(err)
			}
			for b := 0; b < blocks; b++ {
				if err := w.WriteAt(ctx, page(b, 1), int64(b)<<shift+4096, false); err != nil {
					t.Fatal(err)
				}
				if b < blocks/2 {
					copy(want[b<<shift+4096:], page(b, 1))
				}
				if b == blocks/2-1 {
					if err := w.Flush(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			if len(f.LazyPending()) != blocks/2 {
				t.Fatalf("pending %d creates, want %d", len(f.LazyPending()), blocks/2)
			}
			if err := f.CrashLazy(rand.New(rand.NewPCG(seed, 3))); err != nil {
				t.Fatal(err)
			}
			g, err := objstore.OpenFile(f.Root(), false)
			if err != nil {
				t.Fatal(err)
			}
			collect := func() {
				t.Helper()
				if _, err := manage.New(g).GC(ctx, gc.WithShortGrace(gc.Options{Grace: time.Minute, Now: later})); err != nil {
					t.Fatal(err)
				}
			}
			read := func(what string) {
				t.Helper()
				r, err := volume.Open(ctx, g, cid, volume.OpenOptions{})
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(want))
				if err := r.ReadAt(ctx, got, 0); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					i := 0
					for got[i] == want[i] {
						i++
					}
					t.Fatalf("%s: byte %d (block %d) reads %d, want %d", what, i, i>>shift, got[i], want[i])
				}
				r.Close(ctx)
			}
			collect()
			read("after the crash and a collection")
			left := 0
			if err := g.List(ctx, "vol/"+cid.String()+"/d/", func(objstore.Info) error { left++; return nil }); err != nil {
				t.Fatal(err)
			}
			if left != blocks/2 {
				t.Fatalf("%d private blocks of the clone left after the collection, want the %d flushed", left, blocks/2)
			}
			w2, err := volume.Open(ctx, g, cid, volume.OpenOptions{Writable: true})
			if err != nil {
				t.Fatal(err)
			}
			for b := 0; b < blocks; b++ {
				if err := w2.WriteAt(ctx, page(b, 2), int64(b)<<shift+8192, false); err != nil {
					t.Fatal(err)
				}
				copy(want[b<<shift+8192:], page(b, 2))
			}
			if err := w2.Close(ctx); err != nil {
				t.Fatal(err)
			}
			collect()
			read("after a writer and another collection")
		})
	}
}
