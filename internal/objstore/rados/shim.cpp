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

extern "C" void archipAioDone(rados_completion_t c, void *arg);

struct archip_lent {
	librados::bufferlist bl;
	librados::AioCompletion *c;
};

int archip_lend_read(rados_ioctx_t io, const char *oid, size_t len, uint64_t off, uintptr_t h, archip_lent **out) {
	librados::IoCtx ioctx;
	librados::IoCtx::from_rados_ioctx_t(io, ioctx);
	archip_lent *l = new archip_lent;
	// The callback gets the completion's C handle, as with the C API.
	// Without h there is none: the caller waits in archip_lent_wait.
	l->c = h ? librados::Rados::aio_create_completion((void *)h, archipAioDone)
	         : librados::Rados::aio_create_completion();
	int r = ioctx.aio_read(oid, l->c, &l->bl, len, off);
	if (r < 0) {
		l->c->release();
		delete l;
		return r;
	}
	*out = l;
	return 0;
}

void archip_lent_wait(archip_lent *l) {
	l->c->wait_for_complete();
}

int archip_lent_result(archip_lent *l, struct iovec *iov, int max, int *n) {
	int r = l->c->get_return_value();
	int i = 0;
	if (r > 0) {
		for (const auto &p : l->bl.buffers()) {
			if (p.length() == 0) continue;
			if (i < max) {
				iov[i].iov_base = (void *)p.c_str();
				iov[i].iov_len = p.length();
			}
			i++;
		}
	}
	*n = i;
	return r;
}

void archip_lent_free(archip_lent *l) {
	l->c->release();
	delete l;
}
