//go:build ceph

package rados

/*
#cgo LDFLAGS: -lrados
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"unsafe"

	"github.com/ceph/go-ceph/rados"

	"github.com/archipelago-go/archip/internal/objstore"
)

// Copy creates dst with src's content inside the OSDs (RADOS copy_from,
// through librados's C++ API in shim.cpp: neither its C API nor go-ceph
// has it), so copy-on-write of a block moves no data through this process.
// Objects in two namespaces (one of them in the catalog, see nsOf) are
// copied through this process: copy_from reads the namespace it writes.
func (s *Store) Copy(ctx context.Context, src, dst string) error {
	if err := objstore.ValidName(src); err != nil {
		return err
	}
	if err := s.markDirs(ctx, dst); err != nil {
		return err
	}
	// copy_from is an operation on dst: RADOS does not order it after
	// src's writes in flight, as it orders src's own operations. Their
	// failures are not this copy's: it copies what src holds, as a read
	// would (the writer that lost them reports them, through its Sync).
	if !isCat(src) {
		if _, err := s.merger.wait(ctx, src); err != nil {
			return err
		}
	}
	if s.nsOf(src) != s.nsOf(dst) {
		if err := objstore.ValidName(dst); err != nil {
			return err
		}
		b, _, err := s.Get(ctx, src)
		if err != nil {
			return err
		}
		_, err = s.Create(ctx, dst, b)
		return err
	}
	return s.creating(ctx, dst, func() error {
		return s.with(ctx, dst, func(io *rados.IOContext) error {
			csrc, cdst := C.CString(src), C.CString(dst)
			defer C.free(unsafe.Pointer(csrc))
			defer C.free(unsafe.Pointer(cdst))
			if r := C.archip_copy(C.rados_ioctx_t(io.Pointer()), csrc, cdst); r < 0 {
				return mapErr(errnoError(r))
			}
			return nil
		})
	})
}
