//go:build ceph

package rados

import (
	"runtime"
	"testing"
	"time"
)

// TestReview34PanicInMergedSubmitLeaksPin: a panic while aioSubmit pins a
// merged operation's buffers (here: an empty extent after a non-empty
// one) leaves the runtime.Pinner pinned; its finalizer then panics on the
// finalizer goroutine and kills the process (pre-existing, not in
// 071ff39..HEAD, but the same panic path as the opsInFlight leak).
func TestReview34PanicInMergedSubmitLeaksPin(t *testing.T) {
	s := OpenTestStore(t)
	func() {
		defer func() { recover() }()
		aioSubmit(s.data, "r34/pin", []extent{{p: []byte{1}, off: 0}, {p: nil, off: 1}}, func(error) {})
	}()
	for range 5 {
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
	}
}
