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
	done := cgo.Handle(uintptr(arg)).Value().(chan aioResult)
	done <- aioResult{ret: int(C.rados_aio_get_return_value(c)), c: c}
}
