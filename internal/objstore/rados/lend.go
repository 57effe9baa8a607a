//go:build ceph

package rados

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/ceph/go-ceph/rados"

	"github.com/archipelago-go/archip/internal/objstore"
)

var _ objstore.Lender = (*Store)(nil)

// ReadLend reads with librados's C++ API into buffers librados allocates
// (its C API copies them into the caller's buffer: 14% of the daemon's
// CPU time for 1 MiB reads) and passes those to fn before freeing them.
func (s *Store) ReadLend(ctx context.Context, name string, off int64, n int, fn func(bufs [][]byte) error) error {
	if off < 0 || n < 0 {
		return fmt.Errorf("rados: negative offset %d or length %d", off, n)
	}
	if err := objstore.ValidName(name); err != nil {
		return err
	}
	if n == 0 {
		if _, err := s.Stat(ctx, name); err != nil {
			return err
		}
		return fn(nil)
	}
	if isCat(name) {
		// Its namespace needs an I/O context of its own, and the
		// catalog's objects are small: a plain read.
		p := make([]byte, n)
		var got int
		err := s.withData(ctx, name, func(io *rados.IOContext) (err error) {
			got, err = aio(ctx, io, false, name, p, off)
			return err
		})
		if err != nil {
			return err
		}
		return fn([][]byte{p[:got]})
	}
	oid := C.CString(name)
	defer C.free(unsafe.Pointer(oid))
	done, h, end := startWait()
	var l *C.archip_lent
	if r := C.archip_lend_read(C.rados_ioctx_t(s.data.Pointer()), oid, C.size_t(n), C.uint64_t(off), C.uintptr_t(h), &l); r < 0 {
		end()
		return mapErr(errnoError(r))
	}
	defer C.archip_lent_free(l)
	// librados owns the buffers until the read completes, whatever ctx
	// says.
	if done == nil {
		C.archip_lent_wait(l)
	} else {
		<-done
	}
	end() // before fn, which may take long: the read is no longer in flight
	var iov [16]C.struct_iovec
	var nbuf C.int
	r := C.archip_lent_result(l, &iov[0], C.int(len(iov)), &nbuf)
	if r < 0 {
		return mapErr(errnoError(r))
	}
	vec := iov[:]
	if int(nbuf) > len(iov) {
		vec = make([]C.struct_iovec, nbuf)
		C.archip_lent_result(l, &vec[0], nbuf, &nbuf)
	}
	bufs := make([][]byte, nbuf)
	for i := range bufs {
		bufs[i] = unsafe.Slice((*byte)(vec[i].iov_base), int(vec[i].iov_len))
	}
	return fn(bufs)
}
