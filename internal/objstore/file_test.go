package objstore_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// twoFileStores opens one new file store twice, as two hosts sharing it.
func twoFileStores(t *testing.T) (root string, a, b *objstore.File) {
	t.Helper()
	root = t.TempDir()
	a, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	b, err = objstore.OpenFile(root, false)
	if err != nil {
		t.Fatal(err)
	}
	return root, a, b
}

// later makes f see the file server's clock a minute ahead, so that what
// it has written counts as old enough to prune.
func later(f *objstore.File) {
	objstore.SetFileHooks(f, objstore.FileHooks{Now: func(ns int64) int64 { return ns + int64(time.Minute) }})
}

// TestFileStaleCreateLoses: a creator whose view of the object is older
// than the prune age (it listed, then stalled) must not win against the
// creator that won meanwhile, whose later generations have been pruned
// (issue 10 #3). pauseAt picks which of the stalled creator's installs
// steps stalls: the first (it saw the object absent) or the second (it
// saw the empty directory's base entry).
func TestFileStaleCreateLoses(t *testing.T) {
	ctx := context.Background()
	for _, op := range []string{"create", "swap0"} {
		for _, pauseAt := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/pause%d", op, pauseAt), func(t *testing.T) {
				_, a, b := twoFileStores(t)
				paused, resume := make(chan struct{}), make(chan struct{})
				var mu sync.Mutex
				calls := 0
				objstore.SetFileHooks(a, objstore.FileHooks{BeforeInstall: func(string) {
					mu.Lock()
					calls++
					n := calls
					mu.Unlock()
					if n == pauseAt {
						close(paused)
						<-resume
					}
				}})
				errc := make(chan error, 1)
				go func() {
					var err error
					if op == "create" {
						_, err = a.Create(ctx, "gc/lock", []byte("stalled"))
					} else {
						_, err = a.Swap(ctx, "gc/lock", []byte("stalled"), 0)
					}
					errc <- err
				}()
				select {
				case <-paused:
				case err := <-errc:
					t.Fatalf("the creator finished without stalling at install step %d: %v", pauseAt, err)
				}
				if _, err := b.Create(ctx, "gc/lock", []byte("winner 1")); err != nil {
					t.Fatal(err)
				}
				for i := 2; i <= 3; i++ {
					if _, err := b.Put(ctx, "gc/lock", []byte(fmt.Sprintf("winner %d", i))); err != nil {
						t.Fatal(err)
					}
				}
				later(b)
				v, err := b.Put(ctx, "gc/lock", []byte("winner 4")) // prunes the older generations
				if err != nil {
					t.Fatal(err)
				}
				close(resume)
				err = <-errc
				want := objstore.ErrExists
				if op == "swap0" {
					want = objstore.ErrConflict
				}
				if !errors.Is(err, want) {
					t.Fatalf("stalled creator: %v, want %v (two creators both told they won)", err, want)
				}
				got, gv, err := b.Get(ctx, "gc/lock")
				if err != nil || string(got) != "winner 4" || gv != v {
					t.Fatalf("object after the race: %q v%d %v, want winner 4 v%d", got, gv, err, v)
				}
			})
		}
	}
}

