package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openUnnamed opens an unnamed file in dir (O_TMPFILE), which vanishes
// with the process if it dies before linkFile gives it a name. It
// returns nil where the file system cannot (the caller falls back to a
// named temporary file).
func openUnnamed(dir string) *os.File {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		return nil // linkFile needs it
	}
	if dir == "" {
		dir = "."
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), dir)
}

// linkFile gives the unnamed file f the name name; it fails (fs.ErrExist)
// if name exists.
func linkFile(f *os.File, name string) error {
	err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW)
	if err != nil {
		return &os.LinkError{Op: "link", Old: f.Name() + " (unnamed)", New: name, Err: err}
	}
	return nil
}
