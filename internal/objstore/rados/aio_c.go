//go:build ceph

package rados

/*
#cgo LDFLAGS: -lrados
#include <stdint.h>
#include <stdlib.h>
#include <rados/librados.h>

extern void archipAioDone(rados_completion_t c, void *arg);

// The handle travels through librados as the callback's argument.
static int archip_aio_read(rados_ioctx_t io, const char *oid, char *buf, size_t len, uint64_t off, uintptr_t h) {
	rados_completion_t c;
	int r = rados_aio_create_completion2((void *)h, archipAioDone, &c);
	if (r < 0) return r;
	r = rados_aio_read(io, oid, c, buf, len, off);
	if (r < 0) rados_aio_release(c);
	return r;
}

static int archip_aio_write(rados_ioctx_t io, const char *oid, const char *buf, size_t len, uint64_t off, uintptr_t h) {
	rados_completion_t c;
	int r = rados_aio_create_completion2((void *)h, archipAioDone, &c);
	if (r < 0) return r;
	r = rados_aio_write(io, oid, c, buf, len, off);
	if (r < 0) rados_aio_release(c);
	return r;
}
// One write operation of n extents, applied in order (writeMerger).
// librados copies each buffer into the operation, which the Objecter
// takes over: the caller may free the arrays and the buffers, and the
// operation is released, once this returns (rados_aio_write copies its
// buffer too).
static int archip_aio_writev(rados_ioctx_t io, const char *oid, char **bufs, size_t *lens, uint64_t *offs, int n, uintptr_t h) {
	rados_completion_t c;
	int r = rados_aio_create_completion2((void *)h, archipAioDone, &c);
	if (r < 0) return r;
	rados_write_op_t op = rados_create_write_op();
	for (int i = 0; i < n; i++) rados_write_op_write(op, bufs[i], lens[i], offs[i]);
	r = rados_aio_write_op_operate(op, io, c, oid, NULL, 0);
	rados_release_write_op(op);
	if (r < 0) rados_aio_release(c);
	return r;
}
*/
import "C"

import (
	"context"
	"fmt"
	"runtime"
	"runtime/cgo"
	"unsafe"

	"github.com/ceph/go-ceph/rados"
)

// The data path (ReadAt, WriteAt) uses librados's asynchronous calls:
// go-ceph has only blocking ones, which park an OS thread on a condition
// variable per I/O and cost two thread handoffs; here the goroutine waits
// on a channel that librados's completion callback fills. The Go buffer is
// pinned (runtime.Pinner) while librados holds it.

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
	done := make(chan aioResult, 1)
	h := cgo.NewHandle(done)
	defer h.Delete()
	ioctx := C.rados_ioctx_t(io.Pointer())
	buf := (*C.char)(unsafe.Pointer(&p[0]))
	var r C.int
	if write {
		r = C.archip_aio_write(ioctx, oid, buf, C.size_t(len(p)), C.uint64_t(off), C.uintptr_t(h))
	} else {
		r = C.archip_aio_read(ioctx, oid, buf, C.size_t(len(p)), C.uint64_t(off), C.uintptr_t(h))
	}
	if r < 0 {
		return 0, mapErr(errnoError(r))
	}
	res := <-done
	C.rados_aio_release(res.c)
	if res.ret < 0 {
		return 0, mapErr(errnoError(res.ret))
	}
	return res.ret, nil
}

// aioSubmit sends one write operation of the extents, applied in
// order, in name (writeMerger), and returns once librados has copied
// their bytes; done gets the operation's outcome, on a librados thread,
// unless aioSubmit returns an error (then nothing was sent). One extent
// is a plain asynchronous write.
func aioSubmit(io *rados.IOContext, name string, ext []extent, done func(error)) error {
	oid := C.CString(name)
	defer C.free(unsafe.Pointer(oid))
	h := cgo.NewHandle(aioCallback(done))
	ioctx := C.rados_ioctx_t(io.Pointer())
	var r C.int
	if len(ext) == 1 {
		e := ext[0]
		r = C.archip_aio_write(ioctx, oid, (*C.char)(unsafe.Pointer(&e.p[0])), C.size_t(len(e.p)), C.uint64_t(e.off), C.uintptr_t(h))
	} else {
		n := len(ext)
		// The arrays live in C memory: cgo lets no Go pointer be passed
		// inside memory passed to C. librados copies the bytes before
		// the call returns, so the pins end with it. bufs is zeroed
		// (calloc): storing a Go pointer runs the write barrier, which
		// shades the value it overwrites as a pointer, and a stale one
		// left by malloc (an earlier call's buffer, freed since) is a
		// pointer to freed memory: the runtime died of it, or could
		// have kept freed memory marked (TestMergedWritesUnderGC).
		bufs := unsafe.Slice((**C.char)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof((*C.char)(nil))))), n)
		lens := unsafe.Slice((*C.size_t)(C.malloc(C.size_t(n)*C.size_t(unsafe.Sizeof(C.size_t(0))))), n)
		offs := unsafe.Slice((*C.uint64_t)(C.malloc(C.size_t(n)*C.size_t(unsafe.Sizeof(C.uint64_t(0))))), n)
		defer C.free(unsafe.Pointer(&bufs[0]))
		defer C.free(unsafe.Pointer(&lens[0]))
		defer C.free(unsafe.Pointer(&offs[0]))
		var pin runtime.Pinner
		for i, e := range ext {
			pin.Pin(&e.p[0])
			bufs[i], lens[i], offs[i] = (*C.char)(unsafe.Pointer(&e.p[0])), C.size_t(len(e.p)), C.uint64_t(e.off)
		}
		r = C.archip_aio_writev(ioctx, oid, &bufs[0], &lens[0], &offs[0], C.int(n), C.uintptr_t(h))
		pin.Unpin()
	}
	if r < 0 {
		h.Delete()
		return mapErr(errnoError(r))
	}
	return nil
}

// aioCallback is a completion's callback that aioSubmit's caller gave.
type aioCallback func(error)
