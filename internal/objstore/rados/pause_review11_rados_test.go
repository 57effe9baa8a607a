//go:build ceph

package rados

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func (s *Store) monReview11(t *testing.T, cmd map[string]any) {
	t.Helper()
	b, _ := json.Marshal(cmd)
	if _, info, err := s.conn.MonCommand(b); err != nil {
		t.Fatalf("%v: %v (%s)", cmd, err, info)
	}
}

// TestReview11PauseReadAfterWrite attacks "a write that returned is
// visible to every later read through the same Store": with the cluster's
// pause flag set (ceph osd pause, as an operator does in maintenance),
// librados's Objecter holds every op. A WriteAt now returns once
// librados has the op (held, at no OSD); a read and a Stat sent after it
// are held too, and once the pause ends must see it (the Objecter resends
// held ops in the order it took them). (Pacific has no way to set
// pausewr alone, which would hold writes and let reads through.)
func TestReview11PauseReadAfterWrite(t *testing.T) {
	s := OpenTestStore(t)
	const name = "blk/pause"
	old := bytes.Repeat([]byte{'o'}, 4096)
	if _, err := s.Put(ctx, name, old); err != nil {
		t.Fatal(err)
	}
	s.monReview11(t, map[string]any{"prefix": "osd set", "key": "pause"})
	unpaused := false
	unpause := func() {
		if !unpaused {
			unpaused = true
			s.monReview11(t, map[string]any{"prefix": "osd unset", "key": "pause"})
		}
	}
	t.Cleanup(unpause) // before the store's Close, which drains
	if err := s.conn.WaitForLatestOSDMap(); err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte{'n'}, 8192) // rewrites the 4 KiB and grows the object
	done := make(chan error, 1)
	go func() { done <- s.WriteAt(ctx, name, p, 0) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WriteAt while writes are paused: %v", err)
		}
	case <-time.After(10 * time.Second):
		// Waiting for the pause to end is what a durable-on-return write
		// does, which in-place writes no longer are.
		unpause()
		<-done
		t.Fatal("WriteAt waited while the cluster's operations were paused: it should return once sent")
	}
	// The write returned: every later read through this Store sees it,
	// also one sent while the ops are held (they are resent in order).
	got := make([]byte, len(p))
	type res struct {
		size int64
		err  error
	}
	reads := make(chan res, 2)
	go func() { reads <- res{-1, s.ReadAt(ctx, name, got, 0)} }()
	go func() { in, err := s.Stat(ctx, name); reads <- res{in.Size, err} }()
	time.Sleep(2 * time.Second)
	unpause()
	size := int64(-1)
	for range 2 {
		select {
		case r := <-reads:
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.size >= 0 {
				size = r.size
			}
		case <-time.After(time.Minute):
			t.Fatal("a read hung after the pause ended")
		}
	}
	if !bytes.Equal(got, p) || size != int64(len(p)) {
		t.Fatalf("a read after a WriteAt that returned (ops paused) reads %q... (size %d), want %q... (size %d)",
			got[:8], size, p[:8], len(p))
	}
	if err := s.Sync(ctx, name); err != nil {
		t.Fatal(err)
	}
}
