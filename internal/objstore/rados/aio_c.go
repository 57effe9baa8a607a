//go:build ceph

package rados

/*
#cgo LDFLAGS: -lrados
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <rados/librados.h>

extern void archipAioDone(rados_completion_t c, void *arg);

// The handle travels through librados as the callback's argument; with
// h 0 the completion has no callback, and *cp is for archip_aio_wait.
static int archip_completion(uintptr_t h, rados_completion_t *cp) {
	if (h == 0) return rados_aio_create_completion2(NULL, NULL, cp);
	return rados_aio_create_completion2((void *)h, archipAioDone, cp);
}

static int archip_aio_read(rados_ioctx_t io, const char *oid, char *buf, size_t len, uint64_t off, uintptr_t h, rados_completion_t *cp) {
	int r = archip_completion(h, cp);
	if (r < 0) return r;
	r = rados_aio_read(io, oid, *cp, buf, len, off);
	if (r < 0) rados_aio_release(*cp);
	return r;
}

static int archip_aio_write(rados_ioctx_t io, const char *oid, const char *buf, size_t len, uint64_t off, uintptr_t h, rados_completion_t *cp) {
	int r = archip_completion(h, cp);
	if (r < 0) return r;
	r = rados_aio_write(io, oid, *cp, buf, len, off);
	if (r < 0) rados_aio_release(*cp);
	return r;
}

// archip_aio_wait waits for c, releases it and returns its result.
static int archip_aio_wait(rados_completion_t c) {
	rados_aio_wait_for_complete(c);
	int r = rados_aio_get_return_value(c);
	rados_aio_release(c);
	return r;
}

// One write operation of n extents, applied in order (writeMerger).
// librados copies each buffer into the operation, which the Objecter
// takes over: the caller may free the arrays and the buffers, and the
// operation is released, once this returns (rados_aio_write copies its
// buffer too).
static int archip_aio_writev(rados_ioctx_t io, const char *oid, char **bufs, size_t *lens, uint64_t *offs, int n, uintptr_t h, rados_completion_t *cp) {
	int r = archip_completion(h, cp);
	if (r < 0) return r;
	rados_write_op_t op = rados_create_write_op();
	for (int i = 0; i < n; i++) rados_write_op_write(op, bufs[i], lens[i], offs[i]);
	r = rados_aio_write_op_operate(op, io, *cp, oid, NULL, 0);
	rados_release_write_op(op);
	if (r < 0) rados_aio_release(*cp);
	return r;
}
*/
import "C"

import (
	"context"
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync/atomic"
	"unsafe"

	"github.com/ceph/go-ceph/rados"
)

// The data path (ReadAt, WriteAt) uses librados's asynchronous calls,
// with one of two ways to wait for an operation (go-ceph has only
// blocking calls, the first way for every operation):
//   - A goroutine blocked in librados's wait (archip_aio_wait) wakes as
//     soon as the reply is in: the messenger thread that reads it wakes
//     the waiting thread.
//   - A completion callback runs later, on librados's finisher thread,
//     and enters Go to wake a goroutine: two more thread hand-offs. For
//     4 KiB writes at QD1 on a one-OSD cluster here, a write and its wait
//     took about a third longer this way.
// But a blocked wait holds an OS thread for the round trip, and under a
// deep queue the threads returning from it contend for the runtime's
// processors with everything else (4 of 32 waiting so cost a sixth of
// the 4 KiB random reads at QD32). So an operation waits blocked only
// when it is alone, with no other operation of the process in flight: a
// guest's reads at QD1, a write and its flush. A deep queue's take the
// callback, where one thread runs every completion. The Go buffer is
// pinned (runtime.Pinner) while librados holds it.

// opsInFlight counts the process's data operations sent and not complete;
// alone counts those that were alone when started (tests).
var opsInFlight, alone atomic.Int64

// opStart counts an operation about to be sent, and reports whether it
// is alone (then it waits blocked); opDone ends it, once complete or not
// sent.
func opStart() bool {
	if opsInFlight.Add(1) == 1 {
		alone.Add(1)
		return true
	}
	return false
}

func opDone() { opsInFlight.Add(-1) }

// startWait starts an operation that its caller waits for: it counts it
// (opStart) and, unless it is alone, makes the channel its callback fills
// and the handle that carries that to the callback (h is 0 and done nil
// for one alone). end undoes both, once the operation has completed or
// was not sent (not later: the count is of operations in flight).
func startWait() (done chan aioResult, h cgo.Handle, end func()) {
	if opStart() {
		return nil, 0, opDone
	}
	done = make(chan aioResult, 1)
	h = cgo.NewHandle(done)
	return done, h, func() {
		h.Delete()
		opDone()
	}
}

// aioResult is what the completion callback reports.
type aioResult struct {
	ret int
	c   C.rados_completion_t
}

// errnoError carries a librados return code, for mapErr.
type errnoError int

func (e errnoError) Error() string  { return fmt.Sprintf("librados error %d", int(e)) }
func (e errnoError) ErrorCode() int { return int(e) }

