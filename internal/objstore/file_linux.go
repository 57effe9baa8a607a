package objstore

import (
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// changeTime returns the file's change time (set by link, unlink, rename
// and writes, by the file server's clock) in nanoseconds.
func changeTime(in fs.FileInfo) int64 {
	if st, ok := in.Sys().(*syscall.Stat_t); ok {
		return st.Ctim.Sec*1e9 + st.Ctim.Nsec
	}
	return in.ModTime().UnixNano()
}

// datasync makes f's data durable, and the metadata needed to read it
// back (its size), but not its times: fdatasync, what a peer serving a
// raw file does on a flush.
func datasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
