package nbd

import (
	"bytes"
	"math/rand/v2"
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

// TestLargeWritesRoundTrip: writes of every size around the steps the
// data buffer grows by land whole, whatever pieces the data comes in.
func TestLargeWritesRoundTrip(t *testing.T) {
	s, exps := newTestServer(t)
	exps["big"] = &memExport{data: make([]byte, defaultMaxRequest+4096)}
	c := dial(t, s)
	c.open("big")
	rng := rand.New(rand.NewPCG(1, 2))
	for i, n := range []int{1, firstPayload - 1, firstPayload, firstPayload + 1, 4 << 20, 8<<20 - 1, 8 << 20, 8<<20 + 1, defaultMaxRequest} {
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		c.nc.SetDeadline(time.Now().Add(30 * time.Second))
		c.request(cmdWrite, 0, uint64(i), 7, uint32(n), data)
		if e, _ := c.reply(uint64(i)); e != 0 {
			t.Fatalf("write of %d bytes: errno %d", n, e)
		}
		if got := exps["big"].snapshot()[7 : 7+n]; !bytes.Equal(got, data) {
			t.Fatalf("write of %d bytes: wrong data", n)
		}
	}
}
