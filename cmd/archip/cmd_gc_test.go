package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/gc"
)

// TestGCGraceMinimum: a grace the writers' own safety check does not
// cover is refused as a bad argument, naming the minimum.
func TestGCGraceMinimum(t *testing.T) {
	store := "file://" + filepath.Join(t.TempDir(), "store")
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "1M", "--block-size", "64K")
	for _, g := range []string{"1ns", "0s", "-1m", "10m", (gc.MinGrace - time.Second).String()} {
		_, errs, code := cli(t, store, nil, "gc", "--grace", g)
		if code != 2 || !strings.Contains(errs, gc.MinGrace.String()) {
			t.Errorf("gc --grace %s: exit %d, %q", g, code, errs)
		}
	}
	mustCLI(t, store, nil, "gc", "--grace", gc.MinGrace.String())
	if out := mustCLI(t, store, nil, "gc", "--help"); !strings.Contains(out, gc.MinGrace.String()) {
		t.Errorf("gc --help does not name the minimum grace:\n%s", out)
	}
}

// ageStore makes every file of a file store look d older, so that a
// collection with a grace of at least gc.MinGrace finds garbage.
func ageStore(t *testing.T, root string, d time.Duration) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // pruned by the store meanwhile
		}
		if err != nil || e.IsDir() {
			return err
		}
		in, err := e.Info()
		if err == nil {
			err = os.Chtimes(path, in.ModTime().Add(-d), in.ModTime().Add(-d))
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
