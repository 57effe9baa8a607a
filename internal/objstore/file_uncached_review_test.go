//go:build linux

package objstore_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// reviewRoots are the file systems tried: the test's temporary directory
// and, where there is one, a tmpfs.
func reviewRoots(t *testing.T) map[string]string {
	roots := map[string]string{"tempdir": t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "odirect-review")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			roots["shm"] = d
		}
	}
	// More file systems (mounted by hand: xfs, ext2, ...), colon-separated.
	for i, d := range filepath.SplitList(os.Getenv("ODIRECT_REVIEW_ROOTS")) {
		dd, err := os.MkdirTemp(d, "odirect-review")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dd) })
		roots[fmt.Sprintf("extra%d:%s", i, d)] = dd
	}
	return roots
}

func randBytes(seed uint64, b []byte) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// TestReviewUncachedRoundTrip: every size around 1 MiB, aligned in memory
// or not, writes and reads back the same bytes, through Get, ReadAt and
// ReadAtUncached, at and past the end.
func TestReviewUncachedRoundTrip(t *testing.T) {
	ctx := context.Background()
	sizes := []int{1<<20 - 4096, 1<<20 - 1, 1 << 20, 1<<20 + 1, 1<<20 + 511, 1<<20 + 512, 1<<20 + 4095, 1<<20 + 4096, 1<<20 + 4097, 3<<20 + 517, 4 << 20}
	for fsName, root := range reviewRoots(t) {
		f, err := objstore.OpenFile(root, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range sizes {
			for _, shift := range []int{0, 1, 512} {
				name := fmt.Sprintf("o-%d-%d", size, shift)
				data := alignedBuf(size + shift)[shift:]
				randBytes(uint64(size+shift), data)
				want := bytes.Clone(data)
				if _, err := f.Create(ctx, name, data); err != nil {
					t.Fatalf("%s %s: %v", fsName, name, err)
				}
				if got, _, err := f.Get(ctx, name); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("%s %s: Get: %v equal %v", fsName, name, err, bytes.Equal(got, want))
				}
				h, err := f.OpenHandle(ctx, name, false, false)
				if err != nil {
					t.Fatal(err)
				}
				for _, plen := range []int{1 << 20, 2 << 20, 8 << 20} {
					for _, off := range []int64{0, 4096, int64(size) &^ 4095, int64(size), int64(size+4095) &^ 4095, 16 << 20} {
						p := alignedBuf(plen)
						for i := range p {
							p[i] = 0xee
						}
						if err := objstore.ReadAtUncached(h, p, off); err != nil {
							t.Fatalf("%s %s: ReadAtUncached(%d, %d): %v", fsName, name, plen, off, err)
						}
						exp := make([]byte, plen)
						if off < int64(size) {
							copy(exp, want[off:])
						}
						if !bytes.Equal(p, exp) {
							i := 0
							for i < plen && p[i] == exp[i] {
								i++
							}
							t.Fatalf("%s %s: ReadAtUncached(%d, %d): other bytes from %d", fsName, name, plen, off, i)
						}
					}
				}
				h.Close()
			}
		}
	}
}

