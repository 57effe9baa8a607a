package objstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileDurableDirReusedInode: a process remembers which directories'
// entries it made durable. Another process deletes the object (its
// directory moved away and removed) and creates it again: its prepared
// directory takes the freed inode number (ext4 hands it out again), and
// it has renamed it into place but not yet synced its parent. A write
// by the first process into that directory must sync the directory's
// entry in its parent before it answers: a crash would otherwise lose
// the object it answered for.
func TestFileDurableDirReusedInode(t *testing.T) {
	ctx := context.Background()
	name := "x"
	// The file system hands the freed inode number to one of the new
	// directories only if no other process (tests run in parallel in CI)
	// took it first: try again in a fresh store until it does.
	var a *objstore.File
	var dir string
	for try := 0; try < 20 && dir == ""; try++ {
		a, dir = remadeWithInode(t, name)
	}
	if dir == "" {
		t.Skip("the file system gave no new directory the inode of a removed one in 20 tries")
	}
	var mu sync.Mutex
	synced := map[string]bool{}
	objstore.SetFileHooks(a, objstore.FileHooks{SyncDir: func(d string) {
		mu.Lock()
		synced[d] = true
		mu.Unlock()
	}})
	if _, err := a.Put(ctx, name, []byte("2")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !synced[filepath.Dir(dir)] {
		t.Errorf("a write into a directory made again with the inode of one it had synced did not sync its parent (synced %v)", synced)
	}
}

// remadeWithInode puts name in a fresh store with two processes (a and
// another), deletes it from the other, and, as the other's creator does
// to create it again, prepares a directory that took the removed one's
// inode number and renames it into place, unsynced. It returns a and the
// object's directory, or "" if no new directory took the inode number.
func remadeWithInode(t *testing.T, name string) (*objstore.File, string) {
	ctx := context.Background()
	root, a, b := twoFileStores(t)
	dir := filepath.Join(root, objectDirOf(t, name))
	if _, err := a.Put(ctx, name, []byte("1")); err != nil {
		t.Fatal(err)
	}
	old := inodeOf(t, dir)
	// A delete removes the directory at once only when its tombstone's
	// number (the base: the directory's time plus up to a millisecond)
	// is below the server's time; a delete in the put's clock tick leaves
	// it to the next listing. b's clock ahead makes it so whatever the
	// timing (CI's machine deleted within the tick).
	later(b)
	if err := b.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatalf("the deleted object's directory is still there (%v): the test does not test its removal", err)
	}
	// Timestamps are at least a clock tick (at most 10 ms) apart: the
	// directory made again is not made in the tick of the first one.
	time.Sleep(20 * time.Millisecond)
	// The other process's creator prepares a directory with a "new" base
	// (see the File type's comment) and renames it into place, unsynced.
	var prep string
	var made []string
	for i := 0; i < 32 && prep == ""; i++ {
		p := filepath.Join(root, "tmp", fmt.Sprintf("prep%d", i))
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		made = append(made, p)
		if inodeOf(t, p) == old {
			prep = p
		}
	}
	for _, p := range made {
		if p != prep {
			os.Remove(p)
		}
	}
	if prep == "" {
		return nil, ""
	}
	base := time.Now().UnixNano()
	if err := os.Symlink(fmt.Sprintf("new.%x", base), filepath.Join(prep, fmt.Sprintf("%016x", base))); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(prep, dir); err != nil {
		t.Fatal(err)
	}
	return a, dir
}

// inodeOf returns the inode number of path (not following a link).
func inodeOf(t *testing.T, path string) uint64 {
	t.Helper()
	in, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return in.Sys().(*syscall.Stat_t).Ino
}
