package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// lazyStore opens a file store whose directory fsyncs are recorded.
func lazyStore(t *testing.T) (*objstore.File, func() []string) {
	t.Helper()
	dir := t.TempDir()
	f, err := objstore.OpenFile(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var synced []string
	objstore.SetFileHooks(f, objstore.FileHooks{SyncDir: func(d string) {
		mu.Lock()
		defer mu.Unlock()
		rel, _ := filepath.Rel(dir, d)
		synced = append(synced, filepath.ToSlash(rel))
	}})
	return f, func() []string {
		mu.Lock()
		defer mu.Unlock()
		s := synced
		synced = nil
		return s
	}
}

// TestFileLazyCreateSyncsAtSync: a create through OpenHandleLazy fsyncs
// nothing, and the object's Sync makes it durable: its data, the
// directory that holds its link and the parents of those made for it.
// (A Sync that drops the lazy create's directories fails this.)
func TestFileLazyCreateSyncsAtSync(t *testing.T) {
	ctx := context.Background()
	f, synced := lazyStore(t)
	const name = "vol/0123/d/1-5"
	before := f.Fsyncs()
	h, err := f.OpenHandleLazy(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.WriteAt([]byte("data"), 4096); err != nil {
		t.Fatal(err)
	}
	if n := f.Fsyncs() - before; n != 0 {
		t.Fatalf("a lazy create and a write made %d fsyncs (directories: %v), want 0", n, synced())
	}
	if got := f.LazyPending(); len(got) != 1 || got[0] != name {
		t.Fatalf("pending %v, want [%s]", got, name)
	}
	// Visible at once, to this process and any other.
	other, err := objstore.OpenFile(f.Root(), false)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4)
	if err := other.ReadAt(ctx, name, p, 4096); err != nil || string(p) != "data" {
		t.Fatalf("read %q, %v", p, err)
	}
	if err := h.Sync(); err != nil {
		t.Fatal(err)
	}
	// The object's directory (its link), and the parent of each
	// directory made for it (the object's, renamed into place; its
	// fan-out directory; d/, 0123/ and vol/, made by MkdirAll).
	dirs := map[string]bool{}
	for _, d := range synced() {
		if strings.HasPrefix(d, "obj/vol/0123/d/@") {
			d = "obj/vol/0123/d/@xx" + d[len("obj/vol/0123/d/@xx"):]
		}
		dirs[d] = true
	}
	for _, w := range []string{"obj/vol/0123/d/@xx/1-5", "obj/vol/0123/d/@xx", "obj/vol/0123/d", "obj/vol/0123", "obj/vol", "obj"} {
		if !dirs[w] {
			t.Errorf("Sync fsynced directories %v, not %s", dirs, w)
		}
	}
	if got := f.LazyPending(); len(got) != 0 {
		t.Fatalf("pending %v after Sync", got)
	}
	h.Close()
	// Nothing left to sync: a second Sync fsyncs the data only.
	before = f.Fsyncs()
	if err := f.Sync(ctx, name); err != nil {
		t.Fatal(err)
	}
	if n := f.Fsyncs() - before; n != 1 || len(synced()) != 0 {
		t.Fatalf("a second Sync made %d fsyncs", n)
	}
}

// TestFileLazyCreateSyncByName: the handle that created the object may
// be closed (a volume's handle cache evicts it) before the flush: a Sync
// by name, or through another handle, makes it durable all the same.
func TestFileLazyCreateSyncByName(t *testing.T) {
	ctx := context.Background()
	for _, how := range []string{"name", "handle"} {
		t.Run(how, func(t *testing.T) {
			f, synced := lazyStore(t)
			const name = "vol/0123/d/1-6"
			h, err := f.OpenHandleLazy(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			h.WriteAt([]byte("x"), 0)
			h.Close()
			if how == "name" {
				err = f.Sync(ctx, name)
			} else {
				h2, err2 := f.OpenHandle(ctx, name, false, false)
				if err2 != nil {
					t.Fatal(err2)
				}
				err = h2.Sync()
				h2.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(f.LazyPending()) != 0 || len(synced()) == 0 {
				t.Fatalf("pending %v after Sync by %s", f.LazyPending(), how)
			}
		})
	}
}

// TestFileLazyCreateExisting: OpenHandleLazy of an object that exists
// opens it; nothing is pending. A durable write of a pending name (a
// delete) leaves nothing pending either.
func TestFileLazyCreateExisting(t *testing.T) {
	ctx := context.Background()
	f, _ := lazyStore(t)
	if _, err := f.Put(ctx, "a/b", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	h, err := f.OpenHandleLazy(ctx, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 3)
	if err := h.ReadAt(p, 0); err != nil || string(p) != "abc" {
		t.Fatalf("read %q, %v", p, err)
	}
	h.Close()
	if len(f.LazyPending()) != 0 {
		t.Fatalf("pending %v", f.LazyPending())
	}
	h, err = f.OpenHandleLazy(ctx, "a/c")
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if err := f.Delete(ctx, "a/c"); err != nil {
		t.Fatal(err)
	}
	if len(f.LazyPending()) != 0 {
		t.Fatalf("pending %v after a delete", f.LazyPending())
	}
	if err := f.Sync(ctx, "a/c"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Sync of a deleted object: %v", err)
	}
}

// TestFileCrashLazy: what CrashLazy leaves of a pending object is absent
// or an object whose bytes are the written ones or zeros; a synced one is
// untouched; and the store opens and lists.
func TestFileCrashLazy(t *testing.T) {
	ctx := context.Background()
	seen := map[string]bool{}
	for seed := uint64(0); seed < 16; seed++ {
		f, _ := lazyStore(t)
		data := bytes.Repeat([]byte("z"), 100)
		for i, name := range []string{"vol/1/d/1-1", "vol/1/d/1-2", "vol/1/d/1-3", "vol/1/d/1-4"} {
			h, err := f.OpenHandleLazy(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			h.WriteAt(data, 10)
			if i == 0 {
				h.Sync()
			}
			h.Close()
		}
		if err := f.CrashLazy(rand.New(rand.NewPCG(seed, 1))); err != nil {
			t.Fatal(err)
		}
		g, err := objstore.OpenFile(f.Root(), false)
		if err != nil {
			t.Fatal(err)
		}
		for i, name := range []string{"vol/1/d/1-1", "vol/1/d/1-2", "vol/1/d/1-3", "vol/1/d/1-4"} {
			p := make([]byte, 110)
			err := g.ReadAt(ctx, name, p, 0)
			switch {
			case objstore.IsNotExist(err) && i > 0:
				seen["absent"] = true
				// What the crash left at the name (nothing, a base,
				// an empty directory) takes a create.
				if _, err := g.Create(ctx, name, []byte("again")); err != nil {
					t.Fatalf("seed %d: create %s again: %v", seed, name, err)
				}
				if b, _, err := g.Get(ctx, name); err != nil || string(b) != "again" {
					t.Fatalf("seed %d: %s created again reads %q, %v", seed, name, b, err)
				}
			case err != nil:
				t.Fatalf("seed %d: %s: %v", seed, name, err)
			case bytes.Equal(p[10:], data):
				seen["whole"] = true
			case bytes.Count(p, []byte{0}) == len(p) && i > 0:
				seen["zeros"] = true
			default:
				t.Fatalf("seed %d: %s reads %q", seed, name, p)
			}
		}
		if err := g.List(ctx, "", func(objstore.Info) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("crash images seen: %v, want absent, whole and zeros", seen)
	}
}

// TestFileLazyCreateSyncRacesCreate: a Sync of an object whose lazy
// create is linked but not yet noted as pending (another goroutine wrote
// the object by name meanwhile) makes the object's link durable before it
// returns nil: the Syncer contract covers every WriteAt that completed
// before it. It returned nil having fsynced no directory, so a crash
// then lost the object and the write Sync had reported durable.
func TestFileLazyCreateSyncRacesCreate(t *testing.T) {
	ctx := context.Background()
	f, _ := lazyStore(t)
	const name = "vol/0123/d/1-7"
	var once sync.Once
	var inHook []string
	var hookErr error
	var mu sync.Mutex
	var dirs []string
	objstore.SetFileHooks(f, objstore.FileHooks{
		SyncDir: func(d string) {
			mu.Lock()
			defer mu.Unlock()
			rel, _ := filepath.Rel(f.Root(), d)
			dirs = append(dirs, filepath.ToSlash(rel))
		},
		AfterLink: func(dir string) {
			once.Do(func() {
				mu.Lock()
				dirs = nil
				mu.Unlock()
				if err := f.WriteAt(ctx, name, []byte("data"), 0); err != nil {
					hookErr = err
					return
				}
				hookErr = f.Sync(ctx, name)
				mu.Lock()
				inHook = dirs
				mu.Unlock()
			})
		},
	})
	h, err := f.OpenHandleLazy(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if hookErr != nil {
		t.Fatal(hookErr)
	}
	found := false
	for _, d := range inHook {
		found = found || strings.HasPrefix(d, "obj/vol/0123/d/@") && strings.HasSuffix(d, "/1-7")
	}
	if !found {
		t.Fatalf("a Sync after a write to an object whose lazy create was in flight returned nil having fsynced %v, not the object's directory", inHook)
	}
	// The create's next Sync still makes the rest of its path durable.
	if err := f.Sync(ctx, name); err != nil {
		t.Fatal(err)
	}
	if p := f.LazyPending(); len(p) != 0 {
		t.Fatalf("pending %v after a Sync", p)
	}
}
