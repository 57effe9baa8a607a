// Declarations of shim.cpp: what the rados package needs from librados's
// C++ API, which has operations its C API lacks.
#include <stdint.h>
#include <sys/uio.h>
#include <rados/librados.h>

#ifdef __cplusplus
extern "C" {
#endif

// archip_copy creates dst with the content of src, both in the pool and
// namespace of io, inside the OSDs (copy_from): the data does not travel
// through this process. It fails with -EEXIST if dst exists and -ENOENT
// if src does not.
int archip_copy(rados_ioctx_t io, const char *src, const char *dst);

// A lent read: librados reads into buffers of its own (a bufferlist),
// which the caller reads in place and then frees, instead of librados
// copying them into the caller's buffer.
typedef struct archip_lent archip_lent;

// archip_lend_read starts an asynchronous read of len bytes of oid at off
// into *out; the completion calls archipAioDone with arg h, or has no
// callback if h is 0 (then wait with archip_lent_wait). It returns a
// negative errno if the read could not be started.
int archip_lend_read(rados_ioctx_t io, const char *oid, size_t len, uint64_t off, uintptr_t h, archip_lent **out);

// archip_lent_wait waits until the read has completed.
void archip_lent_wait(archip_lent *l);

// archip_lent_result returns the read's result (bytes read, or a
// negative errno) and fills up to max iovecs with the buffers holding the
// bytes, setting *n to their number (or to the number needed, if more
// than max).
int archip_lent_result(archip_lent *l, struct iovec *iov, int max, int *n);

// archip_lent_free frees the buffers and the completion.
void archip_lent_free(archip_lent *l);

#ifdef __cplusplus
}
#endif
