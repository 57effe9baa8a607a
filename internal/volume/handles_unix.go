//go:build unix

package volume

import "syscall"

// fdLimit is the process's soft RLIMIT_NOFILE, or 0 if unknown.
func fdLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return r.Cur
}
