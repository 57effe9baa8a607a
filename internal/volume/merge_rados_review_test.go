//go:build ceph

package volume

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore/rados"
)

// A writer stalled with in-place writes queued behind one in flight on
// RADOS (the store merges them into one operation once that one ends)
// is taken over and fenced; when it resumes, the held operation and the
// merged one are refused: every write fails with ErrFenced and the taker
// reads what it read at takeover.
func TestRadosTakeoverFencesMergedWrites(t *testing.T) {
	ctx := context.Background()
	ss := rados.OpenTestStores(t, 2)
	vid, err := Create(ctx, ss[0], CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	clkA, clkB := newTestClock(), newTestClock()
	a, _ := leasedWriter(t, ss[0], vid.String(), "a", clkA)
	want := make([]byte, bs)
	copy(want, "first")
	if err := a.WriteAt(ctx, want, 0, true); err != nil {
		t.Fatal(err)
	}
	// a's next write operation holds (a stalls), and its other writes to
	// the block queue behind it.
	release := ss[0].HoldWrites()
	defer release()
	const n = 4
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- a.WriteAt(ctx, []byte("late!"), int64(i*512), false) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for ss[0].Queued() != n-1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued behind the held one, want %d", ss[0].Queued(), n-1)
		}
		time.Sleep(time.Millisecond)
	}
	clkB.Advance(6 * time.Second)
	b, lb := leasedWriter(t, ss[1], vid.String(), "b", clkB)
	if !lb.TookOver() {
		t.Fatal("b did not take the lease over")
	}
	release()
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrFenced) {
				t.Fatalf("a's held or merged write after b took over: %v, want ErrFenced", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("a's write hung after b took over")
		}
	}
	got := make([]byte, bs)
	if err := b.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("b reads %q after a's late writes, want %q", got[:16], want[:16])
	}
}