// TestReviewUncachedSharedHandle: goroutines sharing one handle read it
// cached and uncached at once; the bytes are right and the handle's
// descriptor keeps its flags.
func TestReviewUncachedSharedHandle(t *testing.T) {
	ctx := context.Background()
	f, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	data := alignedBuf(4<<20 - 100)
	randBytes(3, data)
	if _, err := f.Create(ctx, "big", data); err != nil {
		t.Fatal(err)
	}
	h, err := f.OpenHandle(ctx, "big", false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 20 {
				p := alignedBuf(1 << 20)
				off := int64((g+i)%4) << 20
				var err error
				if g%2 == 0 {
					err = objstore.ReadAtUncached(h, p, off)
				} else {
					err = h.ReadAt(p, off)
				}
				if err != nil {
					errs <- err
					return
				}
				exp := make([]byte, len(p))
				copy(exp, data[off:])
				if !bytes.Equal(p, exp) {
					errs <- fmt.Errorf("goroutine %d: other bytes at %d", g, off)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestReviewUncachedAfterReplace: a handle reads the generation it
// opened, also uncached, after the object was replaced and deleted.
func TestReviewUncachedAfterReplace(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	f, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	old := alignedBuf(2 << 20)
	randBytes(4, old)
	if _, err := f.Create(ctx, "o", old); err != nil {
		t.Fatal(err)
	}
	gen := generationFile(t, root, "o")
	h, err := f.OpenHandle(ctx, "o", false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nw := alignedBuf(2 << 20)
	randBytes(5, nw)
	if _, err := f.Put(ctx, "o", nw); err != nil {
		t.Fatal(err)
	}
	if err := f.Delete(ctx, "o"); err != nil {
		t.Fatal(err)
	}
	os.Remove(gen)
	if _, err := os.Stat(gen); err == nil {
		t.Fatal("generation still there")
	}
	p := alignedBuf(2 << 20)
	if err := objstore.ReadAtUncached(h, p, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, old) {
		t.Fatal("ReadAtUncached after replace and delete: other bytes")
	}
}

// TestReviewUncachedAfterCachedWrite: a writable handle's writes (in the
// page cache, not synced) read back through ReadAtUncached, also where
// they extended the object.
func TestReviewUncachedAfterCachedWrite(t *testing.T) {
	ctx := context.Background()
	f, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	data := alignedBuf(2<<20 + 100)
	randBytes(8, data)
	if _, err := f.Create(ctx, "o", data); err != nil {
		t.Fatal(err)
	}
	h, err := f.OpenHandle(ctx, "o", false, true)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	want := make([]byte, 4<<20)
	copy(want, data)
	patch := bytes.Repeat([]byte{0x5a}, 10000)
	for _, off := range []int{100, 1<<20 - 5000, 2<<20 + 50, 3 << 20} {
		if err := h.WriteAt(patch, int64(off)); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], patch)
		p := alignedBuf(4 << 20)
		if err := objstore.ReadAtUncached(h, p, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, want) {
			t.Fatalf("after a cached write at %d: ReadAtUncached reads other bytes", off)
		}
	}
}

// TestReviewUncachedConcurrentClose: a Handle is safe for concurrent
// use; a ReadAtUncached that races a Close either reads the object or
// fails, like ReadAt (run with -race).
func TestReviewUncachedConcurrentClose(t *testing.T) {
	ctx := context.Background()
	f := openFileStore(t)
	data := createRandom(t, f, "o", 9)
	for _, uncached := range []bool{false, true} {
		for range 20 {
			h, err := f.OpenHandle(ctx, "o", false, false)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error)
			p := alignedBuf(1 << 20)
			go func() {
				if uncached {
					done <- objstore.ReadAtUncached(h, p, 0)
				} else {
					done <- h.ReadAt(p, 0)
				}
			}()
			h.Close()
			if err := <-done; err == nil && !bytes.Equal(p, data) {
				t.Fatalf("uncached %v: a read racing Close read other bytes", uncached)
			}
		}
	}
}

// TestReviewUncachedCloseThenOpen: a ReadAtUncached racing a Close of
// its handle, while another object is opened, never reads that other
// object's bytes (ReadAt cannot: it holds the descriptor while it reads).
func TestReviewUncachedCloseThenOpen(t *testing.T) {
	ctx := context.Background()
	f := openFileStore(t)
	createRandom(t, f, "a", 10)
	b := createRandom(t, f, "b", 11)
	p := alignedBuf(1 << 20)
	for i := range 1000 { // (the race showed within 63-109 tries)
		ha, err := f.OpenHandle(ctx, "a", false, false)
		if err != nil {
			t.Fatal(err)
		}
		start, done := make(chan struct{}), make(chan error)
		go func() {
			close(start)
			done <- objstore.ReadAtUncached(ha, p, 0)
		}()
		<-start
		ha.Close()
		hb, err := f.OpenHandle(ctx, "b", false, false)
		if err != nil {
			t.Fatal(err)
		}
		err = <-done
		hb.Close()
		if err == nil && bytes.Equal(p, b) {
			t.Fatalf("try %d: ReadAtUncached of a handle on a, closed meanwhile, returned b's bytes", i)
		}
	}
}

// createRandom creates name in f with 1 MiB of random bytes (aligned in
// memory) from seed, and returns them.
func createRandom(t *testing.T, f *objstore.File, name string, seed uint64) []byte {
	t.Helper()
	data := alignedBuf(1 << 20)
	randBytes(seed, data)
	if _, err := f.Create(context.Background(), name, data); err != nil {
		t.Fatal(err)
	}
	return data
}

// openFileStore opens a file store in a new temporary directory.
func openFileStore(t *testing.T) *objstore.File {
	t.Helper()
	f, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
