package objstore_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileIndexListingAcrossASplit: a split runs while a listing reads
// the level it splits. A read of a directory that changes meanwhile may
// leave out what is added or removed during it (POSIX readdir), so the
// read may show neither a key the split moved out nor the level it moved
// it into: every object that exists throughout the listing is listed
// all the same.
func TestFileIndexListingAcrossASplit(t *testing.T) {
	f := openIndexed(t, 4)
	var want []string
	for i := range 4 {
		n := fmt.Sprintf("cat/name/a%d", i)
		if _, err := f.Create(ctx, n, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, n)
	}
	root := filepath.Join(f.Root(), "idx", "cat")
	split := false
	objstore.SetIndexHooks(f, objstore.IndexHooks{Names: func(level string, before []string) []string {
		if split || level != root {
			return before
		}
		split = true
		// The fifth key splits the level: its keys go to a new level.
		if _, err := f.Create(ctx, "cat/name/a4", nil); err != nil {
			t.Error(err)
		}
		d, err := os.Open(level)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		after, err := d.Readdirnames(-1)
		if err != nil {
			t.Fatal(err)
		}
		var torn []string // what was there before and after the split
		for _, n := range before {
			if slices.Contains(after, n) {
				torn = append(torn, n)
			}
		}
		return torn
	}})
	got := listAll(t, f, "cat/", "", 100)
	if !split {
		t.Fatal("no read of the top level")
	}
	got = slices.DeleteFunc(got, func(n string) bool { return n == "cat/name/a4" })
	if !slices.Equal(got, want) {
		t.Fatalf("listed %v across the split, want %v", got, want)
	}
}

// syncedDirs records what each directory of a store held when it was
// last fsynced: what a crash leaves of it, where every directory's
// entries are durable as of its own last fsync.
type syncedDirs struct {
	mu  sync.Mutex
	got map[string][]string
}

func (s *syncedDirs) record(dir string) {
	names, _ := readDirNames(dir)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[string][]string{}
	}
	s.got[dir] = names
}

// keyDurable reports whether a crash now leaves name's key in the index
// of the store at root: in a level along its path, that level linked
// durably in its parent.
func (s *syncedDirs) keyDurable(root, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	level, rest := filepath.Join(root, "idx", "cat"), strings.ReplaceAll(strings.TrimPrefix(name, "cat/"), "/", "=")
	for {
		if slices.Contains(s.got[level], "+"+rest) {
			return true
		}
		if rest == "" || !slices.Contains(s.got[level], "@"+rest[:1]) {
			return false
		}
		level, rest = filepath.Join(level, "@"+rest[:1]), rest[1:]
	}
}

