//go:build !linux

package objstore

import (
	"io/fs"
	"os"
	"time"
)

// changeTime returns the file's modification time in nanoseconds, where
// the change time is not at hand.
func changeTime(in fs.FileInfo) int64 { return in.ModTime().UnixNano() }

// datasync makes f durable.
func datasync(f *os.File) error { return f.Sync() }

// localFS: not known here, so the store is taken as shared.
func localFS(dir string) bool { return false }

// syncWritesInode: not known here.
func syncWritesInode(dir string) bool { return false }

// statGen stats the generation file at path (not following a symbolic
// link): its size, modification time and identity (device, inode and
// change time; see genID).
func statGen(path string) (size int64, mtime time.Time, id genID, mode fs.FileMode, err error) {
	in, err := os.Lstat(path)
	if err != nil {
		return 0, time.Time{}, genID{}, 0, err
	}
	fid := idOf(in)
	return in.Size(), in.ModTime(), genID{dev: fid.dev, ino: fid.ino, ctime: changeTime(in)}, in.Mode().Type(), nil
}
