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