func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// TestFileIndexKeyMovedBeforeItsSync: a split (of another process) moves
// a new key down after its creator set it and before the creator fsyncs
// its level, and stalls before it fsyncs the level it moved it to. The
// creator's fsync then makes the key's removal from its level durable:
// its Create must not return (nor link the object) before the key is
// durable where it went.
func TestFileIndexKeyMovedBeforeItsSync(t *testing.T) {
	dir := t.TempDir()
	f, err := objstore.OpenFile(dir, true) // the splitter
	if err != nil {
		t.Fatal(err)
	}
	objstore.SetIndexSplit(f, 0, 3)
	for i := range 3 {
		if _, err := f.Create(ctx, fmt.Sprintf("cat/name/a%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	g, err := objstore.OpenFile(dir, false) // the creator
	if err != nil {
		t.Fatal(err)
	}
	objstore.SetIndexSplit(g, 0, 1000)
	root := filepath.Join(f.Root(), "idx", "cat")
	var synced syncedDirs
	gAtSync, releaseG := make(chan struct{}), make(chan struct{})
	fAtSync, releaseF := make(chan struct{}), make(chan struct{})
	var gOnce, fOnce sync.Once
	objstore.SetFileHooks(g, objstore.FileHooks{SyncDir: func(d string) {
		if d == root {
			gOnce.Do(func() { close(gAtSync); <-releaseG })
		}
		synced.record(d)
	}})
	objstore.SetFileHooks(f, objstore.FileHooks{SyncDir: func(d string) {
		if d == filepath.Join(root, "@n") {
			fOnce.Do(func() { close(fAtSync); <-releaseF })
		}
		synced.record(d)
	}})
	gDone, fDone := make(chan error, 1), make(chan error, 1)
	go func() { _, err := g.Create(ctx, "cat/name/a3", nil); gDone <- err }()
	<-gAtSync // a3's key is set at the top level, not fsynced yet
	go func() { _, err := f.Create(ctx, "cat/name/a4", nil); fDone <- err }()
	<-fAtSync // the fifth key split the top level: a3's key moved to @n
	close(releaseG)
	err = <-gDone
	durable := synced.keyDurable(dir, "cat/name/a3")
	close(releaseF)
	if ferr := <-fDone; ferr != nil {
		t.Fatal(ferr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !durable {
		t.Fatal("Create returned with the key of its object durable at no level")
	}
}

// TestFileIndexSplitUnderASplit: a split moves keys down into a level,
// and before it fsyncs that level, a split of another process moves them
// on into a level below and stalls before its own fsync. The first
// split's fsyncs then make the keys' removals durable at both levels
// above: it must make them durable where they went first.
func TestFileIndexSplitUnderASplit(t *testing.T) {
	dir := t.TempDir()
	f, err := objstore.OpenFile(dir, true) // splits the top level
	if err != nil {
		t.Fatal(err)
	}
	objstore.SetIndexSplit(f, 0, 3)
	for i := range 3 {
		if _, err := f.Create(ctx, fmt.Sprintf("cat/pq%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	g, err := objstore.OpenFile(dir, false) // splits @p under it
	if err != nil {
		t.Fatal(err)
	}
	objstore.SetIndexSplit(g, 0, 3)
	root := filepath.Join(f.Root(), "idx", "cat")
	var synced syncedDirs
	gAtSync, releaseG, gDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	var gOnce, fOnce sync.Once
	objstore.SetFileHooks(g, objstore.FileHooks{SyncDir: func(d string) {
		if d == filepath.Join(root, "@p", "@q") {
			gOnce.Do(func() { close(gAtSync); <-releaseG })
		}
		synced.record(d)
	}})
	objstore.SetFileHooks(f, objstore.FileHooks{SyncDir: func(d string) {
		if d == filepath.Join(root, "@p") {
			fOnce.Do(func() {
				// f moved the keys to @p: g's create there splits it.
				go func() { _, err := g.Create(ctx, "cat/pq9", nil); gDone <- err }()
				<-gAtSync
			})
		}
		synced.record(d)
	}})
	if _, err := f.Create(ctx, "cat/pq3", nil); err != nil {
		t.Fatal(err)
	}
	var lost []string
	for i := range 4 {
		if n := fmt.Sprintf("cat/pq%d", i); !synced.keyDurable(dir, n) {
			lost = append(lost, n)
		}
	}
	close(releaseG)
	if err := <-gDone; err != nil {
		t.Fatal(err)
	}
	if lost != nil {
		t.Fatalf("after the splits, a crash loses the keys of %v", lost)
	}
}

// TestFileIndexSplitWhateverTheSize: on a file system whose directory
// sizes grow slowly with their entries (ZFS counts entries; ext4 with
// short names, 12 bytes each), a level past the key bound is split all
// the same, so that a page does not read thousands of entries. (Before:
// only a level past its byte bound was ever read to be split.)
func TestFileIndexSplitWhateverTheSize(t *testing.T) {
	f := openIndexed(t, 512)
	objstore.SetIndexSplit(f, 1<<40, 512) // the size never says split
	var names []string
	for i := range 3000 {
		names = append(names, fmt.Sprintf("cat/%04d", i))
	}
	if err := objstore.SetIndexKeys(f, names); err != nil {
		t.Fatal(err)
	}
	read := 0
	objstore.SetIndexHooks(f, objstore.IndexHooks{Read: func(n int) { read += n }})
	var got []string
	stop := fmt.Errorf("page full")
	err := f.ListNamesAfter(ctx, "cat/", "cat/1500", func(n string) error {
		got = append(got, n)
		if len(got) == 100 {
			return stop
		}
		return nil
	})
	if err != stop || len(got) != 100 || got[0] != "cat/1501" {
		t.Fatalf("page: %v %d names from %v", err, len(got), got[:min(1, len(got))])
	}
	if read > 2000 {
		t.Fatalf("a page of 100 read %d entries of the index, of 3000 names", read)
	}
}

// TestFileIndexRepairKeyMovedBeforeItsSync: the repair sets the keys an
// older binary did not, and a split of another process moves them down
// before the repair fsyncs their level, stalling before it fsyncs the
// level it moved them to: the repair must not return (nor mark the index
// complete) before they are durable where they went.
func TestFileIndexRepairKeyMovedBeforeItsSync(t *testing.T) {
	dir := t.TempDir()
	f, err := objstore.OpenFile(dir, true) // the splitter
	if err != nil {
		t.Fatal(err)
	}
	objstore.SetIndexSplit(f, 0, 3)
	var names []string
	for i := range 3 {
		n := fmt.Sprintf("cat/name/r%d", i)
		if _, err := f.Create(ctx, n, nil); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	root := filepath.Join(f.Root(), "idx", "cat")
	if err := os.RemoveAll(root); err != nil { // written by an older binary
		t.Fatal(err)
	}
	g, err := objstore.OpenFile(dir, false) // the repairer
	if err != nil {
		t.Fatal(err)
	}
	objstore.SetIndexSplit(g, 0, 1000)
	var synced syncedDirs
	gAtSync, releaseG := make(chan struct{}), make(chan struct{})
	fAtSync, releaseF := make(chan struct{}), make(chan struct{})
	var gOnce, fOnce sync.Once
	objstore.SetFileHooks(g, objstore.FileHooks{SyncDir: func(d string) {
		if d == root {
			gOnce.Do(func() { close(gAtSync); <-releaseG })
		}
		synced.record(d)
	}})
	objstore.SetFileHooks(f, objstore.FileHooks{SyncDir: func(d string) {
		if d == filepath.Join(root, "@n") {
			fOnce.Do(func() { close(fAtSync); <-releaseF })
		}
		synced.record(d)
	}})
	gDone, fDone := make(chan error, 1), make(chan error, 1)
	go func() { gDone <- g.RepairIndex(ctx) }()
	<-gAtSync // the keys are set at the top level, not fsynced yet
	go func() { _, err := f.Create(ctx, "cat/name/r3", nil); fDone <- err }()
	<-fAtSync // the fourth key split the top level: the keys moved to @n
	close(releaseG)
	err = <-gDone
	var lost []string
	for _, n := range names {
		if !synced.keyDurable(dir, n) {
			lost = append(lost, n)
		}
	}
	close(releaseF)
	if ferr := <-fDone; ferr != nil {
		t.Fatal(ferr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if lost != nil {
		t.Fatalf("repaired, a crash loses the keys of %v", lost)
	}
}
