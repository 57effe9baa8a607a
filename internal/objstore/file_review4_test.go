package objstore_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// pausedCollection starts a listing on a new store of root (the
// collector) that stops after it has read the directory of a deleted
// object it is about to remove, and returns a function that lets it go
// on and waits for the listing to end.
func pausedCollection(t *testing.T, root string) (resume func()) {
	t.Helper()
	c, err := objstore.OpenFile(root, false)
	if err != nil {
		t.Fatal(err)
	}
	read, goOn, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	objstore.SetFileHooks(c, objstore.FileHooks{
		Now: func(ns int64) int64 { return ns + int64(time.Minute) },
		BeforeDispose: func(string) {
			once.Do(func() {
				close(read)
				<-goOn
			})
		},
	})
	go func() {
		defer close(done)
		if err := c.List(context.Background(), "", func(objstore.Info) error { return nil }); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-read:
	case <-done:
		t.Fatal("the collection did not come to the deleted object's directory")
	}
	return func() {
		close(goOn)
		<-done
	}
}

// TestFileWriteOnCollectedTombstoneVisible: a Put (a Create) lists a
// deleted object (its tombstone is the newest) and links the generation
// above it just after a collection read the directory to remove it. No
// stall: the write's entry is the newest, and another host reads it and
// swaps on it. The write must not undo what others built on: the swap
// that succeeded is what the object holds afterwards, and the write
// succeeds (a Create must not answer ErrExists for a write that was read).
// (Before: the collection removed the tombstone, and the write, finding
// its base gone, took its entry back and wrote again on the swap's.)
func TestFileWriteOnCollectedTombstoneVisible(t *testing.T) {
	for _, create := range []bool{false, true} {
		ctx := context.Background()
		root, a, b := deletedX(t)
		resume := pausedCollection(t, root)
		var once sync.Once
		var swapV objstore.Version
		var swapErr error
		objstore.SetFileHooks(a, objstore.FileHooks{AfterLink: func(dir string) {
			once.Do(func() {
				resume()
				got, v, err := b.Get(ctx, "x")
				if err != nil || string(got) != "w" {
					t.Errorf("another host reads %q at %d (%v), want the write's \"w\"", got, v, err)
					return
				}
				swapV, swapErr = b.Swap(ctx, "x", []byte("s"), v)
			})
		}})
		var err error
		if create {
			_, err = a.Create(ctx, "x", []byte("w"))
		} else {
			_, err = a.Put(ctx, "x", []byte("w"))
		}
		if err != nil {
			t.Fatalf("create %v: the write whose content was read: %v", create, err)
		}
		if swapErr != nil {
			t.Fatalf("create %v: the swap on the write's version: %v", create, swapErr)
		}
		got, v, err := b.Get(ctx, "x")
		if err != nil || string(got) != "s" || v != swapV {
			t.Fatalf("create %v: after the swap on the write's generation succeeded (version %d): %q at %d (%v), want \"s\"", create, swapV, got, v, err)
		}
	}
}

