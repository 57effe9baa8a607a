package objstore

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// writeUncached writes data, the whole content of the new file fh, around
// the page cache (O_DIRECT) where it can: its whole 4 KiB pages that way,
// a last partial page through the cache. It reports false, having written
// nothing, where it cannot (data small or not aligned in memory, a file
// system without O_DIRECT).
func writeUncached(fh *os.File, data []byte) (bool, error) {
	if len(data) < uncachedMin || !aligned(data) {
		return false, nil
	}
	fd := fh.Fd()
	fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		return false, nil
	}
	if _, err := unix.FcntlInt(fd, unix.F_SETFL, fl|unix.O_DIRECT); err != nil {
		return false, nil
	}
	n := len(data) &^ (uncachedAlign - 1)
	w, err := fh.Write(data[:n])
	if _, serr := unix.FcntlInt(fd, unix.F_SETFL, fl); err == nil && serr != nil {
		err = serr
	}
	switch {
	case err != nil && w == 0 && errors.Is(err, syscall.EINVAL):
		return false, nil // alignment the file system refuses: through the cache
	case err != nil:
		return true, err
	case n < len(data):
		_, err = fh.Write(data[n:])
	}
	return true, err
}

// readUncached reads p at off from fh around the page cache (O_DIRECT,
// through a descriptor of its own: fh may be shared) where it can: p
// large and aligned, off aligned. It reports false, having read nothing,
// where it cannot; else the bytes read and the error, as ReadAt.
func readUncached(fh *os.File, p []byte, off int64) (bool, int, error) {
	if len(p) < uncachedMin || len(p)%uncachedAlign != 0 || off%uncachedAlign != 0 || !aligned(p) {
		return false, 0, nil
	}
	rc, err := fh.SyscallConn()
	if err != nil {
		return false, 0, nil
	}
	// The descriptor is opened again by its number while Control holds
	// it: a Close meanwhile could otherwise hand the number to another
	// file, which would be read instead.
	var d *os.File
	if cerr := rc.Control(func(fd uintptr) {
		d, err = os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDONLY|unix.O_DIRECT, 0)
	}); cerr != nil {
		return true, 0, cerr // closed: as ReadAt answers
	}
	if err != nil {
		return false, 0, nil
	}
	defer d.Close()
	n, err := d.ReadAt(p, off)
	if n == 0 && errors.Is(err, syscall.EINVAL) {
		return false, 0, nil
	}
	return true, n, err
}

// aligned reports whether p starts on an uncachedAlign boundary in
// memory (the Go runtime puts buffers of a page or more at the start of
// a page, but does not promise it).
func aligned(p []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))%uncachedAlign == 0
}
