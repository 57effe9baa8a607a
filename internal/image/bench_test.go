package image

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// BenchmarkImport imports a 1 GiB random image into a fresh file store
// ("first"), and the same image again into the same store ("again").
// Targets: first at 500 MB/s or more on 2 cores; again stores 0 bytes.
func BenchmarkImport(b *testing.B) {
	const size = 1 << 30
	dir := b.TempDir()
	path := filepath.Join(dir, "img.raw")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 4<<20)
	for n := 0; n < size; n += len(buf) {
		rng.Read(buf)
		f.Write(buf)
	}
	f.Close()
	importOnce := func(b *testing.B, s objstore.Store) ImportStats {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		st, err := Import(ctx, s, f, size, Options{})
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	b.Run("first", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			s, err := objstore.OpenFile(filepath.Join(b.TempDir(), "s"), true)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			importOnce(b, s)
			b.StopTimer()
			os.RemoveAll(s.Root())
			b.StartTimer()
		}
	})
	b.Run("again", func(b *testing.B) {
		s, err := objstore.OpenFile(filepath.Join(b.TempDir(), "s"), true)
		if err != nil {
			b.Fatal(err)
		}
		importOnce(b, s)
		b.SetBytes(size)
		var st ImportStats
		for b.Loop() {
			st = importOnce(b, s)
		}
		b.ReportMetric(float64(st.StoredBytes), "new-bytes")
	})
}
