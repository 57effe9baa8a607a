// Declarations of shim.cpp: what the rados package needs from librados's
// C++ API, which has operations its C API lacks.
#include <rados/librados.h>

#ifdef __cplusplus
extern "C" {
#endif

// archip_copy creates dst with the content of src, both in the pool and
// namespace of io, inside the OSDs (copy_from): the data does not travel
// through this process. It fails with -EEXIST if dst exists and -ENOENT
// if src does not.
int archip_copy(rados_ioctx_t io, const char *src, const char *dst);

#ifdef __cplusplus
}
#endif
