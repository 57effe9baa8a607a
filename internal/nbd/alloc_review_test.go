package nbd

import (
	"runtime"
	"testing"
	"time"
)

// TestWriteHeaderDoesNotSizeAllocation (review of issue 10 #10): a WRITE
// header claiming MaxRequest bytes made the server allocate them all at
// once, before any data came: 28 bytes per connection for 32 MiB, held
// until the data came or (now) ReplyTimeout passed. The buffer must grow
// with the data received instead.
func TestWriteHeaderDoesNotSizeAllocation(t *testing.T) {
	const conns = 8
	s, exps := newTestServer(t)
	big := &bigExport{memExport: exps["rw"]} // 1 TiB: any write is in range
	s.Exports = extraExports{exps, map[string]Export{"big": big}}
	cs := make([]*client, conns)
	for i := range cs {
		cs[i] = dial(t, s)
		cs[i].open("big")
	}
	// Empty the buffer pools (and their victim caches), so that every
	// buffer the server takes is allocated.
	runtime.GC()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, c := range cs {
		c.request(cmdWrite, 0, 1, 0, defaultMaxRequest, []byte{1})
	}
	// The server reads the headers at once; give it time to show what
	// it allocates for them.
	limit := uint64(conns * defaultMaxRequest / 2)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var now runtime.MemStats
		runtime.ReadMemStats(&now)
		if d := now.TotalAlloc - before.TotalAlloc; d > limit {
			t.Fatalf("%d WRITE headers of %d bytes with 1 byte of data each made the server allocate %d MiB", conns, defaultMaxRequest, d>>20)
		}
	}
}
