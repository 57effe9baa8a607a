package objstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// countReads makes f count its listings of object directories.
func countReads(f *objstore.File) *int {
	n := new(int)
	objstore.SetFileHooks(f, objstore.FileHooks{ReadDir: func(string) { *n++ }})
	return n
}

// TestFileStatLists: a flush checks the volume's head with Stat each
// time (issue 11). Once a process has seen an object's newest generation
// (by a Stat, or by writing it), a Stat of it must not list the object's
// directory again while nothing changed: two lookups by name, not an
// open, two getdents and a close before the stat.
func TestFileStatLists(t *testing.T) {
	ctx := context.Background()
	_, a, b := twoFileStores(t)
	ra, rb := countReads(a), countReads(b)
	v, err := a.Create(ctx, "vol/h", []byte("head"))
	if err != nil {
		t.Fatal(err)
	}
	if v, err = a.Swap(ctx, "vol/h", []byte("head2"), v); err != nil {
		t.Fatal(err)
	}
	*ra = 0
	for i := 0; i < 3; i++ {
		in, err := a.Stat(ctx, "vol/h")
		if err != nil || in.Version != v || in.Size != 5 {
			t.Fatalf("Stat = %+v, %v; want version %d, size 5", in, err, v)
		}
	}
	if *ra != 0 {
		t.Errorf("the writer's Stat listed the object's directory %d times after its own Swap; want 0", *ra)
	}
	for i := 0; i < 3; i++ {
		if in, err := b.Stat(ctx, "vol/h"); err != nil || in.Version != v {
			t.Fatalf("Stat = %+v, %v; want version %d", in, err, v)
		}
	}
	if *rb != 1 {
		t.Errorf("3 Stats by another process listed the object's directory %d times; want 1 (the first)", *rb)
	}
}

// TestFileStatFresh: a Stat that does not list still sees every change
// another process made before it: a swap, a delete, a create in a new
// directory, generations pruned past the one it saw, a different file
// at the name it saw, an in-place write.
func TestFileStatFresh(t *testing.T) {
	ctx := context.Background()
	root, a, b := twoFileStores(t)
	b.SetPruneAge(0)
	name := "h"
	stat := func(want objstore.Version, size int64) {
		t.Helper()
		in, err := a.Stat(ctx, name)
		if err != nil || in.Version != want || in.Size != size {
			t.Fatalf("Stat = %+v, %v; want version %d, size %d", in, err, want, size)
		}
	}
	v, err := b.Create(ctx, name, []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	stat(v, 1)
	if v, err = b.Swap(ctx, name, []byte("22"), v); err != nil {
		t.Fatal(err)
	}
	stat(v, 2)

	// Pruned: the generation a saw and the one after it are gone.
	seen := v
	for i := 0; i < 3; i++ {
		if v, err = b.Swap(ctx, name, []byte("333"), v); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, objectDirOf(t, name))
	if _, err := os.Lstat(filepath.Join(dir, fmt.Sprintf("%016x", seen+1))); !os.IsNotExist(err) {
		t.Fatalf("generation %d still there (%v): the test does not test pruning", seen+1, err)
	}
	stat(v, 3)

	// Another file at the name seen, nothing above it: a stale writer's
	// link (see the File type's comment). Not the generation a saw.
	seen = v
	for i := 0; i < 3; i++ {
		if v, err = b.Swap(ctx, name, []byte("4444"), v); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(root, "stale")
	if err := os.WriteFile(other, []byte("55555"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(other, filepath.Join(dir, fmt.Sprintf("%016x", seen))); err != nil {
		t.Fatal(err)
	}
	stat(v, 4)
	os.Remove(filepath.Join(dir, fmt.Sprintf("%016x", seen)))

	// In place: the size follows.
	if err := b.WriteAt(ctx, name, []byte("abcdef"), 0); err != nil {
		t.Fatal(err)
	}
	stat(v, 6)

	// Deleted, then created again in a new directory.
	if err := b.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Stat(ctx, name); !objstore.IsNotExist(err) {
		t.Fatalf("Stat of a deleted object = %v; want not found", err)
	}
	stat2 := func() {
		t.Helper()
		v, err := b.Create(ctx, name, []byte("7777777"))
		if err != nil {
			t.Fatal(err)
		}
		stat(v, 7)
	}
	stat2()
	if err := b.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	stat2()
}
