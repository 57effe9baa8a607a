package objstore_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileFailedMoveLeavesNoSeal: a Delete seals the deleted object's
// directory, and the rename that moves it away fails (here tmp/ is
// missing for a moment; on a real store: no space left to grow tmp/, an
// I/O error, an NFS timeout). The Delete has happened and succeeds; the
// name must stay usable: a Create right after must not wait an hour for
// a seal whose winner is no longer moving anything.
func TestFileFailedMoveLeavesNoSeal(t *testing.T) {
	ctx := context.Background()
	root, a, b := twoFileStores(t)
	if _, err := a.Create(ctx, "x", []byte("0")); err != nil {
		t.Fatal(err)
	}
	tmp, away := filepath.Join(root, "tmp"), filepath.Join(root, "tmp.away")
	moved := false
	objstore.SetFileHooks(a, objstore.FileHooks{
		// The deleter's own clock a minute ahead: it removes the
		// directory at once, whatever the clock's tick.
		Now: func(ns int64) int64 { return ns + int64(time.Minute) },
		BeforeDispose: func(string) {
			if !moved {
				moved = true
				if err := os.Rename(tmp, away); err != nil {
					t.Error(err)
				}
			}
		},
	})
	err := a.Delete(ctx, "x")
	if !moved {
		t.Fatal("the delete did not come to remove the directory")
	}
	if err := os.Rename(away, tmp); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := b.Create(short, "x", []byte("c")); err != nil {
		t.Fatalf("create after a delete whose directory could not be moved: %v", err)
	}
	if got, _, err := a.Get(ctx, "x"); err != nil || string(got) != "c" {
		t.Fatalf("get = %q, %v", got, err)
	}
}

// TestFileDeleteFsyncs: a Delete that removes the object's directory at
// once fsyncs the directory once (its tombstone) and its parent once (the
// directory moved away); the generations it removes below its durable
// tombstone need no fsync of their own: before the move is durable the
// tombstone above them is, and after it nobody reads them.
func TestFileDeleteFsyncs(t *testing.T) {
	ctx := context.Background()
	root, a, _ := twoFileStores(t)
	if _, err := a.Create(ctx, "x", []byte("0")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, objectDir(t, root, ""))
	syncs := map[string]int{}
	objstore.SetFileHooks(a, objstore.FileHooks{
		Now:     func(ns int64) int64 { return ns + int64(time.Minute) },
		SyncDir: func(d string) { syncs[d]++ },
	})
	if err := a.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the deleted object's directory: %v, want it removed at once", err)
	}
	if syncs[dir] != 1 || syncs[filepath.Dir(dir)] != 1 || len(syncs) != 2 {
		t.Fatalf("a delete fsynced %v, want the object's directory and its parent once each", syncs)
	}
}
