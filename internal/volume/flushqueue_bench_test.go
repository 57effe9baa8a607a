package volume

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// slowWrites delays each in-place write of a data object by a fixed
// time, as a network round trip to an OSD does.
type slowWrites struct {
	*objstore.Mem
	delay time.Duration
}

type slowHandle struct {
	objstore.Handle
	delay time.Duration
}

func (h slowHandle) WriteAt(p []byte, off int64) error {
	time.Sleep(h.delay)
	return h.Handle.WriteAt(p, off)
}

func (s slowWrites) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	h, err := s.Mem.OpenHandle(ctx, name, create, writable)
	if err != nil || !writable || !strings.Contains(name, "/d/") {
		return h, err
	}
	return slowHandle{h, s.delay}, nil
}

// BenchmarkFlushQueue is fio's --rw=write --bs=64k --iodepth=8
// --fsync=32 on a written volume whose in-place writes take 1 ms (a
// RADOS round trip, on an idle machine a few hundred µs): 8 requests in
// flight, every 32nd a flush, which holds its slot until it returns, as
// over NBD. A flush that drains the queue shows as a lower rate of
// writes. Writes per second: b.N writes / elapsed.
func BenchmarkFlushQueue(b *testing.B) {
	const qd, every = 8, 32
	ctx := context.Background()
	s := slowWrites{Mem: objstore.NewMem(), delay: time.Millisecond}
	blocks := int64(16)
	id, err := Create(ctx, s, CreateOptions{Size: uint64(blocks << SmallShift), BlockShift: SmallShift})
	if err != nil {
		b.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true})
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close(ctx)
	size := blocks << SmallShift
	if err := v.WriteAt(ctx, make([]byte, size), 0, false); err != nil {
		b.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	const n = 64 << 10 >> 2 // 16 KiB: 4 writes per 64 KiB block
	p := make([]byte, n)
	slots := make(chan struct{}, qd)
	var wg sync.WaitGroup
	var off int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 && i%every == 0 {
			slots <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := v.Flush(ctx); err != nil {
					b.Error(err)
				}
				<-slots
			}()
		}
		slots <- struct{}{}
		wg.Add(1)
		go func(off int64) {
			defer wg.Done()
			if err := v.WriteAt(ctx, p, off, false); err != nil {
				b.Error(err)
			}
			<-slots
		}(off)
		off = (off + n) % size
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}
