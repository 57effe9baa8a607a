package volume

import (
	"fmt"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// scatterFaulty returns a volume of blocks blocks on a Faulty Mem, every
// block written and flushed by a writer before (so that this writer owns
// it), open again with the log, with scattered writes logged
// (scatterDefault, as on ext4 without a journal).
func scatterFaulty(t *testing.T, blocks int) (*Volume, *objstore.Faulty, blockmap.ID, []byte) {
	t.Helper()
	old := scatterDefault
	scatterDefault = true
	t.Cleanup(func() { scatterDefault = old })
	f := objstore.NewFaulty(objstore.NewMem())
	v, id, want := filledLogged(t, f, blocks)
	if !v.scatter {
		t.Fatal("scattered writes not routed to the log")
	}
	return v, f, id, want
}

// TestScatterReviewFailedCheckpointFlushThenFUA: a scattered write L to an
// owned block goes to the log and is flushed (committed in the log the
// stored head names). A later flush checkpoints: the checkpoint writes L
// in place into the block's object and empties the index, then the
// flush fails before its head swap (the data sync fails: a definite
// error, so no head swap is pending), and the stored head keeps the
// log's From before L. A FUA write X over L's bytes now finds no
// logged bytes there, goes in place, and is acknowledged by flushWrite's quick path (sync of the object, a check
// that the head is unchanged), which does not look at headDirty. The
// stored head still names the log from before L: a crash now (another
// open) replays L over the acknowledged X.
//
// Before the change, an owned block written in place never had logged
// bytes in the sub-blocks it holds, so its checkpoint never wrote in
// place without a map change (dirtySegs, which the quick path refuses).
//
// The same with a plain write and a Flush after it (the flush's quick cut).
func TestScatterReviewFailedCheckpointFlushThenFUA(t *testing.T) {
	for _, fua := range []bool{true, false} {
		t.Run(fmt.Sprint("fua=", fua), func(t *testing.T) { failedCheckpointThenWrite(t, fua) })
	}
}

func failedCheckpointThenWrite(t *testing.T, fua bool) {
	v, f, id, want := scatterFaulty(t, 4)
	L := pattern(4096, 'L')
	if err := v.WriteAt(ctx, L, 1*bs, false); err != nil { // block 1 after block 0: logged
		t.Fatal(err)
	}
	if v.logged(1) == false {
		t.Fatal("the scattered write was not logged")
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	copy(want[1*bs:], L)
	// Something asks the next flush to checkpoint (a burst kick, a trim
	// of logged bytes, the log's bound...), and its head swap fails.
	v.mu.Lock()
	v.mu.logForce = true
	v.mu.Unlock()
	f.Add(objstore.Rule{Op: objstore.OpSync, Count: 1, Err: objstore.ErrNoSpace})
	if err := v.Flush(ctx); err == nil {
		t.Fatal("the flush whose sync failed succeeded")
	}
	X := pattern(4096, 'X')
	writeDurably(t, v, X, 1*bs, fua)
	copy(want[1*bs:], X)
	expectBytes(t, v, 1*bs, X, "the FUA write, read back by the writer")
	// A crash now: the next open reads what is stored.
	r, err := Open(ctx, f, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	expectBytes(t, r, 1*bs, X, "the acknowledged FUA write after a crash")
}

// TestScatterReviewPartlyFailedCheckpointThenFUA: scattered writes L1 to
// block 1 and L2 to block 2 are logged and flushed. A checkpoint writes
// L1 into block 1's object and drops block 1 from the index, then fails
// on block 2 (its in-place write is refused: a full disk, a settled
// error); checkpointLog returns before the logs are restarted, so the
// stored head (and the one in memory) still read the log from before
// L1. A FUA write X over L1's bytes (larger than logScattered) finds no
// logged bytes in block 1, goes in place, and flushWrite's quick path
// acknowledges it: a crash then replays L1 over X.
//
// The same with a plain write and a Flush after it.
func TestScatterReviewPartlyFailedCheckpointThenFUA(t *testing.T) {
	for _, fua := range []bool{true, false} {
		t.Run(fmt.Sprint("fua=", fua), func(t *testing.T) { partlyFailedCheckpointThenWrite(t, fua) })
	}
}

func partlyFailedCheckpointThenWrite(t *testing.T, fua bool) {
	v, f, id, _ := scatterFaulty(t, 4)
	logTwoFailSecond(t, v, f)
	v.mu.Lock()
	v.mu.logForce = true
	v.mu.Unlock()
	if err := v.Flush(ctx); err == nil {
		t.Fatal("the flush whose checkpoint failed succeeded")
	}
	if v.logged(1) {
		t.Skip("block 1 was not checkpointed before block 2 failed (the order of the checkpointers)")
	}
	// Larger than logScattered: in place whatever write came before.
	X := pattern(int(logScattered)+4096, 'X')
	writeDurably(t, v, X, 1*bs, fua)
	expectBytes(t, v, 1*bs, X, "the FUA write, read back by the writer")
	r, err := Open(ctx, f, id, OpenOptions{}) // a crash now
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	expectBytes(t, r, 1*bs, X, "the acknowledged FUA write after a crash")
}

// writeDurably writes p at off with FUA, or without and then flushes.
func writeDurably(t *testing.T, v *Volume, p []byte, off int64, fua bool) {
	t.Helper()
	if err := v.WriteAt(ctx, p, off, fua); err != nil {
		t.Fatal(err)
	}
	if !fua {
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// logTwoFailSecond logs and flushes scattered writes to blocks 1 and 2
// of v, then makes the next in-place write to block 2's object fail
// (ErrNoSpace), so that a checkpoint writes block 1 and fails on block 2.
func logTwoFailSecond(t *testing.T, v *Volume, f *objstore.Faulty) {
	t.Helper()
	if err := v.WriteAt(ctx, pattern(4096, 'L'), 1*bs, false); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, pattern(4096, 'M'), 2*bs, false); err != nil {
		t.Fatal(err)
	}
	if !v.logged(1) || !v.logged(2) {
		t.Fatal("the scattered writes were not logged")
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e2, _ := v.entry(2)
	f.Add(objstore.Rule{Op: objstore.OpWriteAt, Prefix: e2.ObjectName(), Count: 1, Err: objstore.ErrNoSpace})
}
