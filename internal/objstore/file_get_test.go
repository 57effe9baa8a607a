package objstore_test

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileGetAllocatesItsSize: a Get of a 4 MiB object allocates about
// the object once (a move reads every block it copies with one;
// io.ReadAll allocated chunks, then a buffer of the final size, and
// copied: over twice the size).
func TestFileGetAllocatesItsSize(t *testing.T) {
	s, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	const size = 4 << 20
	want := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range want {
		want[i] = byte(r.Uint32())
	}
	if _, err := s.Put(ctx, "blk", want); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for range n {
		got, _, err := s.Get(ctx, "blk")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("Get returned other bytes")
		}
	}
	runtime.ReadMemStats(&m1)
	if per := float64(m1.TotalAlloc-m0.TotalAlloc) / n; per > 1.25*size {
		t.Errorf("a Get of a %d-byte object allocated %.0f bytes (%.2fx)", size, per, per/size)
	}
}

// TestFileReadSized: the read of a file whose size changed since its
// stat still returns all of it.
func TestFileReadSized(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 1000)
	for _, hint := range []int64{0, 1, 9999, 10000, 10001, 20000} {
		got, err := objstore.ReadSized(bytes.NewReader(data), hint)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("size hint %d: %d bytes, %v; want %d", hint, len(got), err, len(data))
		}
	}
}
