package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
)

// TestVolumeWriteTooLong: input longer than the room from --offset to the
// end is refused with exit 2 before anything is written, whether it comes
// from a regular file, a short stream or a stream spooled to a temporary
// file; the volume reads what it held before.
func TestVolumeWriteTooLong(t *testing.T) {
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "1M", "--block-size", "64K")
	before := bytes.Repeat([]byte("A"), 1<<20)
	mustCLI(t, store, before, "volume", "write", "v")
	unchanged := func(what string) {
		t.Helper()
		if got := mustCLI(t, store, nil, "volume", "read", "v"); got != string(before) {
			t.Fatalf("%s: the volume changed", what)
		}
	}
	long := bytes.Repeat([]byte("B"), 1<<20+1)

	_, errs, code := cli(t, store, long, "volume", "write", "v")
	if code != 2 || !strings.Contains(errs, "longer than") {
		t.Fatalf("stream one byte too long: exit %d, %s", code, errs)
	}
	unchanged("stream")

	var out, errb bytes.Buffer
	spool := func(in []byte, args ...string) int {
		g := &globals{stdin: bytes.NewReader(in), stdout: &out, stderr: &errb, spoolMemory: 64 << 10}
		return run(t.Context(), append([]string{"--store", store}, args...), g)
	}
	if code := spool(long, "volume", "write", "v"); code != 2 {
		t.Fatalf("spooled stream one byte too long: exit %d, %s", code, errb.String())
	}
	unchanged("spooled stream")

	path := filepath.Join(dir, "in")
	os.WriteFile(path, long[:1<<20-100], 0o644)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g := &globals{stdin: f, stdout: &out, stderr: &errb}
	if code := run(t.Context(), []string{"--store", store, "volume", "write", "v", "--offset", "200"}, g); code != 2 {
		t.Fatalf("file too long for the room after --offset: exit %d, %s", code, errb.String())
	}
	unchanged("regular file")

	if _, errs, code := cli(t, store, []byte("x"), "volume", "write", "v", "--offset", "1048577"); code != 2 || !strings.Contains(errs, "past the end") {
		t.Fatalf("--offset past the end: exit %d, %s", code, errs)
	}
	unchanged("offset past the end")

	// What fits is written, spooled or not, from a file or a stream.
	f.Seek(0, 0)
	g = &globals{stdin: f, stdout: &out, stderr: &errb}
	if code := run(t.Context(), []string{"--store", store, "volume", "write", "v", "--offset", "100"}, g); code != 0 {
		t.Fatalf("file that fits: exit %d, %s", code, errb.String())
	}
	if code := spool(long[:1<<20], "volume", "write", "v"); code != 0 {
		t.Fatalf("spooled stream that fits: exit %d, %s", code, errb.String())
	}
	if got := mustCLI(t, store, nil, "volume", "read", "v"); got != string(long[:1<<20]) {
		t.Fatal("spooled write that fits: wrong contents")
	}
}

// TestCLIHugeHead: a head over the block cap (made by hand, or by an
// older version) is refused as corrupt by info, read and export, without
// allocating its map, and can be removed.
func TestCLIHugeHead(t *testing.T) {
	ctx := t.Context()
	store := "file://" + filepath.Join(t.TempDir(), "store")
	mustCLI(t, store, nil, "volume", "create", "small", "--size", "1M")
	m, err := (&globals{store: store}).manager(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	h := &blockmap.Head{ID: blockmap.NewID(), Size: blockmap.MaxSizeFor(blockmap.MinBlockShift) * 2, BlockShift: blockmap.MinBlockShift, Epoch: 1}
	if _, err := m.Store.Create(ctx, blockmap.HeadName(h.ID), blockmap.EncodeHead(h)); err != nil {
		t.Fatal(err)
	}
	if err := m.Catalog.Create(ctx, catalog.Record{Name: "huge", ID: h.ID, Kind: catalog.KindVolume}); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, args := range [][]string{{"volume", "info", "huge"}, {"volume", "read", "huge", "--length", "1"}, {"image", "export", "huge", "-"}} {
		if _, errs, code := cli(t, store, nil, args...); code != 1 || !strings.Contains(errs, "corrupt") {
			t.Errorf("archip %q: exit %d, %s", args, code, errs)
		}
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 16<<20 {
		t.Errorf("refusing a huge head allocated %d bytes", d)
	}
	mustCLI(t, store, nil, "volume", "remove", "huge")
	mustCLI(t, store, nil, "volume", "info", "small")
}