// aio runs one asynchronous read or write of p at off and returns
// librados's result (bytes read for a read). It waits for the operation
// even if ctx ends, since librados uses p until then.
func aio(ctx context.Context, io *rados.IOContext, write bool, name string, p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var pin runtime.Pinner
	pin.Pin(&p[0])
	defer pin.Unpin()
	oid := C.CString(name)
	defer C.free(unsafe.Pointer(oid))
	done, h, end := startWait()
	ioctx := C.rados_ioctx_t(io.Pointer())
	buf := (*C.char)(unsafe.Pointer(&p[0]))
	var c C.rados_completion_t
	var r C.int
	if write {
		r = C.archip_aio_write(ioctx, oid, buf, C.size_t(len(p)), C.uint64_t(off), C.uintptr_t(h), &c)
	} else {
		r = C.archip_aio_read(ioctx, oid, buf, C.size_t(len(p)), C.uint64_t(off), C.uintptr_t(h), &c)
	}
	if r < 0 {
		end()
		return 0, mapErr(errnoError(r))
	}
	var ret int
	if done == nil {
		ret = int(C.archip_aio_wait(c))
	} else {
		res := <-done
		C.rados_aio_release(res.c)
		ret = res.ret
	}
	end()
	if ret < 0 {
		return 0, mapErr(errnoError(ret))
	}
	return ret, nil
}

// aioSubmit sends one write operation of the extents, applied in
// order, in name (writeMerger), and returns once librados has copied
// their bytes; done gets the operation's outcome, on a librados thread,
// unless aioSubmit returns an error (then nothing was sent). One extent
// is a plain asynchronous write.
func aioSubmit(io *rados.IOContext, name string, ext []extent, done func(error)) error {
	oid := C.CString(name)
	defer C.free(unsafe.Pointer(oid))
	// A merged operation (several extents: writes queued behind the one
	// before) takes the callback even alone. Its completion sends the
	// next batch, and the callback's later wake-up lets more writes join
	// that batch: with each sent as soon as the last completed, 64 KiB
	// sequential writes at QD8 ran a tenth slower (more, smaller
	// operations for the OSD).
	blocked := opStart() && len(ext) == 1
	var h cgo.Handle
	if !blocked {
		h = cgo.NewHandle(aioCallback(func(err error) {
			opDone()
			done(err)
		}))
	}
	// Undone if not sent: an error, or a panic (an empty extent), which
	// the merger recovers; a count left behind would keep every later
	// operation from being alone.
	sent := false
	defer func() {
		if !sent {
			opDone()
			if h != 0 {
				h.Delete()
			}
		}
	}()
	ioctx := C.rados_ioctx_t(io.Pointer())
	var c C.rados_completion_t
	var r C.int
	if len(ext) == 1 {
		e := ext[0]
		r = C.archip_aio_write(ioctx, oid, (*C.char)(unsafe.Pointer(&e.p[0])), C.size_t(len(e.p)), C.uint64_t(e.off), C.uintptr_t(h), &c)
	} else {
		n := len(ext)
		// The arrays live in C memory: cgo lets no Go pointer be passed
		// inside memory passed to C. librados copies the bytes before
		// the call returns, so the pins end with it. bufs is zeroed
		// before use: storing a Go pointer runs the write barrier, which
		// shades the value it overwrites as a pointer, and a stale one
		// left by malloc (an earlier call's buffer, freed since) is a
		// pointer to freed memory: the runtime died of it, or could
		// have kept freed memory marked (TestMergedWritesUnderGC).
		// C.malloc, unlike C.calloc, never returns nil: out of memory
		// ends the process as Go's own allocations do.
		bsz := C.size_t(n) * C.size_t(unsafe.Sizeof((*C.char)(nil)))
		bufs := unsafe.Slice((**C.char)(C.memset(C.malloc(bsz), 0, bsz)), n)
		lens := unsafe.Slice((*C.size_t)(C.malloc(C.size_t(n)*C.size_t(unsafe.Sizeof(C.size_t(0))))), n)
		offs := unsafe.Slice((*C.uint64_t)(C.malloc(C.size_t(n)*C.size_t(unsafe.Sizeof(C.uint64_t(0))))), n)
		defer C.free(unsafe.Pointer(&bufs[0]))
		defer C.free(unsafe.Pointer(&lens[0]))
		defer C.free(unsafe.Pointer(&offs[0]))
		var pin runtime.Pinner
		defer pin.Unpin() // also after a panic: a pin never undone kills the process
		for i, e := range ext {
			pin.Pin(&e.p[0])
			bufs[i], lens[i], offs[i] = (*C.char)(unsafe.Pointer(&e.p[0])), C.size_t(len(e.p)), C.uint64_t(e.off)
		}
		r = C.archip_aio_writev(ioctx, oid, &bufs[0], &lens[0], &offs[0], C.int(n), C.uintptr_t(h), &c)
	}
	if r < 0 {
		return mapErr(errnoError(r))
	}
	sent = true
	if blocked {
		go func() {
			ret := int(C.archip_aio_wait(c))
			opDone()
			var err error
			if ret < 0 {
				err = mapErr(errnoError(ret))
			}
			done(err)
		}()
	}
	return nil
}

// aioCallback is a completion's callback that aioSubmit's caller gave.
type aioCallback func(error)
