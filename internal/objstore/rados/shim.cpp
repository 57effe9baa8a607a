//go:build ceph

#include <rados/librados.hpp>

#include "shim.h"

int archip_copy(rados_ioctx_t io, const char *src, const char *dst) {
	librados::IoCtx ioctx;
	librados::IoCtx::from_rados_ioctx_t(io, ioctx);
	librados::ObjectWriteOperation op;
	op.create(true);
	// Version 0: whatever version src has when the OSD reads it. The
	// copy is atomic either way.
	op.copy_from(src, ioctx, 0, 0);
	return ioctx.operate(dst, &op);
}
