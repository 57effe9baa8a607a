package objstore_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
