package volume

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestBeginEpoch: a writer with records in its write log begins a new
// epoch in place: one head swap, no segment and no block written, the
// log kept in the head; its block of the earlier epoch is copied at its
// next write, not changed in place; an ask for no more than the epoch it
// began answers without a swap; everything written reads back after a
// reopen.
func TestBeginEpoch(t *testing.T) {
	ctx := context.Background()
	s := &countMem{Mem: objstore.NewCrashable()}
	id := newClone(t, s, 4)
	v := openLogged(t, s, id, OpenOptions{})
	if err := v.WriteAt(ctx, pattern(bs, 2), 0, false); err != nil { // a private block of this epoch
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, pattern(100, 3), bs+7, false); err != nil { // logged
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	h0, _, err := ReadHead(ctx, s, id)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := v.entry(0)
	swaps, creates := s.swaps.Load(), s.creates.Load()
	e, err := v.BeginEpoch(ctx, h0.Epoch+1, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if e != h0.Epoch+1 {
		t.Fatalf("epoch %d after beginning one from %d", e, h0.Epoch)
	}
	if n := s.swaps.Load() - swaps; n != 1 {
		t.Errorf("beginning an epoch swapped %d objects, want the head only", n)
	}
	if n := s.creates.Load() - creates; n != 0 {
		t.Errorf("beginning an epoch created %d objects (a checkpoint?)", n)
	}
	h1, _, err := ReadHead(ctx, s, id)
	if err != nil {
		t.Fatal(err)
	}
	if h1.Epoch != e || h1.Unsealed != 0 || len(h1.Logs) != len(h0.Logs) {
		t.Fatalf("head after BeginEpoch: epoch %d unsealed %d logs %d, want %d, 0, %d", h1.Epoch, h1.Unsealed, len(h1.Logs), e, len(h0.Logs))
	}
	swaps = s.swaps.Load()
	if e2, err := v.BeginEpoch(ctx, e, "k1"); err != nil || e2 != e {
		t.Fatalf("asked again: epoch %d, %v", e2, err)
	}
	if n := s.swaps.Load() - swaps; n != 0 {
		t.Errorf("an ask for the epoch begun already swapped %d objects", n)
	}
	// Another reason to ask (a cancel's record swap, made while the first
	// ask was in flight, when the head it read was still below e): the
	// epoch begun for the first may have placed blocks by the record
	// before, so a new one begins.
	if e2, err := v.BeginEpoch(ctx, e, "k2"); err != nil || e2 != e+1 {
		t.Fatalf("asked for %d with another key: epoch %d, %v; want a new epoch", e, e2, err)
	}
	e++
	oldData := make([]byte, bs)
	if err := s.ReadAt(ctx, old.ObjectName(), oldData, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, pattern(10, 4), 20, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil { // checkpoints the log
		t.Fatal(err)
	}
	after := make([]byte, bs)
	if err := s.ReadAt(ctx, old.ObjectName(), after, 0); err == nil && !bytes.Equal(after, oldData) {
		t.Error("a block of the ended epoch was changed in place")
	}
	want := pattern(4*bs, 1)
	copy(want, pattern(bs, 2))
	copy(want[20:], pattern(10, 4))
	copy(want[bs+7:], pattern(100, 3))
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	if ne, _ := r.entry(0); ne.ObjectName() == old.ObjectName() || ne.Epoch() < e {
		t.Errorf("block 0 after a write in the new epoch: %v (was %v)", ne, old)
	}
	got := make([]byte, 4*bs)
	if err := r.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the volume does not read what was written")
	}
}

// TestBeginEpochTakenOver: a writer taken over after it began the epoch
// in memory and before its head swap fails with ErrFenced and stores
// nothing; the head is the taker's, with the epochs from the writer's
// recorded as unsealed.
func TestBeginEpochTakenOver(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	id, err := Create(ctx, s, CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, fill(bs, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	h0 := v.Head()
	var taker *Volume
	beginEpochSwap = func() {
		var err error
		taker, err = Open(ctx, s, id, OpenOptions{Writable: true, NewEpoch: true})
		if err != nil {
			t.Error(err)
		}
	}
	defer func() { beginEpochSwap = func() {} }()
	if _, err := v.BeginEpoch(ctx, h0.Epoch+1, "k1"); !errors.Is(err, ErrFenced) {
		t.Fatalf("BeginEpoch of a writer taken over: %v, want ErrFenced", err)
	}
	beginEpochSwap = func() {}
	if taker == nil {
		t.Fatal("no taker")
	}
	defer taker.Close(ctx)
	h, _, err := ReadHead(ctx, s, id)
	if err != nil {
		t.Fatal(err)
	}
	if h.Epoch != taker.Head().Epoch || h.Unsealed == 0 || h.Unsealed > h0.Epoch {
		t.Errorf("head after the fenced BeginEpoch: epoch %d unsealed %d (taker %d, writer's %d)", h.Epoch, h.Unsealed, taker.Head().Epoch, h0.Epoch)
	}
	if err := v.Flush(ctx); !errors.Is(err, ErrFenced) {
		t.Errorf("flush after: %v, want ErrFenced", err)
	}
}
