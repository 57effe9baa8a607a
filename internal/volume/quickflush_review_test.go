package volume

import (
	"bytes"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestReviewCloseCoversWriteInFlight (review of the flush without the
// gate): Close flushes, then shuts the handle; a write that was in flight
// when Close began and that returns nil before Close does is persisted by
// Close's flush, as it was when every flush took its cut holding the
// gate (which waited for the write). With the cut taken without the gate
// (nothing dirty yet: the allocating write has not set its entry), Close's
// flush stored nothing, shut then waited for the write, and its entry,
// set in memory after the flush, was never stored: the write returned
// nil and read back as zeros after a reopen, with no crash at all.
func TestReviewCloseCoversWriteInFlight(t *testing.T) {
	m := objstore.NewCrashable()
	s := &stallingWrites{Mem: m, halfway: make(chan struct{}), released: make(chan struct{})}
	v := NewTestVolume(t, s, 4*bs, SmallShift)
	if err := v.WriteAt(ctx, pattern(bs, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b := pattern(bs, 2)
	s.armed.Store(true)
	wrote := make(chan error, 1)
	go func() { wrote <- v.WriteAt(ctx, b, 2*bs, false) }() // allocates block 2
	<-s.halfway
	closed := make(chan error, 1)
	go func() { closed <- v.Close(ctx) }()
	// Wait until Close waits for the gate (a writer pending on it makes
	// TryRLock fail): its flush before the change, shut after it.
	for deadline := time.Now().Add(20 * time.Second); ; {
		if !v.gate.TryRLock() {
			break
		}
		v.gate.RUnlock()
		if time.Now().After(deadline) {
			close(s.released)
			t.Fatal("Close never waited for the write in flight")
		}
		time.Sleep(time.Millisecond)
	}
	close(s.released)
	werr, cerr := <-wrote, <-closed
	if cerr != nil {
		t.Fatalf("close: %v", cerr)
	}
	if werr != nil {
		return // refused: nothing was promised
	}
	r, err := Open(ctx, m, v.ID(), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	if got := mustRead(t, r, 2*bs, bs); !bytes.Equal(got, b) {
		t.Fatal("a write that returned nil before Close did, which then returned nil, is not in the volume after it")
	}
}