// TestFileCreateDeleteAroundFreshPutNoABA: a Put lists a deleted object
// (tombstone T); before it links, another host creates the object (T+1,
// whose writer removes T at once: a symbolic-link base) and deletes it
// (T+2, whose writer removes T+1 at once), and a collection reads the
// directory (only T+2) to remove it. The Put links T+1, a name that
// existed, just then; the collection goes on. No stall. A swap by a
// reader that read the deleted content at T+1 must not succeed on the
// Put's content, and the Put succeeds.
// (Before: the collection removed T+2 above the Put's entry, and the
// swap succeeded on it: ABA.)
func TestFileCreateDeleteAroundFreshPutNoABA(t *testing.T) {
	ctx := context.Background()
	root, a, b := deletedX(t)
	var before, after sync.Once
	var readV, swapV objstore.Version
	var swapErr error
	var resume func()
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
				resume = pausedCollection(t, root)
			})
		},
		AfterLink: func(dir string) {
			after.Do(func() {
				resume()
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
	if !errors.Is(swapErr, objstore.ErrConflict) {
		t.Fatalf("the stale swap: %v, want ErrConflict", swapErr)
	}
	if got, v, err := b.Get(ctx, "x"); err != nil || string(got) != "w" || v <= readV {
		t.Fatalf("after the put: %q at %d (%v), want \"w\" above %d", got, v, err, readV)
	}
}

// TestFileStalledWriterKeepsItsEntry: a Put links its generation on the
// object's newest and stalls before its check; meanwhile another host
// reads the Put's content and swaps on it, and a collection removes the
// Put's base as old, just before that swap checks its own base (the
// Put's entry). The stalled Put, finding its base gone, cannot tell its
// win from a loss: it must answer an unknown outcome and leave its
// entry, on which the swap was built. (Before: it removed its entry, the
// swap then found its base gone and took back its own, and the object,
// whose every generation was gone, read as absent.)
func TestFileStalledWriterKeepsItsEntry(t *testing.T) {
	ctx := context.Background()
	root, a, b := twoFileStores(t)
	c, err := objstore.OpenFile(root, false)
	if err != nil {
		t.Fatal(err)
	}
	later(c)
	a.SetPruneAge(0) // every late check is past a's prune age: no sleep
	if _, err := b.Create(ctx, "x", []byte("0")); err != nil {
		t.Fatal(err)
	}
	linked, goOn, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	objstore.SetFileHooks(a, objstore.FileHooks{AfterLink: func(string) {
		once.Do(func() {
			close(linked)
			<-goOn
		})
	}})
	var putErr error
	go func() {
		defer close(done)
		_, putErr = a.Put(ctx, "x", []byte("w"))
	}()
	<-linked
	got, v, err := b.Get(ctx, "x")
	if err != nil || string(got) != "w" {
		t.Fatalf("another host reads %q (%v), want the put's \"w\"", got, err)
	}
	var onceB sync.Once
	objstore.SetFileHooks(b, objstore.FileHooks{AfterLink: func(string) {
		onceB.Do(func() {
			if err := c.List(ctx, "", func(objstore.Info) error { return nil }); err != nil {
				t.Error(err)
			}
			close(goOn)
			<-done
		})
	}})
	swapV, swapErr := b.Swap(ctx, "x", []byte("s"), v)
	if !errors.Is(putErr, objstore.ErrTimeout) {
		t.Errorf("the stalled put whose base went: %v, want an unknown outcome (ErrTimeout)", putErr)
	}
	if swapErr != nil {
		t.Fatalf("the swap on the put's version %d: %v", v, swapErr)
	}
	if got, gv, err := b.Get(ctx, "x"); err != nil || string(got) != "s" || gv != swapV {
		t.Fatalf("after the swap succeeded at %d: %q at %d (%v), want \"s\"", swapV, got, gv, err)
	}
}

// TestFileStaleSeal: a collection that sealed a deleted object's
// directory and crashed before moving it leaves a seal. Until it is an
// hour old writers wait for it (the seal's winner is moving the
// directory) and listings leave it; then it counts as a tombstone: a
// writer creates the object on it, or a listing removes the directory.
func TestFileStaleSeal(t *testing.T) {
	for _, create := range []bool{true, false} {
		ctx := context.Background()
		root, a, b := deletedX(t)
		dir := filepath.Join(root, objectDir(t, root, ""))
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) != 1 {
			t.Fatalf("deleted object's directory: %v (%v), want its tombstone", ents, err)
		}
		n, _ := strconv.ParseUint(ents[0].Name(), 16, 64)
		if err := os.Symlink("gone.crashed", filepath.Join(dir, fmt.Sprintf("%016x", n+1))); err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.Get(ctx, "x"); !objstore.IsNotExist(err) {
			t.Fatalf("get of a sealed object: %v, want ErrNotFound", err)
		}
		later(a)
		if err := a.List(ctx, "", func(in objstore.Info) error { return fmt.Errorf("listed %s", in.Name) }); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err = a.Create(short, "x", []byte("c"))
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("create on a young seal: %v, want to wait for it", err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 2 {
			t.Fatalf("a minute after the seal: %v, want the tombstone and the seal", ents)
		}
		objstore.SetFileHooks(a, objstore.FileHooks{Now: func(ns int64) int64 { return ns + int64(2*time.Hour) }})
		if create {
			if _, err := a.Create(ctx, "x", []byte("c")); err != nil {
				t.Fatalf("create on a stale seal: %v", err)
			}
			if got, _, err := b.Get(ctx, "x"); err != nil || string(got) != "c" {
				t.Fatalf("get = %q, %v", got, err)
			}
			continue
		}
		if err := a.List(ctx, "", func(in objstore.Info) error { return fmt.Errorf("listed %s", in.Name) }); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a stale seal's directory after a listing: %v, want it gone", err)
		}
	}
}

// deletedX returns two file stores on one directory (two hosts) where b
// created and deleted "x"; b's clock never finds anything old enough, so
// that its own deletes leave their tombstone to a listing.
func deletedX(t *testing.T) (root string, a, b *objstore.File) {
	t.Helper()
	root, a, b = twoFileStores(t)
	objstore.SetFileHooks(b, objstore.FileHooks{Now: func(int64) int64 { return 1 }})
	if _, err := b.Create(context.Background(), "x", []byte("0")); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	return root, a, b
}
