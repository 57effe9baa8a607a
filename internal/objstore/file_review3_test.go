package objstore_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileWinnerStalledPastPrune: a swap links its generation, then
// stalls before its check past the prune age while a listing on another
// host collects. Its entry is the newest: the listing must leave its base,
// and the swap must win. (The listing pruned the base; the swap then
// removed its entry and answered ErrConflict, and the object was absent
// though two swaps had succeeded on it. Found by
// TestFileLinearizableUnderStalls.)
func TestFileWinnerStalledPastPrune(t *testing.T) {
	ctx := context.Background()
	_, a, b := twoFileStores(t)
	a.SetPruneAge(0)
	b.SetPruneAge(0)
	v1, err := a.Create(ctx, "x", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := a.Swap(ctx, "x", []byte("2"), v1)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stalled, resume := make(chan struct{}), make(chan struct{})
	objstore.SetFileHooks(a, objstore.FileHooks{AfterLink: func(string) {
		once.Do(func() { close(stalled); <-resume })
	}})
	type result struct {
		v   objstore.Version
		err error
	}
	done := make(chan result)
	go func() {
		v, err := a.Swap(ctx, "x", []byte("3"), v2)
		done <- result{v, err}
	}()
	<-stalled
	if err := b.List(ctx, "", func(objstore.Info) error { return nil }); err != nil {
		t.Fatal(err) // must keep v2, the base of the newest entry
	}
	close(resume)
	r := <-done
	if r.err != nil {
		t.Fatalf("the swap whose entry is the newest answered %v", r.err)
	}
	got, v, err := b.Get(ctx, "x")
	if err != nil || string(got) != "3" || v != r.v {
		t.Fatalf("after the swap: %q at %d (%v), want \"3\" at %d", got, v, err, r.v)
	}
}

// TestFileSupersededStalledWriterUnknown: as above, but another writer
// builds on the stalled swap's entry before it checks. The stalled swap
// cannot tell its win from a loss: it must not answer ErrConflict (which
// says it changed nothing) nor retry; the object keeps the later write.
func TestFileSupersededStalledWriterUnknown(t *testing.T) {
	ctx := context.Background()
	_, a, b := twoFileStores(t)
	a.SetPruneAge(0)
	b.SetPruneAge(0)
	if _, err := a.Create(ctx, "x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stalled, resume := make(chan struct{}), make(chan struct{})
	objstore.SetFileHooks(a, objstore.FileHooks{AfterLink: func(string) {
		once.Do(func() { close(stalled); <-resume })
	}})
	done := make(chan error)
	go func() {
		done <- a.Delete(ctx, "x")
	}()
	<-stalled
	// The tombstone is the object's state now: another host creates the
	// object again on it, which prunes the tombstone's base.
	v3, err := b.Create(ctx, "x", []byte("3"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.List(ctx, "", func(objstore.Info) error { return nil }); err != nil {
		t.Fatal(err)
	}
	close(resume)
	err = <-done
	if err == nil || errors.Is(err, objstore.ErrConflict) || errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("the stalled delete answered %v, want an error that leaves the outcome unknown", err)
	}
	got, v, err := b.Get(ctx, "x")
	if err != nil || string(got) != "3" || v != v3 {
		t.Fatalf("after the stalled delete: %q at %d (%v), want the later create's \"3\" at %d", got, v, err, v3)
	}
}

// TestFileWriteDeletedBeforeItsFsync: a create wins (its check passed),
// then, before it fsyncs the directory, another host deletes the object
// and the directory goes. The create happened, then the delete: it must
// not run again (it did, and the object came back after the delete).
func TestFileWriteDeletedBeforeItsFsync(t *testing.T) {
	ctx := context.Background()
	_, a, b := twoFileStores(t)
	a.SetPruneAge(0)
	b.SetPruneAge(0)
	var once sync.Once
	objstore.SetFileHooks(a, objstore.FileHooks{SyncDir: func(dir string) {
		if filepath.Base(dir) != "x" {
			return
		}
		once.Do(func() {
			time.Sleep(20 * time.Millisecond) // the tombstone's number falls below the server's time
			if err := b.Delete(ctx, "x"); err != nil {
				t.Error(err)
			}
			b.List(ctx, "", func(objstore.Info) error { return nil }) // removes the directory if the delete did not
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the directory is still there (%v): the test needs it gone", err)
			}
		})
	}})
	if _, err := a.Create(ctx, "x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Get(ctx, "x"); !objstore.IsNotExist(err) {
		t.Fatalf("after a create and a delete that came after it: Get = %v, want not found", err)
	}
}
