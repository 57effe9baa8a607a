package objstore_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileWriteOnRemovedTombstoneVisible: a Put lists a deleted object
// (its tombstone is the newest) and links the generation above it just
// after a collection read the directory and just before it removed the
// tombstone, as the last entry. No stall: the Put's entry is the newest,
// and another host reads it and swaps on it. The Put, finding its base
// gone, must not undo what others built on: the swap that succeeded is
// what the object holds afterwards.
//
// Not fixed (skipped): the Put retracts its entry and links again on top
// of the swap's, so the swap that succeeded is lost.
func TestFileWriteOnRemovedTombstoneVisible(t *testing.T) {
	t.Skip("known defect: the file store's collection removes a newest tombstone after reading the directory; a fresh writer linked on it meanwhile retracts a visible entry and writes again")
	ctx := context.Background()
	_, a, b := twoFileStores(t)
	// b's listings never find anything old enough, so that the tombstone
	// stays until this test removes it as the collection would.
	objstore.SetFileHooks(b, objstore.FileHooks{Now: func(int64) int64 { return 1 }})
	if _, err := b.Create(ctx, "x", []byte("0")); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var swapV objstore.Version
	var swapErr error
	objstore.SetFileHooks(a, objstore.FileHooks{AfterLink: func(dir string) {
		once.Do(func() {
			// The collection read the directory before the link (only
			// the tombstone) and removes the tombstone now.
			ents, err := os.ReadDir(dir)
			if err != nil || len(ents) != 2 {
				t.Errorf("directory after the put's link: %v (%v), want the tombstone and the put's entry", ents, err)
				return
			}
			if err := os.Remove(filepath.Join(dir, ents[0].Name())); err != nil {
				t.Error(err)
				return
			}
			got, v, err := b.Get(ctx, "x")
			if err != nil || string(got) != "w" {
				t.Errorf("another host reads %q at %d (%v), want the put's \"w\"", got, v, err)
				return
			}
			swapV, swapErr = b.Swap(ctx, "x", []byte("s"), v)
		})
	}})
	if _, err := a.Put(ctx, "x", []byte("w")); err != nil {
		t.Fatal(err)
	}
	if swapErr != nil {
		t.Fatalf("the swap on the put's version: %v", swapErr)
	}
	got, v, err := b.Get(ctx, "x")
	if err != nil || string(got) != "s" || v < swapV {
		t.Fatalf("after the swap on the put's generation succeeded (version %d): %q at %d (%v), want \"s\"", swapV, got, v, err)
	}
}

// TestFileCreateDeleteAroundFreshPutNoABA: a Put lists a deleted object
// (tombstone T); before it links, another host creates the object (T+1,
// whose writer removes T at once: a symbolic-link base) and deletes it
// (T+2, whose writer removes T+1 at once). The Put links T+1, a name that
// existed, just after a collection read the directory (only T+2) and
// before it removed T+2. No stall. A swap by a reader that read the
// deleted content at T+1 must not succeed on the Put's content.
//
// Not fixed (skipped): the swap succeeds on the Put's content (ABA).
func TestFileCreateDeleteAroundFreshPutNoABA(t *testing.T) {
	t.Skip("known defect: a generation name freed at once (a symbolic-link base, a tombstone's base) is linked again by a fresh writer; when the collection then removes the tombstone above it, a stale version matches it")
	ctx := context.Background()
	_, a, b := twoFileStores(t)
	objstore.SetFileHooks(b, objstore.FileHooks{Now: func(int64) int64 { return 1 }})
	if _, err := b.Create(ctx, "x", []byte("0")); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	var before, after sync.Once
	var readV, swapV objstore.Version
	var swapErr error
	objstore.SetFileHooks(a, objstore.FileHooks{
		BeforeInstall: func(string) {
			before.Do(func() {
				if _, err := b.Put(ctx, "x", []byte("y")); err != nil {
					t.Error(err)
				}
				got, v, err := b.Get(ctx, "x")
				if err != nil || string(got) != "y" {
					t.Errorf("read %q (%v)", got, err)
				}
				readV = v
				if err := b.Delete(ctx, "x"); err != nil {
					t.Error(err)
				}
			})
		},
		AfterLink: func(dir string) {
			after.Do(func() {
				ents, err := os.ReadDir(dir)
				if err != nil || len(ents) != 2 {
					t.Errorf("directory after the put's link: %v (%v)", ents, err)
					return
				}
				// The collection read [T+2] before the link; it removes
				// the tombstone now.
				if err := os.Remove(filepath.Join(dir, ents[1].Name())); err != nil {
					t.Error(err)
					return
				}
				swapV, swapErr = b.Swap(ctx, "x", []byte("s"), readV)
			})
		},
	})
	if _, err := a.Put(ctx, "x", []byte("w")); err != nil {
		t.Fatal(err)
	}
	if swapErr == nil {
		t.Fatalf("a swap on version %d, read before a delete that succeeded, succeeded (version %d)", readV, swapV)
	}
}
