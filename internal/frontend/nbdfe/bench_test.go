package nbdfe

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/daemon"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/nbd"
	"github.com/archipelago-go/archip/internal/objstore"
)

// BenchmarkNBDRead is bench/nbd.sh's 4 KiB random read row in one
// process: a daemon on a file store serves a 16 MiB volume over a unix
// socket, and a raw NBD client keeps 32 reads of 4 KiB in flight, with
// the daemon's metrics off and on (the store counted too, as 'archip
// serve' does). Compare the two within one run (docs/benchmarks.md):
//
//	go test ./internal/frontend/nbdfe -run '^$' -bench NBDRead -count 6
func BenchmarkNBDRead(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", on), func(b *testing.B) { benchNBDRead(b, on) })
	}
}

func benchNBDRead(b *testing.B, metrics bool) {
	const size, depth = 16 << 20, 32
	r, w := benchConn(b, metrics, size, 1<<20, func(buf []byte, off int64) {
		for i := range buf {
			buf[i] = byte(off>>20) + byte(i)
		}
	})
	rnd := rand.New(rand.NewPCG(1, 2))
	hdr := make([]byte, 16)
	data := make([]byte, 4096)
	b.SetBytes(4096)
	cpu0 := cpuTime()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(depth, b.N-done)
		for i := range n {
			req := binary.BigEndian.AppendUint32(nil, 0x25609513) // request magic
			req = binary.BigEndian.AppendUint16(req, 0)           // flags
			req = binary.BigEndian.AppendUint16(req, 0)           // read
			req = binary.BigEndian.AppendUint64(req, uint64(i))
			req = binary.BigEndian.AppendUint64(req, uint64(rnd.IntN(size/4096))*4096)
			req = binary.BigEndian.AppendUint32(req, 4096)
			w.Write(req)
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		for range n {
			if _, err := io.ReadFull(r, hdr); err != nil {
				b.Fatal(err)
			}
			if binary.BigEndian.Uint32(hdr) != 0x67446698 || binary.BigEndian.Uint32(hdr[4:]) != 0 {
				b.Fatalf("reply %x", hdr)
			}
			if _, err := io.ReadFull(r, data); err != nil {
				b.Fatal(err)
			}
		}
		done += n
	}
	b.StopTimer()
	// The process's CPU time (client, server and daemon) per read: less
	// sensitive than the elapsed time to what else the machine runs.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// exportName does the fixed newstyle handshake and NBD_OPT_EXPORT_NAME.
func exportName(r *bufio.Reader, w *bufio.Writer, name string) error {
	greet := make([]byte, 18)
	if _, err := io.ReadFull(r, greet); err != nil {
		return err
	}
	req := binary.BigEndian.AppendUint32(nil, 1|2) // fixed newstyle, no zeroes
	req = binary.BigEndian.AppendUint64(req, 0x49484156454F5054)
	req = binary.BigEndian.AppendUint32(req, 1) // NBD_OPT_EXPORT_NAME
	req = binary.BigEndian.AppendUint32(req, uint32(len(name)))
	w.Write(append(req, name...))
	if err := w.Flush(); err != nil {
		return err
	}
	_, err := io.ReadFull(r, make([]byte, 10)) // size, flags
	return err
}

// BenchmarkNBDWriteFlush is bench/nbd.sh's 4 KiB random write, QD1,
// fsync=1 row in one process: a daemon on a file store serves a fully
// written 16 MiB volume over a unix socket, and a raw NBD client sends a
// 4 KiB write, waits for its reply, sends a FLUSH and waits for its
// reply. TMPDIR on tmpfs takes the disk's fdatasync out of it:
//
//	TMPDIR=/dev/shm go test ./internal/frontend/nbdfe -run '^$' -bench NBDWriteFlush -count 6
func BenchmarkNBDWriteFlush(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", on), func(b *testing.B) { benchNBDWriteFlush(b, on) })
	}
}

func benchNBDWriteFlush(b *testing.B, metrics bool) {
	const size = 16 << 20
	r, w := benchConn(b, metrics, size, 64<<10, func(buf []byte, off int64) {
		for i := range buf {
			buf[i] = byte(i) | 1 // not zeros: a block of zeros is a hole
		}
	})
	rnd := rand.New(rand.NewPCG(1, 2))
	hdr := make([]byte, 16)
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i) | 1
	}
	roundTrip := func(typ uint16, off uint64, n uint32, payload []byte) {
		req := make([]byte, 0, 28)
		req = binary.BigEndian.AppendUint32(req, 0x25609513) // request magic
		req = binary.BigEndian.AppendUint16(req, 0)          // flags
		req = binary.BigEndian.AppendUint16(req, typ)
		req = binary.BigEndian.AppendUint64(req, uint64(typ))
		req = binary.BigEndian.AppendUint64(req, off)
		req = binary.BigEndian.AppendUint32(req, n)
		w.Write(req)
		w.Write(payload)
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, hdr); err != nil {
			b.Fatal(err)
		}
		if binary.BigEndian.Uint32(hdr) != 0x67446698 || binary.BigEndian.Uint32(hdr[4:]) != 0 {
			b.Fatalf("reply %x", hdr)
		}
	}
	b.SetBytes(4096)
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		roundTrip(1, uint64(rnd.IntN(size/4096))*4096, 4096, data) // write
		roundTrip(3, 0, 0, nil)                                    // flush
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// benchConn starts a daemon (with metrics when asked, the store counted
// too, as 'archip serve' does) on a file store in a temporary directory,
// with a volume "v" of size bytes written in full, each MiB at off filled
// by fill, serves it over a unix socket, and returns a raw client past
// the handshake (reading through a buffer of rsize bytes). Everything
// stops at the end of the benchmark.
func benchConn(b *testing.B, metrics bool, size int64, rsize int, fill func(buf []byte, off int64)) (*bufio.Reader, *bufio.Writer) {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()
	fs, err := objstore.OpenFile(filepath.Join(dir, "store"), true)
	if err != nil {
		b.Fatal(err)
	}
	if !objstore.FreshStat(fs) {
		b.Fatal("the file store's Stat is not fresh: a flush would swap the head")
	}
	var s objstore.Store = fs
	var mx *daemon.Metrics
	if metrics {
		mx = daemon.NewMetrics(daemon.MetricsConfig{})
		s = mx.WrapStore(s, "file")
	}
	m := manage.New(s)
	if _, err := m.CreateVolume(ctx, "v", uint64(size), 16); err != nil {
		b.Fatal(err)
	}
	d := daemon.New(m, nil)
	if mx != nil {
		d.UseMetrics(mx)
	}
	b.Cleanup(func() { d.Close(ctx) })
	v, release, err := d.Open(ctx, "v")
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		fill(buf, off)
		if err := v.WriteAt(ctx, buf, off, false); err != nil {
			b.Fatal(err)
		}
	}
	if err := v.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	release()

	srv := &nbd.Server{Exports: Exports{d}, Errno: Errno, MaxConns: 4}
	l, err := net.Listen("unix", filepath.Join(dir, "nbd.sock"))
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Shutdown(ctx) })
	nc, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nc.Close() })
	r, w := bufio.NewReaderSize(nc, rsize), bufio.NewWriterSize(nc, 64<<10)
	if err := exportName(r, w, "v"); err != nil {
		b.Fatal(err)
	}
	return r, w
}
