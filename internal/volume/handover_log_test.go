package volume

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// opCounter counts the operations that pass a Faulty store (which keeps
// no handles, so every I/O does), by operation and kind of object.
type opCounter struct {
	mu sync.Mutex
	on bool
	n  map[string]int
}

func countOps(f *objstore.Faulty) *opCounter {
	c := &opCounter{n: map[string]int{}}
	f.Add(objstore.Rule{Hook: func(_ context.Context, op objstore.Op, name string) {
		kind := "meta"
		switch {
		case isData(name):
			kind = "data"
		case strings.Contains(name, "/l/"):
			kind = "log"
		}
		c.mu.Lock()
		if c.on {
			c.n[string(op)+" "+kind]++
		}
		c.mu.Unlock()
	}})
	return c
}

func (c *opCounter) start() {
	c.mu.Lock()
	c.on, c.n = true, map[string]int{}
	c.mu.Unlock()
}

// stop ends counting and returns the counts.
func (c *opCounter) stop() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on = false
	return c.n
}

func dataWrites(n map[string]int) int {
	return n["writeat data"] + n["put data"] + n["create data"] + n["sync data"]
}

// handedOver writes a small write into each of blocks (shared with the
// clone's snapshot: logged), flushes, and releases cleanly, as a daemon's
// handoff does (Flush, then Discard); it returns the volume's contents.
func handedOver(t *testing.T, s objstore.Store, id blockmap.ID, opts OpenOptions, blocks []int) (*Volume, []byte) {
	t.Helper()
	w := openLogged(t, s, id, opts)
	for i, b := range blocks {
		if err := w.WriteAt(ctx, pattern(100, byte(10+i)), int64(b*bs+7), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(w.Head().Logs) == 0 {
		t.Fatal("the writer left no log in the head")
	}
	want := make([]byte, w.Size())
	if err := w.ReadAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Discard(ctx); err != nil {
		t.Fatal(err)
	}
	return w, want
}

// wantStored opens volume id of s read-only and wants it to read want.
func wantStored(t *testing.T, s objstore.Store, id blockmap.ID, want []byte, what string) {
	t.Helper()
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantContents(t, r, want, what)
}

func wantContents(t *testing.T, v *Volume, want []byte, what string) {
	t.Helper()
	got := make([]byte, len(want))
	if err := v.ReadAt(ctx, got, 0); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: byte %d (block %d) = %d, want %d", what, i, i/bs, got[i], want[i])
	}
}

// TestHandoverOpenKeepsLog: a writer that takes a volume from a clean
// release (a handover: the writer before flushed and released) keeps the
// write log it finds instead of checkpointing it into the map: its open
// writes no block (the cut-over pause of a move is then a head swap,
// whatever the writer before logged). The writer before, woken up late,
// writes nothing; a crash of the new writer loses nothing that either
// flushed; a takeover then checkpoints both logs, and a clean close
// leaves no log in the head.
func TestHandoverOpenKeepsLog(t *testing.T) {
	for _, mode := range []string{"writer", "mover"} {
		t.Run(mode, func(t *testing.T) {
			f := objstore.NewFaulty(objstore.NewMem())
			c := countOps(f)
			id := newClone(t, f, 8)
			old, want := handedOver(t, f, id, OpenOptions{}, []int{0, 1, 2, 4, 5, 6, 7})
			opts := OpenOptions{Writable: true, Log: true, Handover: true}
			if mode == "mover" {
				// package move's reopen: a new epoch, no log of its own.
				opts = OpenOptions{Writable: true, Copying: true, Handover: true}
			}
			c.start()
			nw, err := Open(ctx, f, id, opts)
			if err != nil {
				t.Fatal(err)
			}
			if mode == "mover" {
				if err := nw.Close(ctx); err != nil {
					t.Fatal(err)
				}
			}
			ops := c.stop()
			if n := dataWrites(ops); n != 0 {
				t.Errorf("the open (and close) after a handover wrote %d times to blocks, want none (%v)", n, ops)
			}
			if len(nw.Head().Logs) == 0 {
				t.Errorf("the handed-over log is not kept in the head")
			}
			if mode == "mover" {
				// The writer comes back after the mover's clean release.
				nw = openLogged(t, f, id, OpenOptions{Handover: true})
			}
			wantContents(t, nw, want, "the new writer")
			// The writer before wakes up: its handle is closed.
			if err := old.WriteAt(ctx, pattern(10, 66), 3*bs, false); err == nil {
				t.Fatal("the writer that handed over wrote after its release")
			}
			p := pattern(300, 99)
			if err := nw.WriteAt(ctx, p, 1*bs+50, false); err != nil {
				t.Fatal(err)
			}
			if err := nw.WriteAt(ctx, p, 3*bs+50, false); err != nil {
				t.Fatal(err)
			}
			if err := nw.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			copy(want[1*bs+50:], p)
			copy(want[3*bs+50:], p)
			if len(nw.Head().Logs) < 2 {
				t.Errorf("the head names %d logs after an in-place flush, want the kept one and the writer's", len(nw.Head().Logs))
			}
			// nw crashes (abandoned); a takeover reads every flushed write.
			tk := openLogged(t, f, id, OpenOptions{NewEpoch: true})
			wantContents(t, tk, want, "after the takeover")
			if err := tk.Close(ctx); err != nil {
				t.Fatal(err)
			}
			r, err := Open(ctx, f, id, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if n := len(r.Head().Logs); n != 0 {
				t.Errorf("a clean close left %d logs in the head", n)
			}
			wantContents(t, r, want, "after the close")
		})
	}
}

// TestHandoverKeptLogsBounded: handovers one after another, each writer
// logging and flushing without a checkpoint, keep at most keptLogs logs
// of the writers before (past that an open checkpoints them, as a
// takeover's does), so the head never runs out of log slots and every
// writer logs.
func TestHandoverKeptLogsBounded(t *testing.T) {
	s := objstore.NewMem()
	id := newClone(t, s, 8)
	var want []byte
	for i := range 3 * blockmap.MaxLogs {
		w := openLogged(t, s, id, OpenOptions{Handover: true})
		if !w.logOn {
			t.Fatalf("handover %d: the writer does not log (%d logs in the head)", i, len(w.Head().Logs))
		}
		if n := len(w.Head().Logs); n > keptLogs+1 {
			t.Fatalf("handover %d: the head names %d logs, want at most %d", i, n, keptLogs+1)
		}
		if want != nil {
			wantContents(t, w, want, fmt.Sprintf("handover %d", i))
		}
		if err := w.WriteAt(ctx, pattern(64, byte(i)), int64(i%8*bs+i), false); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		want = make([]byte, w.Size())
		if err := w.ReadAt(ctx, want, 0); err != nil {
			t.Fatal(err)
		}
		if err := w.Discard(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wantStored(t, s, id, want, "at the end")
}

// TestLogReplayReadsLargePieces: an open replays a log in large reads,
// not a few records per read (the log read is part of every takeover's
// and every handover's pause).
func TestLogReplayReadsLargePieces(t *testing.T) {
	f := objstore.NewFaulty(objstore.NewMem())
	c := countOps(f)
	id := newClone(t, f, 8)
	w := openLogged(t, f, id, OpenOptions{})
	const rec = 4096
	n := 0
	for b := range 8 {
		for off := 0; off+rec <= bs; off += rec {
			if err := w.WriteAt(ctx, pattern(rec, byte(b+off/rec)), int64(b*bs+off), false); err != nil {
				t.Fatal(err)
			}
			n++
			if n%16 == 0 {
				if err := w.Flush(ctx); err != nil { // (within the burst)
					t.Fatal(err)
				}
			}
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, w.Size())
	if err := w.ReadAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	logged := int64(0)
	for _, lf := range w.mu.logs {
		logged += lf.end - int64(lf.ref.From)
	}
	if logged < int64(n*rec) {
		t.Fatalf("%d bytes logged for %d writes of %d", logged, n, rec)
	}
	c.start()
	r, err := Open(ctx, f, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ops := c.stop()
	if reads := ops["readat log"]; reads > 8 {
		t.Errorf("replaying %d bytes of log took %d reads, want at most 8", logged, reads)
	}
	wantContents(t, r, want, "after the replay")
	w.Discard(ctx)
}

// TestHandoverNoLogWriterOverKeptLog: a writer without a log of its own
// (a move's reopen) that kept a handed-over log and writes over logged
// bytes checkpoints them first: its write is not hidden under them, now
// or after a reopen.
func TestHandoverNoLogWriterOverKeptLog(t *testing.T) {
	s := objstore.NewMem()
	id := newClone(t, s, 4)
	_, want := handedOver(t, s, id, OpenOptions{}, []int{0, 1})
	w, err := Open(ctx, s, id, OpenOptions{Writable: true, Copying: true, Handover: true})
	if err != nil {
		t.Fatal(err)
	}
	p := pattern(40, 77)
	if err := w.WriteAt(ctx, p, 7+20, false); err != nil {
		t.Fatal(err)
	}
	copy(want[27:], p)
	wantContents(t, w, want, "the writer")
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantStored(t, s, id, want, "after a reopen")
}

// TestHandoverKeepsShortReplaysOnly: a kept log is replayed again by
// every open until a checkpoint, and a segmented log's replay reads its
// segments one after the other, one per flush. So a handover keeps a
// segmented log while it holds fewer segments than a writer's own log
// may (segCount; the writer's flushes then count towards that bound);
// past that its open checkpoints it, as before. A log of a few dozen
// flushes is kept: checkpointing it held the first write of a client
// switching daemons for a block put per block it touched (with a bound
// of 32 segments, the case of 64 below checkpointed).
func TestHandoverKeepsShortReplaysOnly(t *testing.T) {
	for _, tc := range []struct{ flushes, segCount int }{{16, segCount}, {64, segCount}, {64, 64}, {64, 32}} {
		t.Run(fmt.Sprint(tc.flushes, "/", tc.segCount), func(t *testing.T) {
			s := wrapSeg(objstore.NewMem())
			id := newClone(t, s, 4)
			w := openLogged(t, s, id, OpenOptions{})
			for i := range tc.flushes {
				if err := w.WriteAt(ctx, pattern(64, byte(i)), int64(i%4*bs+i), false); err != nil {
					t.Fatal(err)
				}
				if err := w.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			want := make([]byte, w.Size())
			if err := w.ReadAt(ctx, want, 0); err != nil {
				t.Fatal(err)
			}
			if err := w.Discard(ctx); err != nil {
				t.Fatal(err)
			}
			// (Lowered only now: the writer before flushed under the
			// default bound, as one whose log outgrew it does not.)
			defer setSegCount(tc.segCount)()
			nw := openLogged(t, s, id, OpenOptions{Handover: true})
			kept := len(nw.Head().Logs) - 1
			if long := tc.flushes >= tc.segCount; long && kept != 0 || !long && kept != 1 {
				t.Errorf("after %d flushes (segments), with a bound of %d segments, the handover's open kept %d logs", tc.flushes, tc.segCount, kept)
			}
			wantContents(t, nw, want, "the new writer")
			if err := nw.Close(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
