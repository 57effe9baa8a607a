package volume

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// openLogged opens a writable, logging handle of id on s.
func openLogged(t *testing.T, s objstore.Store, id blockmap.ID, opts OpenOptions) *Volume {
	t.Helper()
	opts.Writable, opts.Log = true, true
	v, err := Open(ctx, s, id, opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestReviewLogBrokenAppendHidesLaterWrite: a block of a fresh clone has a
// flushed logged write 'A'. An append to the log then fails (a full
// disk: ErrNoSpace, settled), or the commit record of a flush does,
// which marks the log broken: later writes no longer go to the log but
// through the map (logsBlock returns false). The client writes 'B' over
// the logged range; the write succeeds, but the index still holds the
// older logged extent, which overlays the map: the volume reads 'A'
// right after 'B' was acknowledged, and the next flush's checkpoint
// writes the stale logged 'A' into the block over the newer 'B', so the
// flushed write is lost for good.
func TestReviewLogBrokenAppendHidesLaterWrite(t *testing.T) {
	for _, what := range []string{"append", "commit"} {
		t.Run(what, func(t *testing.T) {
			f := objstore.NewFaulty(objstore.NewMem())
			id := newClone(t, f, 2)
			v := openLogged(t, f, id, OpenOptions{})
			if err := v.WriteAt(ctx, fill(4096, 'A'), 0, false); err != nil {
				t.Fatal(err)
			}
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			fail := objstore.Rule{Op: objstore.OpWriteAt, Prefix: "vol/" + id.String() + "/l/", Count: 1, Err: objstore.ErrNoSpace}
			if what == "append" {
				f.Add(fail)
				if err := v.WriteAt(ctx, fill(4096, 'X'), bs, false); err == nil {
					t.Fatal("the append that the store refused succeeded")
				}
			} else {
				if err := v.WriteAt(ctx, fill(4096, 'X'), bs, false); err != nil {
					t.Fatal(err)
				}
				f.Add(fail)
				if err := v.Flush(ctx); err == nil {
					t.Fatal("the flush whose commit the store refused succeeded")
				}
			}
			if err := v.WriteAt(ctx, fill(4096, 'B'), 0, false); err != nil {
				t.Fatal(err)
			}
			expectBytes(t, v, 0, fill(4096, 'B'), "the write after a failed "+what+", read back at once")
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			expectBytes(t, v, 0, fill(4096, 'B'), "the flushed write after a failed "+what)
			r, err := Open(ctx, f, id, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			expectBytes(t, r, 0, fill(4096, 'B'), "the flushed write after a failed "+what+", reopened")
		})
	}
}

// expectBytes is wantBytes that goes on after a mismatch.
func expectBytes(t *testing.T, v *Volume, off int64, want []byte, what string) {
	t.Helper()
	if got := mustRead(t, v, off, len(want)); !bytes.Equal(got, want) {
		t.Errorf("%s: read %x..., want %x...", what, got[:min(8, len(got))], want[:min(8, len(want))])
	}
}

// timeoutMem is a Mem (with handles, which keep a deleted object
// readable, as files do) whose next head swaps, as many as timeouts
// says, land and then report ErrTimeout.
type timeoutMem struct {
	*objstore.Mem
	timeouts atomic.Int64
}

func (m *timeoutMem) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	ver, err := m.Mem.Swap(ctx, name, data, old)
	if err == nil && m.timeouts.Add(-1) >= 0 {
		return 0, objstore.ErrTimeout
	}
	return ver, err
}

// TestReviewLogPendingSwapCheckpointWritesIntoTaker: the check of the
// head that a checkpoint makes before writing logged bytes into the
// blocks (TestLogStaleCheckpointWritesNothing) is skipped when a head
// swap of the handle has an unknown outcome. A writer whose swap timed
// out (it landed) has a partial block of its own, logs an unflushed
// write over it, and is taken over; when it wakes up and flushes, its
// checkpoint writes the never-acknowledged bytes in place into its
// partial block's object, which the taker's map references: the taker
// reads bytes it never saw written, by a writer whose flush then fails.
func TestReviewLogPendingSwapCheckpointWritesIntoTaker(t *testing.T) {
	f := &timeoutMem{Mem: objstore.NewMem()}
	id := newClone(t, f, 2)
	old := openLogged(t, f, id, OpenOptions{})
	sb := int(bs / blockmap.SubBlocks)
	if err := old.WriteAt(ctx, fill(100, 3), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := old.Checkpoint(ctx); err != nil { // block 0: a partial block of old's
		t.Fatal(err)
	}
	if e := old.Entries()[0]; e.Kind() != blockmap.Partial {
		t.Fatalf("block 0 is %v after a checkpoint, want a partial block", e)
	}
	// A flush whose head swap times out after it landed: pending.
	f.timeouts.Store(1)
	if err := old.Trim(ctx, bs, bs); err != nil {
		t.Fatal(err)
	}
	if err := old.Flush(ctx); err == nil {
		t.Fatal("the flush whose swap timed out succeeded")
	}
	// Sub-blocks 0 (old's) to 5 (not): logged, not flushed.
	if err := old.WriteAt(ctx, fill(5*sb, 4), 50, false); err != nil {
		t.Fatal(err)
	}
	taker := openLogged(t, f, id, OpenOptions{NewEpoch: true})
	before := mustRead(t, taker, 0, bs)
	if err := old.Checkpoint(ctx); !errors.Is(err, ErrFenced) {
		t.Errorf("the stale writer's checkpoint: %v, want ErrFenced", err)
	}
	if after := mustRead(t, taker, 0, bs); !bytes.Equal(after, before) {
		t.Errorf("the stale writer's checkpoint changed what the taker reads: byte 50 was %d, now %d", before[50], after[50])
	}
}

// gcMem is a Mem whose OpenHandle runs onCreate(name) after it created a
// write log other than the first it saw.
type gcMem struct {
	*objstore.Mem
	logs     map[string]bool
	onCreate func(name string)
}

func (m *gcMem) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	h, err := m.Mem.OpenHandle(ctx, name, create, writable)
	if err == nil && create && strings.Contains(name, "/l/") && !m.logs[name] {
		first := len(m.logs) == 0
		m.logs[name] = true
		if !first && m.onCreate != nil {
			m.onCreate(name)
		}
	}
	return h, err
}

// TestReviewLogRotatedLogCollectedDuringStall: a flush rotates the log
// (past logBound) and creates the new log before the head swap that
// names it; the writer stalls there longer than a garbage collection's
// grace, and a collection (simulated: it deletes what no stored head
// names and is older than its grace) deletes the new log. The flush's
// check of unflushed objects (age past MaxUnflushedAge, checkExist) does
// not look at the logs the head will name, so it swaps in a head naming
// a log that is gone and succeeds. The writer then appends to that log
// through its kept handle (or recreates it sparse), and its next flush
// syncs it, checks the head and is acknowledged: a reopen finds no log
// and the acknowledged write is lost. docs/format.md says a log not yet
// named by a stored head "is in its unflushed objects, which a flush
// older than MaxUnflushedAge checks"; it is not.
func TestReviewLogRotatedLogCollectedDuringStall(t *testing.T) {
	defer setLogBound(bs)()
	s := &gcMem{Mem: objstore.NewMem(), logs: map[string]bool{}}
	id := newClone(t, s, 3)
	v := openLogged(t, s, id, OpenOptions{})
	now := time.Now()
	v.now = func() time.Time { return now }
	for k := range 3 {
		if err := v.WriteAt(ctx, fill(bs/2, byte('a'+k)), bs+int64(k%2)*bs/2, false); err != nil {
			t.Fatal(err)
		}
	}
	// The logged block is trimmed: the checkpoint writes no block, but
	// the log is past its bound, so it rotates.
	if err := v.Trim(ctx, bs, bs); err != nil {
		t.Fatal(err)
	}
	rotated := false
	s.onCreate = func(name string) {
		rotated = true
		now = now.Add(time.Hour) // the stall, past MaxUnflushedAge and any grace
		if err := s.Mem.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	err := v.Flush(ctx)
	s.onCreate = nil
	if !rotated {
		t.Fatal("the flush did not rotate the log")
	}
	if err != nil {
		// Refusing (ErrStale) is a right answer; then nothing more to see.
		t.Logf("the stalled flush: %v", err)
		return
	}
	if err := v.WriteAt(ctx, fill(100, 'B'), 2*bs, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Logf("the flush after the rotated log was collected: %v", err)
		return
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatalf("reopen after an acknowledged flush: %v", err)
	}
	expectBytes(t, r, 2*bs, fill(100, 'B'), "an acknowledged flush into a log collected before the head named it, reopened")
}

// lateMem is a Mem whose next in-place write to a data object through a
// handle, once armed, times out (objstore.ErrTimeout) without landing.
type lateMem struct {
	*objstore.Mem
	armed atomic.Bool
}

func (m *lateMem) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	h, err := m.Mem.OpenHandle(ctx, name, create, writable)
	if err != nil {
		return nil, err
	}
	return lateHandle{h, m, name}, nil
}

type lateHandle struct {
	objstore.Handle
	m    *lateMem
	name string
}

func (h lateHandle) WriteAt(p []byte, off int64) error {
	if strings.Contains(h.name, "/d/") && h.m.armed.CompareAndSwap(true, false) {
		return objstore.ErrTimeout
	}
	return h.Handle.WriteAt(p, off)
}

// TestReviewLogCheckpointTaintedStuck: a checkpoint writes logged bytes
// in place into the writer's own partial block, and that write times out
// (unknown outcome): the object is tainted, the flush fails, and the
// block's logged bytes stay in the index. Writes retire tainted objects
// before they run (Volume.shared), but a flush does not: every later
// flush's checkpoint meets the tainted object (writeBlockMap returns the
// internal errTainted) and fails, as does Close, until some write happens
// to come by. A guest that retries its flush (or an orderly shutdown)
// never gets one through, though its data is committed in the log.
func TestReviewLogCheckpointTaintedStuck(t *testing.T) {
	s := &lateMem{Mem: objstore.NewMem()}
	id := newClone(t, s, 2)
	v := openLogged(t, s, id, OpenOptions{})
	sb := int(bs / blockmap.SubBlocks)
	if err := v.WriteAt(ctx, fill(100, 3), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Checkpoint(ctx); err != nil { // block 0: a partial block of v's
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, fill(5*sb, 4), 50, false); err != nil { // logged
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.armed.Store(true)
	if err := v.Checkpoint(ctx); err == nil {
		t.Fatal("a checkpoint whose block write timed out succeeded")
	}
	for k := range 3 {
		if err := v.Flush(ctx); err != nil {
			t.Errorf("flush %d after a checkpoint's write timed out: %v", k, err)
		}
	}
	if err := v.Checkpoint(ctx); err != nil {
		t.Errorf("checkpoint after a checkpoint's write timed out: %v", err)
	}
	if err := v.Close(ctx); err != nil {
		t.Errorf("close after a checkpoint's write timed out: %v", err)
	}
}

// raceMem is a Mem that runs before (once, when set) just before a
// reader's first lookup of a write log by name (a handle opened without
// create: how a reader, not the log's writer, opens it).
type raceMem struct {
	*objstore.Mem
	before func()
}

func (m *raceMem) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	if f := m.before; f != nil && !create && strings.Contains(name, "/l/") {
		m.before = nil
		f()
	}
	return m.Mem.OpenHandle(ctx, name, create, writable)
}

// TestReviewLogReaderRacesRotation: a reader (a plain read-only Open, or
// a follower reloading a changed head) reads the head, which names the
// writer's log with committed records past its From; before it reads the
// log, the writer checkpoints, rotates to a new log and deletes the old
// one (a flush past logBound, or Close). replayLog takes the missing log
// for one "not written yet" and applies nothing, so the reader ends up
// with the old head's map without the log's records: flushed writes are
// missing. A plain reader keeps that view for good; a follower returns
// data older than the writer's last flush (against OpenOptions.Follow's
// contract) until its next check: on a store without handles (RADOS),
// or once its handle cache dropped the log's handle (simulated here by
// forget; with a cached handle, the deleted log stays readable). A segment
// found missing the same way makes readMap/checkHead read the head again;
// a log does not.
func TestReviewLogReaderRacesRotation(t *testing.T) {
	for _, follower := range []bool{false, true} {
		name := "reader"
		if follower {
			name = "follower"
		}
		t.Run(name, func(t *testing.T) {
			defer setLogBound(bs)()
			s := &raceMem{Mem: objstore.NewMem()}
			id := newClone(t, s, 4)
			v := openLogged(t, s, id, OpenOptions{})
			var f *Volume
			if follower {
				var err error
				if f, err = Open(ctx, s, id, OpenOptions{Follow: true}); err != nil {
					t.Fatal(err)
				}
				mustRead(t, f, 0, 4*bs) // opens the log's handle: the race below is at a reload
				// A head change (a trim swaps the head and checkpoints),
				// then a flushed logged write past the new From.
				if err := v.Trim(ctx, 3*bs, bs); err != nil {
					t.Fatal(err)
				}
				if err := v.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := v.WriteAt(ctx, fill(100, 'A'), bs, false); err != nil {
				t.Fatal(err)
			}
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			first := v.Head().Logs[0]
			rotated := false
			s.before = func() {
				// The writer, meanwhile: past the bound, a flush
				// checkpoints and rotates the log.
				if err := v.WriteAt(ctx, fill(2*bs, 'C'), 2*bs-bs/2, false); err != nil {
					t.Error(err)
				}
				if err := v.Flush(ctx); err != nil {
					t.Error(err)
				}
				rotated = v.Head().Logs[0].Seq != first.Seq
			}
			if follower {
				if f.handles != nil {
					f.handles.forget(blockmap.LogName(id, first.Epoch, first.Seq)) // a handle cache that evicted it
				}
				expectBytes(t, f, bs, fill(100, 'A'), "a follower's read racing a rotation")
			} else {
				r, err := Open(ctx, s, id, OpenOptions{})
				if err != nil {
					t.Fatal(err)
				}
				expectBytes(t, r, bs, fill(100, 'A'), "a reader opened racing a rotation")
			}
			if !rotated {
				t.Fatal("the writer did not rotate its log during the reader's open")
			}
		})
	}
}
