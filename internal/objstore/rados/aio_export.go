//go:build ceph

package rados

/*
#include <rados/librados.h>
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// archipAioDone is librados's completion callback (on a librados thread).
//
//export archipAioDone
func archipAioDone(c C.rados_completion_t, arg unsafe.Pointer) {
	h := cgo.Handle(uintptr(arg))
	switch done := h.Value().(type) {
	case chan aioResult:
		done <- aioResult{ret: int(C.rados_aio_get_return_value(c)), c: c}
	case aioCallback:
		// Nobody waits for this completion: release it here (librados
		// holds a reference of its own until the callback returns).
		h.Delete()
		ret := int(C.rados_aio_get_return_value(c))
		C.rados_aio_release(c)
		var err error
		if ret < 0 {
			err = mapErr(errnoError(ret))
		}
		done(err)
	}
}
