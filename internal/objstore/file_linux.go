package objstore

import (
	"io/fs"
	"syscall"
)

// changeTime returns the file's change time (set by link, unlink, rename
// and writes, by the file server's clock) in nanoseconds.
func changeTime(in fs.FileInfo) int64 {
	if st, ok := in.Sys().(*syscall.Stat_t); ok {
		return st.Ctim.Sec*1e9 + st.Ctim.Nsec
	}
	return in.ModTime().UnixNano()
}
