package volume

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// errTimeout is a store error of unknown outcome: the write may land.
var errTimeout = errors.New("test: operation timed out")

// TestHandoverAfterLogCommitOfUnknownOutcome: a writer's flush fails on
// its write log's commit with an unknown outcome (a timeout: the commit
// may land later), and the writer is then discarded. Its release must be
// unsettled (ErrUnsettled at OnClose), so that the next writer takes over
// (a new epoch, the log checkpointed at open and dropped from the head)
// rather than keep the log (a handover): a kept log whose commit lands
// after the next writer read it would make records that writer never saw
// committed, and a later replay would lay them over its newer writes.
//
// With a successful flush after the failure ("settled"), which
// checkpoints the log (a failed log write asks for it) and stores a head
// that does not read where the commit may land, the release is clean
// again, and the late commit changes nothing.
func TestHandoverAfterLogCommitOfUnknownOutcome(t *testing.T) {
	for _, settle := range []bool{false, true} {
		t.Run(fmt.Sprint("settled=", settle), func(t *testing.T) { testHandoverAfterLogCommitOfUnknownOutcome(t, settle) })
	}
}

func testHandoverAfterLogCommitOfUnknownOutcome(t *testing.T, settle bool) {
	f := objstore.NewFaulty(objstore.NewMem())
	id := newClone(t, f, 4)
	var closeErr error
	a := openLogged(t, f, id, OpenOptions{OnClose: func(_ context.Context, err error) error { closeErr = err; return nil }})
	if err := a.WriteAt(ctx, pattern(100, 'a'), 7, false); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	lf := a.mu.logs[len(a.mu.logs)-1]
	a.mu.Unlock()
	f.Add(objstore.Rule{Op: objstore.OpWriteAt, Prefix: lf.name, Count: 1, Err: errTimeout})
	if err := a.Flush(ctx); err == nil {
		t.Fatal("the flush whose commit failed succeeded")
	}
	f.Reset()
	a.mu.Lock()
	commitPos := a.mu.logs[len(a.mu.logs)-1].end - logHeader
	a.mu.Unlock()
	if settle {
		if err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Discard(ctx); err != nil {
		t.Fatal(err)
	}
	unsettled := errors.Is(closeErr, ErrUnsettled)
	if !unsettled && !settle {
		t.Errorf("a writer whose log commit may still land released cleanly (OnClose got %v)", closeErr)
	}
	if unsettled && settle {
		t.Errorf("a writer whose log was checkpointed past a commit of unknown outcome released unsettled")
	}
	// package manage: a clean release is a handover, else a takeover.
	b, err := Open(ctx, f, id, OpenOptions{Writable: true, Handover: !unsettled, NewEpoch: unsettled})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, b.Size())
	if err := b.ReadAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	p := pattern(100, 'b')
	if err := b.WriteAt(ctx, p, 7, false); err != nil {
		t.Fatal(err)
	}
	copy(want[7:], p)
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The commit lands late.
	if err := f.WriteAt(ctx, lf.name, encodeLogRecord(lf.ref, 0, nil), commitPos); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantStored(t, f, id, want, "after the late commit")
}

// TestHandoverNoLogWriterDiscardUndoesWrite: a writer without a log of
// its own that kept a handed-over log, opened to change nothing if it
// fails part way (package manage's OpenWriterCopying, for "volume
// write": Discard undoes what it wrote), writes across a block without
// logged bytes and one with, then is discarded: the volume reads as
// before it, not with the part of the write that a checkpoint of the
// kept log, flushed in the middle of the write, stored.
func TestHandoverNoLogWriterDiscardUndoesWrite(t *testing.T) {
	s := objstore.NewMem()
	id := newClone(t, s, 4)
	_, want := handedOver(t, s, id, OpenOptions{}, []int{1})
	w, err := Open(ctx, s, id, OpenOptions{Writable: true, Copying: true, Handover: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteAt(ctx, pattern(2*bs, 55), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Discard(ctx); err != nil {
		t.Fatal(err)
	}
	wantStored(t, s, id, want, "after the discarded write")
}

// TestHandoverNoFlushAfterShut: a flush that checked that the handle was
// open, then waited for the flush lock while the handle was discarded
// (a daemon's handoff: flush, then Discard, which releases the lease),
// must not run once it gets the lock: it would commit the writer's
// unflushed records to the log after the release, when the next writer
// (a handover) has read the log and keeps it, and a later replay would
// show them under that writer's feet.
func TestHandoverNoFlushAfterShut(t *testing.T) {
	f := objstore.NewFaulty(objstore.NewMem())
	id := newClone(t, f, 4)
	a := openLogged(t, f, id, OpenOptions{})
	if err := a.WriteAt(ctx, pattern(100, 'a'), 7, false); err != nil {
		t.Fatal(err)
	}
	queued, resume := make(chan struct{}), make(chan struct{})
	flushQueued = func() { close(queued); <-resume }
	defer func() { flushQueued = func() {} }()
	done := make(chan error, 1)
	go func() { done <- a.Flush(ctx) }()
	<-queued
	flushQueued = func() {}
	if err := a.Discard(ctx); err != nil {
		t.Fatal(err)
	}
	b := openLogged(t, f, id, OpenOptions{Handover: true})
	want := make([]byte, b.Size())
	if err := b.ReadAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	c := countOps(f)
	c.start()
	close(resume)
	err := <-done
	ops := c.stop()
	if !errors.Is(err, ErrClosed) {
		t.Errorf("the flush queued before the discard ran after it: %v (store operations %v)", err, ops)
	}
	wantStored(t, f, id, want, "a replay after the queued flush")
	b.Discard(ctx)
}

// TestTakeoverCopyingWriterDiscardUndoesWrite: a writer opened with
// Copying that takes over (the writer before left a log in the head)
// checkpoints that log at open into objects of its new epoch, which the
// map it stores then references; its writes must copy them, not change
// them in place, so that Discard undoes what it wrote.
func TestTakeoverCopyingWriterDiscardUndoesWrite(t *testing.T) {
	s := objstore.NewMem()
	id := newClone(t, s, 4)
	_, want := handedOver(t, s, id, OpenOptions{}, []int{1})
	w, err := Open(ctx, s, id, OpenOptions{Writable: true, Copying: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteAt(ctx, pattern(2*bs, 55), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Discard(ctx); err != nil {
		t.Fatal(err)
	}
	wantStored(t, s, id, want, "after the discarded write")
}
