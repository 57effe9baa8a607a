package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
)

// exportStore makes a store with volume "good" (readable, 1 MiB) and
// volume "broken" whose first block's object is gone, so that exporting
// it fails part way.
func exportStore(t *testing.T) (store string, good []byte) {
	t.Helper()
	store = "file://" + filepath.Join(t.TempDir(), "store")
	mustCLI(t, store, nil, "volume", "create", "good", "--size", "1M", "--block-size", "64K")
	good = bytes.Repeat([]byte("exported"), 1<<17)
	mustCLI(t, store, good, "volume", "write", "good")
	mustCLI(t, store, nil, "volume", "create", "broken", "--size", "1M", "--block-size", "64K")
	mustCLI(t, store, bytes.Repeat([]byte("x"), 1<<20), "volume", "write", "broken")
	ctx := context.Background()
	m, err := (&globals{store: store}).manager(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := m.Open(ctx, "broken", false)
	if err != nil {
		t.Fatal(err)
	}
	e := v.Entries()[3]
	v.Close(ctx)
	if e.Kind() != blockmap.Private {
		t.Fatalf("block 3 of broken is %v", e)
	}
	if err := m.Store.Delete(ctx, e.ObjectName()); err != nil {
		t.Fatal(err)
	}
	return store, good
}

// TestImageExportTargets: a failed export leaves an existing file as it
// was and leaves no temporary file behind; special files (devices, FIFOs)
// and directories are refused with exit 2 and never truncated or removed.
func TestImageExportTargets(t *testing.T) {
	store, good := exportStore(t)
	dir := t.TempDir()
	listDir := func() []string {
		ents, _ := os.ReadDir(dir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}

	// A file the user had survives a failed export, with --force.
	file := filepath.Join(dir, "keep.raw")
	os.WriteFile(file, []byte("precious"), 0o600)
	if _, errs, code := cli(t, store, nil, "image", "export", "broken", file, "--force"); code != 1 {
		t.Fatalf("export of a broken volume: exit %d, %s", code, errs)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "precious" {
		t.Fatalf("the file after a failed export: %q, %v", b, err)
	}
	// A new file is not left half-written either.
	if _, _, code := cli(t, store, nil, "image", "export", "broken", filepath.Join(dir, "new.raw")); code != 1 {
		t.Fatalf("export of a broken volume to a new file: exit %d", code)
	}
	if got := listDir(); len(got) != 1 || got[0] != "keep.raw" {
		t.Fatalf("directory after failed exports: %v", got)
	}
	// Without --force an existing file is a bad argument.
	if _, errs, code := cli(t, store, nil, "image", "export", "good", file); code != 2 || !strings.Contains(errs, "--force") {
		t.Fatalf("export over an existing file without --force: exit %d, %s", code, errs)
	}
	// With --force it is replaced whole, and keeps its mode.
	mustCLI(t, store, nil, "image", "export", "good", file, "--force")
	if b, _ := os.ReadFile(file); !bytes.Equal(b, good) {
		t.Fatal("export over a file: contents differ")
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode after export --force: %v", st.Mode())
	}
	// Through a symlink, the file it points at is replaced; the link stays.
	link := filepath.Join(dir, "link.raw")
	os.Symlink("keep.raw", link)
	os.WriteFile(file, []byte("precious"), 0o600)
	mustCLI(t, store, nil, "image", "export", "good", link, "--force")
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("symlink after export: %v, %v", fi, err)
	}
	if b, _ := os.ReadFile(file); !bytes.Equal(b, good) {
		t.Fatal("export through a symlink: contents differ")
	}
	os.Remove(link)

	// Special files and directories.
	null := filepath.Join(dir, "null")
	if err := syscall.Mknod(null, syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Fatalf("mknod (the test runs as root): %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A reader, so that opening the FIFO for writing would not block.
	rd, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	devLink := filepath.Join(dir, "devnull")
	os.Symlink("/dev/null", devLink)
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	for _, target := range []string{null, fifo, devLink, sub} {
		for _, force := range []bool{false, true} {
			args := []string{"image", "export", "good", target}
			if force {
				args = append(args, "--force")
			}
			before, _ := os.Lstat(target)
			_, errs, code := cli(t, store, nil, args...)
			if code != 2 || !strings.Contains(errs, "not a regular file") && !strings.Contains(errs, "directory") {
				t.Errorf("export to %s (force %v): exit %d, %s", filepath.Base(target), force, code, errs)
			}
			after, err := os.Lstat(target)
			if err != nil || after.Mode() != before.Mode() {
				t.Errorf("export to %s (force %v): target now %v, %v", filepath.Base(target), force, after, err)
			}
		}
	}
	if fi, err := os.Stat("/dev/null"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("/dev/null: %v %v", fi, err)
	}
	if got := len(listDir()); got != 5 {
		t.Fatalf("directory after refused exports: %v", listDir())
	}
}
