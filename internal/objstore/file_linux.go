package objstore

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

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

// localFS reports whether dir is on a file system that only this host
// writes, whose stat and directory listing are never a cache's: the
// common local disk file systems. Anything else (NFS, CIFS, FUSE, a
// cluster file system) is taken as shared.
func localFS(dir string) bool {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return false
	}
	switch uint32(st.Type) {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.TMPFS_MAGIC,
		unix.F2FS_SUPER_MAGIC, 0x2fc12fc1 /* zfs */, unix.OVERLAYFS_SUPER_MAGIC:
		return true
	}
	return false
}

// syncWritesInode reports whether dir is on ext4 without a journal,
// where fdatasync writes the inode after a write moved the file's times
// (objstore.InodeSyncer), unless it is mounted with lazytime (which
// keeps a change of times in memory). ext4 says whether it has a journal
// in sysfs: /sys/fs/ext4/<device>/journal_task holds "<none>" without
// one. Without that file to read (no sysfs, another kernel), the answer
// is no.
func syncWritesInode(dir string) bool {
	var sf unix.Statfs_t
	if unix.Statfs(dir, &sf) != nil || uint32(sf.Type) != unix.EXT4_SUPER_MAGIC {
		return false
	}
	var st unix.Stat_t
	if unix.Stat(dir, &st) != nil {
		return false
	}
	major, minor := unix.Major(st.Dev), unix.Minor(st.Dev)
	return ext4NoJournal(sysfsRoot, major, minor) && !lazytime(mountInfo, major, minor)
}

// sysfsRoot is where sysfs is mounted, and mountInfo this process's
// table of mounts.
const (
	sysfsRoot = "/sys"
	mountInfo = "/proc/self/mountinfo"
)

// lazytime reports whether the file system on device major:minor is
// mounted with lazytime, from the mount table at path (mountinfo's
// format: the device is the third field, the super block's options the
// last). Unreadable, the answer is no.
func lazytime(path string, major, minor uint32) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	dev := fmt.Sprintf("%d:%d", major, minor)
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != dev {
			continue
		}
		if slices.Contains(strings.Split(f[len(f)-1], ","), "lazytime") {
			return true
		}
	}
	return false
}

// ext4NoJournal reports whether the ext4 file system on device
// major:minor has no journal, from sysfs under root: the device's name
// is that of the link /sys/dev/block/<major>:<minor>.
func ext4NoJournal(root string, major, minor uint32) bool {
	dev, err := os.Readlink(filepath.Join(root, "dev", "block", fmt.Sprintf("%d:%d", major, minor)))
	if err != nil {
		return false
	}
	b, err := os.ReadFile(filepath.Join(root, "fs", "ext4", filepath.Base(dev), "journal_task"))
	return err == nil && strings.TrimSpace(string(b)) == "<none>"
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

// statGen stats the generation file at path (not following a symbolic
// link) with one statx, returning its size, modification time and
// identity: device, inode, change time and, where the file system
// records it, birth time (see genID).
func statGen(path string) (size int64, mtime time.Time, id genID, mode fs.FileMode, err error) {
	var st unix.Statx_t
	for {
		err = unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &st)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return 0, time.Time{}, genID{}, 0, &fs.PathError{Op: "statx", Path: path, Err: err}
	}
	id = genID{dev: uint64(st.Dev_major)<<32 | uint64(st.Dev_minor), ino: st.Ino, ctime: st.Ctime.Sec*1e9 + int64(st.Ctime.Nsec)}
	if st.Mask&unix.STATX_BTIME != 0 && !noBirthTime {
		id.birth = st.Btime.Sec*1e9 + int64(st.Btime.Nsec)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFLNK:
		mode = fs.ModeSymlink
	default:
		mode = fs.ModeIrregular
	}
	return int64(st.Size), time.Unix(st.Mtime.Sec, int64(st.Mtime.Nsec)), id, mode, nil
}
