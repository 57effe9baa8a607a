package volume

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// fullImage stores a read-only volume of size bytes whose every 4 MiB
// block is mapped to a (synthetic) content block: the map is full, the
// data is not needed to measure metadata operations.
func fullImage(b *testing.B, s objstore.Store, size uint64) blockmap.ID {
	n := size >> blockmap.DefaultShift
	entries := make([]blockmap.Entry, n)
	var buf [8]byte
	for i := range entries {
		binary.LittleEndian.PutUint64(buf[:], uint64(i))
		entries[i] = blockmap.ContentEntry(sha256.Sum256(buf[:]))
	}
	id, err := CreateImage(ctx, s, size, blockmap.DefaultShift, entries)
	if err != nil {
		b.Fatal(err)
	}
	return id
}

var benchSizes = []struct {
	name string
	size uint64
}{{"1GiB", 1 << 30}, {"100GiB", 100 << 30}, {"1TiB", 1 << 40}}

// BenchmarkClone measures clone time of fully mapped volumes on the file
// store. Target: under 50 ms at 1 TiB, growing only with the map size.
func BenchmarkClone(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			s, err := objstore.OpenFile(b.TempDir(), true)
			if err != nil {
				b.Fatal(err)
			}
			img := fullImage(b, s, sz.size)
			for b.Loop() {
				if _, err := Clone(ctx, s, img, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSnapshot measures a snapshot of a fully mapped, open volume.
func BenchmarkSnapshot(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			s, err := objstore.OpenFile(b.TempDir(), true)
			if err != nil {
				b.Fatal(err)
			}
			cid, _ := Clone(ctx, s, fullImage(b, s, sz.size), 0)
			v, err := Open(ctx, s, cid, OpenOptions{Writable: true})
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := v.Snapshot(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpenMemory opens a fully mapped 1 TiB volume and reports the
// heap it holds per block. Target: at most 64 bytes per 4 MiB block.
func BenchmarkOpenMemory(b *testing.B) {
	s := objstore.NewMem()
	id := fullImage(b, s, 1<<40)
	blocks := float64(uint64(1<<40) >> blockmap.DefaultShift)
	var perBlock float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		v, err := Open(ctx, s, id, OpenOptions{})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perBlock = float64(after.HeapAlloc-before.HeapAlloc) / blocks
		runtime.KeepAlive(v)
	}
	b.ReportMetric(perBlock, "B/block")
}

// BenchmarkWrite4K measures random 4 KiB writes into allocated blocks and
// into a fresh clone (copy-on-write of 4 MiB blocks), on the file store.
func BenchmarkWrite4K(b *testing.B) {
	for _, fresh := range []bool{false, true} {
		b.Run(fmt.Sprintf("cow=%v", fresh), func(b *testing.B) {
			s, err := objstore.OpenFile(b.TempDir(), true)
			if err != nil {
				b.Fatal(err)
			}
			const size = 256 << 20
			v := NewTestVolume(b, s, size, 0)
			p := make([]byte, 4096)
			for i := range p {
				p[i] = byte(i) | 1
			}
			big := make([]byte, 4<<20)
			for i := range big {
				big[i] = 1
			}
			for off := int64(0); off < size; off += int64(len(big)) {
				v.WriteAt(ctx, big, off, false)
			}
			v.Flush(ctx)
			if fresh {
				sid, _ := v.Snapshot(ctx)
				cid, _ := Clone(ctx, s, sid, 0)
				v, _ = Open(ctx, s, cid, OpenOptions{Writable: true})
			}
			b.SetBytes(4096)
			i := int64(0)
			for b.Loop() {
				off := (i * 7919 * 4096) % size
				if err := v.WriteAt(ctx, p, off, false); err != nil {
					b.Fatal(err)
				}
				i++
			}
			v.Flush(ctx)
		})
	}
}
