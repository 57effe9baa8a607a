package objstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileStatReusedInode: on a file system that records no birth time,
// a file's device and inode do not tell it apart from a later one: ext4
// gives a freed inode number to the next file made. A stale writer that
// listed generation g-1 and stalled made its temporary file after g was
// pruned, taking g's inode, and linked it at g, where it stays (its
// writer stalled past the prune age). A Stat that saw g as newest must
// not take that file for g: g+1 is gone too, but g+3 is the newest.
func TestFileStatReusedInode(t *testing.T) {
	defer objstore.SetNoBirthTime()()
	// The file system hands the freed inode number to the new file only
	// if no other process (tests run in parallel in CI) took it first:
	// try again in a fresh store until it does.
	try := func() bool {
		ctx := context.Background()
		root, a, b := twoFileStores(t)
		b.SetPruneAge(0)
		name := "h"
		dir := filepath.Join(root, objectDirOf(t, name))
		gen := func(v objstore.Version) string { return filepath.Join(dir, fmt.Sprintf("%016x", v)) }
		seen, err := b.Create(ctx, name, []byte("1"))
		if err != nil {
			t.Fatal(err)
		}
		if in, err := a.Stat(ctx, name); err != nil || in.Version != seen {
			t.Fatalf("Stat = %+v, %v; want version %d", in, err, seen)
		}
		seenIno := inodeOf(t, gen(seen))
		v := seen
		for i := 0; i < 2; i++ { // g+2 prunes g; g+1 stays as its base
			if v, err = b.Swap(ctx, name, []byte("22"), v); err != nil {
				t.Fatal(err)
			}
		}
		// The stale writer's temporary file, made now: it takes a freed
		// inode, g's unless the file system hands out another.
		var stale string
		for i := 0; i < 16 && stale == ""; i++ {
			p := filepath.Join(root, fmt.Sprintf("stale%d", i))
			if err := os.WriteFile(p, []byte("stale"), 0o644); err != nil {
				t.Fatal(err)
			}
			if inodeOf(t, p) == seenIno {
				stale = p
			}
		}
		if stale == "" {
			return false
		}
		if v, err = b.Swap(ctx, name, []byte("333"), v); err != nil { // prunes g+1
			t.Fatal(err)
		}
		if _, err := os.Lstat(gen(seen + 1)); !os.IsNotExist(err) {
			t.Fatalf("generation %d still there (%v): the test does not test pruning", seen+1, err)
		}
		// Timestamps are at least a clock tick (at most 10 ms) apart: the
		// stale link comes the prune age after g was seen.
		time.Sleep(20 * time.Millisecond)
		if err := os.Link(stale, gen(seen)); err != nil {
			t.Fatal(err)
		}
		if in, err := a.Stat(ctx, name); err != nil || in.Version != v || in.Size != 3 {
			t.Fatalf("Stat = %+v, %v; want version %d, size 3 (a stale file at the name of the generation seen, with its inode, taken for it)", in, err, v)
		}
		return true
	}
	for i := 0; i < 20; i++ {
		if try() {
			return
		}
	}
	t.Skip("the file system gave no new file the inode of a removed one in 20 tries")
}
