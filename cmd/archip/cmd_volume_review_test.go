package main

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"testing"
)

// failingReader yields data, then fails.
type failingReader struct{ data []byte }

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, errors.New("input failed")
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestVolumeWriteFailureInPlace (issue 10 #15, review): a volume write
// that fails part way changes nothing, even where the blocks it writes
// were written by an earlier write of the same epoch (which the volume
// changes in place, not copy-on-write: discarding the unflushed map does
// not undo those).
func TestVolumeWriteFailureInPlace(t *testing.T) {
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "4M", "--block-size", "64K")
	before := bytes.Repeat([]byte("A"), 4<<20)
	mustCLI(t, store, before, "volume", "write", "v")

	g := &globals{store: store}
	m, err := g.manager(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	// 1 MiB of input (the first chunk writeVolume writes), then a read
	// error, for a 2 MiB write.
	in := io.Reader(&failingReader{bytes.Repeat([]byte("B"), 1<<20)})
	if err := writeVolume(t.Context(), m, "v", in, 0, 2<<20); err == nil {
		t.Fatal("a write whose input failed succeeded")
	}
	if got := mustCLI(t, store, nil, "volume", "read", "v"); got != string(before) {
		n := bytes.Count([]byte(got), []byte("B"))
		t.Fatalf("a failed volume write changed the volume: %d bytes of its input are in it", n)
	}
}
