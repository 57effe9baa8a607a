package volume

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"golang.org/x/sys/unix"
)

// benchSnap stores, on a file store, a snapshot of a 256 MiB volume of 4
// MiB blocks whose every byte was written, for clones to be written.
func benchSnap(b *testing.B) (objstore.Store, blockmap.ID) {
	s, err := objstore.OpenFile(b.TempDir(), true)
	if err != nil {
		b.Fatal(err)
	}
	const size = 256 << 20
	id, err := Create(ctx, s, CreateOptions{Size: size})
	if err != nil {
		b.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		b.Fatal(err)
	}
	big := make([]byte, 4<<20)
	for i := range big {
		big[i] = byte(i) | 1
	}
	for off := int64(0); off < size; off += int64(len(big)) {
		if err := v.WriteAt(ctx, big, off, false); err != nil {
			b.Fatal(err)
		}
	}
	snap, err := v.Snapshot(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		b.Fatal(err)
	}
	return s, snap
}

// openBenchClone opens a writer (logging, as the daemon's are) of a new
// clone of snap.
func openBenchClone(b *testing.B, s objstore.Store, snap blockmap.ID) *Volume {
	cid, err := Clone(ctx, s, snap, 0)
	if err != nil {
		b.Fatal(err)
	}
	v, err := Open(ctx, s, cid, OpenOptions{Writable: true, Log: true})
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// BenchmarkCloneWrite4K writes 4 KiB at random offsets of a fresh clone
// (each run a new one) on the file store: QD32 from goroutines without
// flushes, and QD1 with a flush after each write (a guest's fsync=1).
// Run with a fixed count (-benchtime=20000x) so that every run writes
// the same share of the clone for the first time.
func BenchmarkCloneWrite4K(b *testing.B) {
	s, snap := benchSnap(b)
	p := make([]byte, 4096)
	for i := range p {
		p[i] = byte(i) | 2
	}
	const pages = 256 << 20 >> 12
	qd32 := func(b *testing.B) {
		v := openBenchClone(b, s, snap)
		defer v.Close(ctx)
		b.SetBytes(4096)
		b.SetParallelism(16) // 32 goroutines on 2 cores
		var seed atomic.Uint64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			r := rand.New(rand.NewPCG(seed.Add(1), 1))
			for pb.Next() {
				if err := v.WriteAt(ctx, p, r.Int64N(pages)<<12, false); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
	}
	b.Run("qd32", qd32)
	// Every write logged, as when the burst's flush did not checkpoint
	// (the blocks with logged bytes then take every later write into the
	// log until it outgrows four times its bound).
	b.Run("qd32logged", func(b *testing.B) {
		defer setLogBurst(1 << 62)()
		qd32(b)
	})
	b.Run("qd1flush", func(b *testing.B) {
		v := openBenchClone(b, s, snap)
		defer v.Close(ctx)
		b.SetBytes(4096)
		r := rand.New(rand.NewPCG(1, 1))
		b.ResetTimer()
		for range b.N {
			if err := v.WriteAt(ctx, p, r.Int64N(pages)<<12, false); err != nil {
				b.Fatal(err)
			}
			if err := v.Flush(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
	})
	// The first write to each block of fresh clones, one at a time,
	// through the map (no log), no flush: what creating a block's object
	// costs. A new clone every 64 writes (its blocks), outside the timer.
	b.Run("first", func(b *testing.B) {
		b.SetBytes(4096)
		var v *Volume
		for i := range b.N {
			blk := int64(i % 64)
			if blk == 0 {
				b.StopTimer()
				if v != nil {
					v.Close(ctx)
				}
				cid, err := Clone(ctx, s, snap, 0)
				if err != nil {
					b.Fatal(err)
				}
				if v, err = Open(ctx, s, cid, OpenOptions{Writable: true}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			if err := v.WriteAt(ctx, p, blk<<22+int64(i%1024)<<12, false); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		v.Close(ctx)
	})
}

// BenchmarkFlush4K writes 4 KiB at random offsets, each followed by a
// flush (a guest's fsync=1) or with FUA, at QD1 on the file store: into
// a volume whose every block is written (in place), and into a fresh
// clone.
func BenchmarkFlush4K(b *testing.B) {
	s, snap := benchSnap(b)
	p := make([]byte, 4096)
	for i := range p {
		p[i] = byte(i) | 4
	}
	const pages = 256 << 20 >> 12
	filled := openBenchClone(b, s, snap)
	big := make([]byte, 4<<20)
	for off := int64(0); off < 256<<20; off += int64(len(big)) {
		if err := filled.WriteAt(ctx, big, off, false); err != nil {
			b.Fatal(err)
		}
	}
	if err := filled.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	defer filled.Close(ctx)
	b.Run("raw", func(b *testing.B) {
		// What a peer serving a raw file does: one pwrite and one
		// fdatasync (nbdkit's file plugin), in the same file system.
		f, err := os.Create(filepath.Join(b.TempDir(), "disk"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		for off := int64(0); off < 256<<20; off += int64(len(big)) {
			if _, err := f.WriteAt(big, off); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(4096)
		r := rand.New(rand.NewPCG(1, 1))
		b.ResetTimer()
		for range b.N {
			if _, err := f.WriteAt(p, r.Int64N(pages)<<12); err != nil {
				b.Fatal(err)
			}
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, target := range []string{"inplace", "clone"} {
		for _, fua := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/fua=%v", target, fua), func(b *testing.B) {
				v := filled
				if target == "clone" {
					v = openBenchClone(b, s, snap)
					defer v.Close(ctx)
				}
				b.SetBytes(4096)
				r := rand.New(rand.NewPCG(1, 1))
				b.ResetTimer()
				for range b.N {
					if err := v.WriteAt(ctx, p, r.Int64N(pages)<<12, fua); err != nil {
						b.Fatal(err)
					}
					if fua {
						continue
					}
					if err := v.Flush(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
			})
		}
	}
}