// TestFileStaleSwapLoses: a Swap whose base generation was pruned (and
// its successor with it) while it stalled is a conflict, not a win.
func TestFileStaleSwapLoses(t *testing.T) {
	ctx := context.Background()
	_, a, b := twoFileStores(t)
	later(b)
	v1, err := b.Put(ctx, "x", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	objstore.SetFileHooks(a, objstore.FileHooks{BeforeInstall: func(string) {
		once.Do(func() { close(paused); <-resume })
	}})
	errc := make(chan error, 1)
	go func() { _, err := a.Swap(ctx, "x", []byte("stale"), v1); errc <- err }()
	<-paused
	v := v1
	for i := 2; i <= 4; i++ {
		if v, err = b.Swap(ctx, "x", []byte(fmt.Sprint(i)), v); err != nil {
			t.Fatal(err)
		}
	}
	if v, err = b.Swap(ctx, "x", []byte("5"), v); err != nil {
		t.Fatal(err)
	}
	close(resume)
	if err := <-errc; !errors.Is(err, objstore.ErrConflict) {
		t.Fatalf("stale swap: %v, want a conflict", err)
	}
	if got, gv, _ := b.Get(ctx, "x"); string(got) != "5" || gv != v {
		t.Fatalf("object %q v%d, want 5 v%d", got, gv, v)
	}
}

// usage walks root like du: every file and directory, with the blocks
// each occupies, and the directories found.
func usage(t *testing.T, root string) (bytes int64, dirs []string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		in, err := e.Info()
		if err != nil {
			return err
		}
		bytes += in.Sys().(*syscall.Stat_t).Blocks * 512
		if e.IsDir() {
			rel, _ := filepath.Rel(root, p)
			dirs = append(dirs, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(dirs)
	return bytes, dirs
}

// TestFileDeleteFreesSpace: after deleting every object, the store's
// directory uses what an empty store does, measured on disk, and no
// directory is left beyond the store's skeleton (issue 10 #12).
func TestFileDeleteFreesSpace(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	empty, skeleton := usage(t, root)
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	var names []string
	for i := 0; i < 60; i++ {
		names = append(names, fmt.Sprintf("vol/%02x/d/1-%x", i%4, i), fmt.Sprintf("blk/%04x", i*977), fmt.Sprintf("gc/holds/h%d", i))
	}
	names = append(names, "catalog", "vol/00/head")
	for i, n := range names {
		if _, err := s.Create(ctx, n, data); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 { // several generations
			for g := 0; g < 3; g++ {
				if _, err := s.Put(ctx, n, data[:len(data)-g]); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	full, _ := usage(t, root)
	if full < int64(len(names)*len(data)) {
		t.Fatalf("usage %d B with %d objects of %d B: the measure is wrong", full, len(names), len(data))
	}
	for _, n := range names {
		if err := s.Delete(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	// What was written too recently to collect at once goes at the
	// next listing (the collector lists everything) once old enough.
	later(s)
	if err := s.List(ctx, "", func(in objstore.Info) error {
		return fmt.Errorf("deleted object %s listed", in.Name)
	}); err != nil {
		t.Fatal(err)
	}
	after, dirs := usage(t, root)
	if after > empty+16<<10 {
		t.Errorf("after deleting everything the store uses %d B on disk (%d B full, %d B empty)", after, full, empty)
	}
	if strings.Join(dirs, " ") != strings.Join(skeleton, " ") {
		t.Errorf("directories left: %v, want only %v", dirs, skeleton)
	}
}

// syncRecorder counts directory fsyncs by path relative to root.
type syncRecorder struct {
	mu    sync.Mutex
	root  string
	syncs map[string]int
	// formatSynced: root was synced while FORMAT existed.
	formatSynced bool
}

func recordSyncs(t *testing.T, root string) *syncRecorder {
	r := &syncRecorder{root: root, syncs: map[string]int{}}
	restore := objstore.SetOpenFileHooks(objstore.FileHooks{SyncDir: func(dir string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		rel, _ := filepath.Rel(r.root, dir)
		r.syncs[rel]++
		if rel == "." {
			if _, err := os.Stat(filepath.Join(r.root, "FORMAT")); err == nil {
				r.formatSynced = true
			}
		}
	}})
	t.Cleanup(restore)
	return r
}

func (r *syncRecorder) missing(dirs ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var miss []string
	for _, d := range dirs {
		if r.syncs[d] == 0 {
			miss = append(miss, d)
		}
	}
	return miss
}

// objectDir finds the directory of the one object below root/obj/sub.
func objectDir(t *testing.T, root, sub string) string {
	t.Helper()
	var found string
	filepath.WalkDir(filepath.Join(root, "obj", sub), func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() && strings.HasPrefix(filepath.Base(filepath.Dir(p)), "@") {
			found, _ = filepath.Rel(root, p)
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no object directory below obj/%s", sub)
	}
	return found
}

// TestFileFormatSynced: a new store's FORMAT is durable once OpenFile
// returns: the root is fsynced after FORMAT is there.
func TestFileFormatSynced(t *testing.T) {
	root := t.TempDir()
	r := recordSyncs(t, root)
	if _, err := objstore.OpenFile(root, true); err != nil {
		t.Fatal(err)
	}
	if !r.formatSynced {
		t.Fatal("FORMAT written but the root directory not fsynced after it")
	}
}

// TestFileSyncsDirectoriesItFinds: a process that writes into, or
// answers ErrExists from, an object directory another process made fsyncs
// the parents of that directory and of its ancestors below the root: the
// other process may have crashed before it did.
func TestFileSyncsDirectoriesItFinds(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	a, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, "p/q/x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	obj := objectDir(t, root, "p/q")
	fan := filepath.Dir(obj)
	ancestors := []string{"obj", "obj/p", "obj/p/q", fan}

	r := recordSyncs(t, root)
	b, err := objstore.OpenFile(root, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "p/q/x", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if miss := r.missing(ancestors...); len(miss) > 0 {
		t.Errorf("Put into another process's directory did not fsync %v", miss)
	}

	r = recordSyncs(t, root)
	c, err := objstore.OpenFile(root, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, "p/q/x", []byte("3")); !errors.Is(err, objstore.ErrExists) {
		t.Fatalf("Create of an existing object: %v", err)
	}
	if miss := r.missing(append(ancestors, obj)...); len(miss) > 0 {
		t.Errorf("Create answered ErrExists from another process's object without fsyncing %v", miss)
	}
}

// laterBy makes f see the file server's clock d ahead.
func laterBy(f *objstore.File, d time.Duration) {
	objstore.SetFileHooks(f, objstore.FileHooks{Now: func(ns int64) int64 { return ns + int64(d) }})
}

// TestFileListCleansTmp: what crashed writers left in tmp/ (temporary
// files, prepared directories) goes once over an hour old, also in a
// process that keeps the store open: a listing cleans, not only an open.
func TestFileListCleansTmp(t *testing.T) {
	root := t.TempDir()
	s, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tmp", "0123abcd"), make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "tmp", "4567cdef.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("new.x", filepath.Join(root, "tmp", "4567cdef.d", "0000000100000000")); err != nil {
		t.Fatal(err)
	}
	laterBy(s, 2*time.Hour)
	if err := s.List(context.Background(), "", func(objstore.Info) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp/ still holds %d entries (%s...) two hours later", len(ents), ents[0].Name())
	}
}

// generations returns the entries of the directory of the one object
// below root/obj/sub.
func generations(t *testing.T, root, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, objectDir(t, root, sub)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestFileListPrunes: generations superseded shortly before an object
// fell quiet (too young to prune at its last write) go at a listing once
// old enough, so an object that is not written again does not keep them
// (but for the newest's base).
func TestFileListPrunes(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	var v objstore.Version
	for i := 0; i < 5; i++ {
		if v, err = s.Put(ctx, "vol/1/head", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(generations(t, root, "vol/1")); n < 5 {
		t.Fatalf("%d generations after 5 quick writes: the test needs them young", n)
	}
	laterBy(s, time.Minute)
	n := 0
	if err := s.List(ctx, "", func(in objstore.Info) error {
		n++
		if in.Name != "vol/1/head" || in.Version != v || in.Size != 1 {
			t.Errorf("listed %+v", in)
		}
		return nil
	}); err != nil || n != 1 {
		t.Fatalf("listed %d objects, %v", n, err)
	}
	// The newest's base stays: its writer may have stalled before
	// checking it (TestFileWinnerStalledPastPrune).
	if g := generations(t, root, "vol/1"); len(g) != 2 {
		t.Fatalf("after a listing a minute later: %v, want only the newest and its base", g)
	}
	if b, gv, err := s.Get(ctx, "vol/1/head"); err != nil || string(b) != "4" || gv != v {
		t.Fatalf("Get = %q v%d %v", b, gv, err)
	}
}

// TestFileListRemovesCrashedCreation: a creator that died after putting
// its object's directory in place and before writing into it leaves a
// directory with only its base; a listing removes it once over an hour
// old, and the name can be created again.
func TestFileListRemovesCrashedCreation(t *testing.T) {
	ctx := context.Background()
	root, a, b := twoFileStores(t)
	calls := 0
	objstore.SetFileHooks(a, objstore.FileHooks{BeforeInstall: func(string) {
		if calls++; calls == 2 { // the directory is in place, the data not linked
			runtime.Goexit()
		}
	}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Create(ctx, "blk/dead", []byte("x"))
	}()
	<-done
	if calls != 2 {
		t.Fatalf("the creator stopped at step %d", calls)
	}
	objectDir(t, root, "blk") // there
	laterBy(b, 2*time.Hour)
	if err := b.List(ctx, "", func(in objstore.Info) error { return fmt.Errorf("listed %s", in.Name) }); err != nil {
		t.Fatal(err)
	}
	if _, dirs := usage(t, root); strings.Join(dirs, " ") != ". idx idx/cat obj tmp" {
		t.Fatalf("directories left: %v", dirs)
	}
	if _, err := b.Create(ctx, "blk/dead", []byte("y")); err != nil {
		t.Fatal(err)
	}
}

// TestFileDeleteFreesAtOnce: deleting an object written once gives its
// space and directories back at once, with no listing and however young
// the object is (its clock seen only a little ahead, so that nothing is
// old enough to be collected by age).
func TestFileDeleteFreesAtOnce(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	empty, skeleton := usage(t, root)
	var names []string
	for i := 0; i < 40; i++ {
		names = append(names, fmt.Sprintf("blk/%04x", i*4099), fmt.Sprintf("vol/%d/d/1-%x", i%3, i))
	}
	for _, n := range names {
		if _, err := s.Create(ctx, n, make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	laterBy(s, 10*time.Millisecond)
	for _, n := range names {
		if err := s.Delete(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	after, dirs := usage(t, root)
	if after > empty {
		t.Errorf("%d B on disk after deleting everything (%d B empty)", after, empty)
	}
	if strings.Join(dirs, " ") != strings.Join(skeleton, " ") {
		t.Errorf("directories left: %v", dirs)
	}
}

// TestFileCreateOverEmptyDirectory: an empty object directory (a deleter
// removed every entry and not yet the directory, or died there) does not
// keep the name from being created.
func TestFileCreateOverEmptyDirectory(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "gc/lock", []byte("1")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, objectDir(t, root, "gc"))
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		os.Remove(filepath.Join(dir, e.Name()))
	}
	if _, err := s.Create(ctx, "gc/lock", []byte("2")); err != nil {
		t.Fatalf("Create over an empty directory: %v", err)
	}
	if b, _, err := s.Get(ctx, "gc/lock"); err != nil || string(b) != "2" {
		t.Fatalf("Get = %q, %v", b, err)
	}
}

// TestFileConcurrentDeleteAndCreate: goroutines put, create, swap, get
// and delete a few names at random while a lister walks (and collects),
// so that object directories are removed and made again under each other.
// What each goroutine sees of a name must never go back: a write gives a
// version the goroutine never saw, and a read gives the last version it
// saw or a new one, never one superseded since. Versions are compared for
// equality only: a directory prepared before another was removed, by a
// writer that stalled, may be installed after it with a lower number. In
// the end everything is deleted and the store's directory is back to an
// empty store's.
func TestFileConcurrentDeleteAndCreate(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	empty, skeleton := usage(t, root)
	names := []string{"gc/lock", "vol/1/head", "blk/ab"}
	stop := make(chan struct{})
	listed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				listed <- nil
				return
			default:
			}
			if err := s.List(ctx, "", func(objstore.Info) error { return nil }); err != nil {
				listed <- err
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			seen := map[string]objstore.Version{}          // the last version seen
			ever := map[string]map[objstore.Version]bool{} // every version seen
			saw := func(op, name string, v objstore.Version, write bool) {
				if write && ever[name][v] || !write && v != seen[name] && ever[name][v] {
					t.Errorf("worker %d: %s of %s gave version %x, seen before (last seen %x)", w, op, name, v, seen[name])
				}
				if ever[name] == nil {
					ever[name] = map[objstore.Version]bool{}
				}
				ever[name][v] = true
				seen[name] = v
			}
			data := make([]byte, 4096)
			for i := 0; i < 60; i++ {
				name := names[rng.IntN(len(names))]
				switch rng.IntN(5) {
				case 0:
					if _, v, err := s.Get(ctx, name); err == nil {
						saw("get", name, v, false)
					} else if !errors.Is(err, objstore.ErrNotFound) {
						t.Error(err)
					}
				case 1:
					if v, err := s.Put(ctx, name, data); err == nil {
						saw("put", name, v, true)
					} else {
						t.Error(err)
					}
				case 2:
					if v, err := s.Create(ctx, name, data); err == nil {
						saw("create", name, v, true)
					} else if !errors.Is(err, objstore.ErrExists) {
						t.Error(err)
					}
				case 3:
					if v, err := s.Swap(ctx, name, data, seen[name]); err == nil {
						saw("swap", name, v, true)
					} else if !errors.Is(err, objstore.ErrConflict) {
						t.Error(err)
					}
				case 4:
					if err := s.Delete(ctx, name); err != nil && !errors.Is(err, objstore.ErrNotFound) {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-listed; err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := s.Delete(ctx, n); err != nil && !errors.Is(err, objstore.ErrNotFound) {
			t.Fatal(err)
		}
	}
	later(s)
	if err := s.List(ctx, "", func(in objstore.Info) error { return fmt.Errorf("%s listed", in.Name) }); err != nil {
		t.Fatal(err)
	}
	after, dirs := usage(t, root)
	if after > empty || strings.Join(dirs, " ") != strings.Join(skeleton, " ") {
		t.Fatalf("after deleting everything: %d B (empty: %d B), directories %v", after, empty, dirs)
	}
}

// TestFileSwapAfterDeleteConflicts: a swap from a version that a delete
// superseded fails, also while that version's generation is still kept
// (replaced less than PruneAge ago) and the one above it is gone (a base
// is removed at once under a tombstone). A swap that found its base by a
// stat of the old version, without a listing, linked above it and won.
func TestFileSwapAfterDeleteConflicts(t *testing.T) {
	ctx := context.Background()
	_, a, b := twoFileStores(t)
	v1, err := a.Put(ctx, "x", []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, "x", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	_, err = b.Swap(ctx, "x", []byte("stale"), v1)
	if !errors.Is(err, objstore.ErrConflict) && !objstore.IsNotExist(err) {
		t.Fatalf("a swap from a version before a delete: %v, want a conflict", err)
	}
	if _, _, err := a.Get(ctx, "x"); !objstore.IsNotExist(err) {
		t.Fatalf("the deleted object reads: %v", err)
	}
}

// TestFileOpenRemakesWorkDirs: a store whose empty tmp/ or obj/ was lost
// (copied by a tool that skips empty directories, or checked into git)
// opens and works: open makes them again instead of every write failing
// with "object not found".
func TestFileOpenRemakesWorkDirs(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	if _, err := objstore.OpenFile(root, true); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"tmp", "obj"} {
		if err := os.RemoveAll(filepath.Join(root, d)); err != nil {
			t.Fatal(err)
		}
	}
	f, err := objstore.OpenFile(root, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Put(ctx, "a/b", []byte("x")); err != nil {
		t.Fatalf("put after losing the work directories: %v", err)
	}
	if err := f.Delete(ctx, "a/b"); err != nil {
		t.Fatalf("delete after losing the work directories: %v", err)
	}
}

// TestFileFreshStatWhenCreated: a store created by its open is on the
// same local file system as one opened after it, so its Stat is as fresh
// (the open asked before the directory existed, took it for remote, and
// every flush of a daemon that was the store's first user swapped the
// head).
func TestFileFreshStatWhenCreated(t *testing.T) {
	parent := t.TempDir()
	existing := filepath.Join(parent, "existing")
	if err := os.Mkdir(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	var fresh [2]bool
	for i, dir := range []string{existing, filepath.Join(parent, "new", "store")} {
		f, err := objstore.OpenFile(dir, true)
		if err != nil {
			t.Fatal(err)
		}
		fresh[i] = f.FreshStat()
	}
	if fresh[0] != fresh[1] {
		t.Fatalf("FreshStat: %v in a directory that existed, %v in one the open created", fresh[0], fresh[1])
	}
}
