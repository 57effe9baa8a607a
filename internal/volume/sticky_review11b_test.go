package volume

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// The RADOS store keeps a failed operation's error with its object for
// the life of the process (writeMerger: "The objects kept for that are
// those whose writes failed ..., which the process keeps until it
// exits"), and Settle, Sync and Copy (which Syncs its source) return it.
// The handle that lost the write reports it (its flush, its Close). These
// tests open the volume again in the same process (the daemon's store is
// one for all its handles: a fenced handle's clients reconnect to a new
// handle; a lease handed back; a command run by the daemon) and find that
// the old error fails the new handle, which lost nothing: its open, its
// flushes, or its writes, forever, where another process has no trouble.

// copyingAsyncStore is asyncFailStore with the RADOS store's Copy
// (internal/objstore/rados/copy.go): it waits for its source's writes in
// flight (nothing to wait for here: this store's writes are done when
// they return) and copies what the source holds, without the error of a
// write to it that failed (it used to Sync, and return that error).
type copyingAsyncStore struct {
	*asyncFailStore
}

func (s copyingAsyncStore) Copy(ctx context.Context, src, dst string) error {
	return s.mem.Copy(ctx, src, dst)
}

var _ objstore.Copier = copyingAsyncStore{}

// otherProcess is a store over the same objects with none of s's
// in-process state (another process).
func otherProcess(s *asyncFailStore) *asyncFailStore {
	return &asyncFailStore{Store: s.mem, mem: s.mem, failed: map[string]error{}}
}

// TestReview11bReopenAfterFailedAppendOpens: a logged writer's append
// fails at the OSDs; its flush fails, as it must, and it is discarded
// (its lease was lost with unflushed writes: the daemon fences the handle
// and its clients reconnect). The next writer in the same process opens
// as a taker: it checkpoints the logs of the writer before at open, and
// settles them first; the old log's sticky error fails the open, and
// every later open in this process. The log's committed records are
// durable and another process opens it fine.
func TestReview11bReopenAfterFailedAppendOpens(t *testing.T) {
	s := newAsyncFailStore()
	id := newClone(t, s, 4)
	v := openLogged(t, s, id, OpenOptions{})
	lostAppend(t, s, id, v)
	if err := v.Flush(ctx); err == nil {
		t.Fatal("the flush after a lost append returned nil")
	}
	v.Discard(ctx)

	// Another process opens it fine, and reads the flushed write.
	other, err := Open(ctx, otherProcess(s), id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if err := other.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, pattern(4096, 0x10)) {
		t.Fatalf("another process reads %x... (%v)", got[:4], err)
	}
	other.Close(ctx)

	for i := range 2 {
		v2, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
		if err != nil {
			t.Fatalf("open %d of the volume as a writer in the same process: %v (the log's committed records are durable: the write lost was never reported flushed)", i, err)
		}
		if err := v2.WriteAt(ctx, pattern(4096, 0x30), 0, false); err != nil {
			t.Fatal(err)
		}
		if err := v2.Flush(ctx); err != nil {
			t.Fatalf("a new writer's flush: %v", err)
		}
		v2.Close(ctx)
	}
}

// TestReview11bHandoverSameEpochFlushFailsForever: a writer's in-place
// write fails at the OSDs and its Close fails. Its Close used to hand
// OnClose the error without ErrUnsettled, so package manage released the
// lease cleanly and the next writer opened with Handover, in the same
// epoch, writing the block in place: its flushes then got the first
// writer's sticky error forever, though it lost nothing. Now such a
// Close is unsettled, so the next writer starts a new epoch (as package
// manage does after an unsettled release) and copies the block: its
// writes and flushes work.
func TestReview11bHandoverSameEpochFlushFailsForever(t *testing.T) {
	s := newAsyncFailStore()
	id, err := Create(ctx, s, CreateOptions{Size: 2 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	var closeErr error
	v, err := Open(ctx, s, id, OpenOptions{Writable: true, OnClose: func(ctx context.Context, err error) error {
		closeErr = err
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, pattern(bs, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	obj := v.Entries()[0].ObjectName()
	s.loseNext(named(obj))
	if err := v.WriteAt(ctx, pattern(4096, 2), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err == nil {
		t.Fatal("Close after a lost write returned nil")
	}
	if !errors.Is(closeErr, ErrUnsettled) {
		t.Fatalf("Close after a lost write handed OnClose %v, without ErrUnsettled: the lease would be released cleanly, and the next writer write the object in place", closeErr)
	}

	v2, err := Open(ctx, s, id, OpenOptions{Writable: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Discard(ctx)
	if err := v2.WriteAt(ctx, pattern(4096, 3), 0, false); err != nil {
		t.Fatal(err)
	}
	if e := v2.Entries()[0]; e.ObjectName() == obj {
		t.Fatalf("the next writer writes %s in place", obj)
	}
	for i := range 3 {
		if err := v2.Flush(ctx); err != nil {
			t.Fatalf("flush %d of a writer every write of which landed: %v", i, err)
		}
	}
}

// TestReview11bTakeoverCopyStickyFailsWrite: the same lost in-place
// write, then a writer that takes the volume over in the same process
// (NewEpoch: the lost write's block is unsealed). Its first write into
// part of that block copies it whole with the store's Copy, which on
// RADOS Syncs its source first and returns the old writer's sticky
// error: the write fails, and so does every retry, while the block's
// object holds exactly what the last flush stored.
func TestReview11bTakeoverCopyStickyFailsWrite(t *testing.T) {
	a := newAsyncFailStore()
	s := copyingAsyncStore{a}
	id, err := Create(ctx, s, CreateOptions{Size: 2 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, pattern(bs, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e := v.Entries()[0]
	if e.Kind() == blockmap.Zero {
		t.Fatal("block 0 not allocated")
	}
	obj := e.ObjectName()
	a.loseNext(named(obj))
	if err := v.WriteAt(ctx, pattern(4096, 2), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err == nil {
		t.Fatal("the flush after a lost write returned nil")
	}
	v.Discard(ctx) // the lease lost with unflushed writes: fenced

	v2, err := Open(ctx, s, id, OpenOptions{Writable: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close(ctx)
	for i := range 3 {
		if err := v2.WriteAt(ctx, pattern(4096, 3), 8192, false); err != nil {
			t.Fatalf("write %d into the taken-over block: %v (it holds what the last flush stored: %s)", i, err, obj)
		}
	}
	if err := v2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}
