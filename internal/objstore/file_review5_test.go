package objstore_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sync"
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

// TestFileLateSealOnLaterDirectory: a collection reads a deleted object's
// directory (tombstone t) and stalls before sealing it; another removes
// the directory meanwhile. A creator that prepared its directory before
// the deleted one's life (numbered below t) and stalled before renaming it
// into place (the store's documented window) installs it now and creates
// the object: acknowledged. The stalled collection then links its seal at
// t+1, which is free in the new directory and above its newest entry, and
// finds t absent: its seal lost. The object must still read as created,
// not absent behind a seal that nobody will move for an hour (after which
// a listing would remove the directory as deleted).
func TestFileLateSealOnLaterDirectory(t *testing.T) {
	ctx := context.Background()
	root, a, b := twoFileStores(t)
	c, err := objstore.OpenFile(root, false)
	if err != nil {
		t.Fatal(err)
	}
	// An object next to x keeps x's parent directories.
	if _, err := a.Create(ctx, sameFan(t, "x"), []byte("n")); err != nil {
		t.Fatal(err)
	}
	prepared, goOn, created := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	var once sync.Once
	objstore.SetFileHooks(c, objstore.FileHooks{AfterPrepare: func(string) {
		once.Do(func() {
			close(prepared)
			<-goOn
		})
	}})
	go func() {
		_, err := c.Create(ctx, "x", []byte("live"))
		created <- err
	}()
	<-prepared
	time.Sleep(10 * time.Millisecond) // b's directory is prepared a clock tick after c's
	// b's deletes leave the tombstone to a listing.
	objstore.SetFileHooks(b, objstore.FileHooks{Now: func(int64) int64 { return 1 }})
	if _, err := b.Create(ctx, "x", []byte("0")); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	resume := pausedCollection(t, root)
	later(a)
	if err := a.List(ctx, "x", func(in objstore.Info) error { return fmt.Errorf("listed %s", in.Name) }); err != nil {
		t.Fatal(err)
	}
	close(goOn)
	if err := <-created; err != nil {
		t.Fatalf("the stalled create: %v", err)
	}
	resume()
	if got, _, err := b.Get(ctx, "x"); err != nil || string(got) != "live" {
		ents, _ := os.ReadDir(filepath.Join(root, objectDirOf(t, "x")))
		var links []string
		for _, e := range ents {
			to, _ := os.Readlink(filepath.Join(root, objectDirOf(t, "x"), e.Name()))
			links = append(links, e.Name()+"->"+to)
		}
		t.Fatalf("after a create that succeeded: %q, %v, want \"live\" (its directory holds %v)", got, err, links)
	}
}

// sameFan returns a name other than name in the same fan-out directory.
func sameFan(t *testing.T, name string) string {
	fan := func(n string) uint32 {
		h := fnv.New32a()
		h.Write([]byte(n))
		return h.Sum32() & 0xff
	}
	for i := 0; ; i++ {
		if n := fmt.Sprintf("n%d", i); fan(n) == fan(name) {
			return n
		}
	}
}

// objectDirOf returns the directory of the top-level object name, relative
// to the store's root.
func objectDirOf(t *testing.T, name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	return filepath.Join("obj", fmt.Sprintf("@%02x", h.Sum32()&0xff), name)
}

// TestFileLateLinkInRecreatedDirectory: a write lists a deleted object
// (its tombstone t newest) and stalls before linking; meanwhile a
// collection seals and moves the directory and another host creates the
// object again in a new directory. The write then links t+1 at the path,
// in the new directory, below its base: nobody reads it there. A Put
// finds its base gone and starts over on the new object; a Create answers
// ErrExists; one that stalled past half the prune age answers an unknown
// outcome (ErrTimeout) and leaves its entry. In every case the object
// reads as the other host created it, or as the Put wrote it after.
func TestFileLateLinkInRecreatedDirectory(t *testing.T) {
	for _, tc := range []struct {
		op    string
		stall bool
	}{{"put", false}, {"create", false}, {"put", true}, {"create", true}} {
		ctx := context.Background()
		root, a, b := deletedX(t)
		c, err := objstore.OpenFile(root, false)
		if err != nil {
			t.Fatal(err)
		}
		later(c)
		if tc.stall {
			a.SetPruneAge(0)
		}
		var once sync.Once
		objstore.SetFileHooks(a, objstore.FileHooks{BeforeInstall: func(string) {
			once.Do(func() {
				if err := c.List(ctx, "", func(in objstore.Info) error { return fmt.Errorf("listed %s", in.Name) }); err != nil {
					t.Error(err)
				}
				if _, err := os.Stat(filepath.Join(root, objectDirOf(t, "x"))); !os.IsNotExist(err) {
					t.Errorf("the deleted directory after a listing: %v", err)
				}
				if _, err := b.Create(ctx, "x", []byte("c")); err != nil {
					t.Error(err)
				}
			})
		}})
		var err2 error
		if tc.op == "put" {
			_, err2 = a.Put(ctx, "x", []byte("w"))
		} else {
			_, err2 = a.Create(ctx, "x", []byte("w"))
		}
		want := "c"
		switch {
		case tc.stall && !errors.Is(err2, objstore.ErrTimeout):
			t.Errorf("%+v: %v, want ErrTimeout", tc, err2)
		case !tc.stall && tc.op == "put" && err2 != nil:
			t.Errorf("%+v: %v", tc, err2)
		case !tc.stall && tc.op == "put":
			want = "w"
		case !tc.stall && !errors.Is(err2, objstore.ErrExists):
			t.Errorf("%+v: %v, want ErrExists", tc, err2)
		}
		if got, _, err := b.Get(ctx, "x"); err != nil || string(got) != want {
			t.Errorf("%+v: reads %q, %v, want %q", tc, got, err, want)
		}
		if ents, _ := os.ReadDir(filepath.Join(root, objectDirOf(t, "x"))); tc.stall && len(ents) != 2 {
			t.Errorf("%+v: the new directory holds %v, want the late entry below the create", tc, ents)
		}
	}
}
