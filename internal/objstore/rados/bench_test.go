//go:build ceph

package rados

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// BenchmarkRandomIO is the data path without NBD or the volume engine:
// 4 KiB reads or writes at random offsets of 64 objects of 4 MiB, from 32
// goroutines (qd32) or one (qd1, where an operation alone in flight waits
// blocked in librados), through the asynchronous path the engine uses.
// Set against fio's rbd engine (bench/rados.sh), it tells whether a gap
// is in librados use or above it.
func BenchmarkRandomIO(b *testing.B) {
	s := OpenTestStore(b)
	ctx := context.Background()
	const objects, objSize, bs = 64, 4 << 20, 4096
	buf := make([]byte, 1<<20)
	for i := range objects {
		for off := 0; off < objSize; off += len(buf) {
			if err := s.WriteAt(ctx, fmt.Sprintf("bench/%d", i), buf, int64(off)); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, qd := range []int{32, 1} {
		for _, write := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/qd%d", map[bool]string{false: "read", true: "write"}[write], qd), func(b *testing.B) {
				randomIO(b, s, write, qd, objects, objSize, bs)
			})
		}
	}
}

// randomIO runs b.N operations of bs bytes at random offsets of the
// objects from qd goroutines.
func randomIO(b *testing.B, s *Store, write bool, qd, objects, objSize, bs int) {
	ctx := context.Background()
	var wg sync.WaitGroup
	n := b.N
	var mu sync.Mutex
	b.SetBytes(int64(bs))
	b.ResetTimer()
	for range qd {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, bs)
			for {
				mu.Lock()
				if n == 0 {
					mu.Unlock()
					return
				}
				n--
				mu.Unlock()
				name := fmt.Sprintf("bench/%d", rand.IntN(objects))
				off := int64(rand.IntN(objSize/bs) * bs)
				var err error
				if write {
					// Durable, as RBD's writes without a cache are
					// when they return.
					if err = s.WriteAt(ctx, name, p, off); err == nil {
						err = s.Sync(ctx, name)
					}
				} else {
					err = s.ReadAt(ctx, name, p, off)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
}
