package volume

import (
	"bytes"
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

var ctx = context.Background()

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func mustRead(t *testing.T, v *Volume, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if err := v.ReadAt(ctx, p, off); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantBytes(t *testing.T, v *Volume, off int64, want []byte, what string) {
	t.Helper()
	if got := mustRead(t, v, off, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("%s: read %x..., want %x...", what, got[:min(8, len(got))], want[:min(8, len(want))])
	}
}

func countObjects(t *testing.T, s objstore.Store) (n int, bytes int64) {
	t.Helper()
	if err := s.List(ctx, "", func(in objstore.Info) error { n++; bytes += in.Size; return nil }); err != nil {
		t.Fatal(err)
	}
	return n, bytes
}

// TestIsolation checks invariant I4 directly: a snapshot, its volume and
// a clone of it never see each other's writes, in either direction.
func TestIsolation(t *testing.T) {
	s := objstore.NewMem()
	v := NewTestVolume(t, s, 4*bs, SmallShift)
	if err := v.WriteAt(ctx, fill(4*bs, 'A'), 0, false); err != nil {
		t.Fatal(err)
	}
	sid, err := v.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := Open(ctx, s, sid, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cid, err := Clone(ctx, s, sid, 0)
	if err != nil {
		t.Fatal(err)
	}
	clone, err := Open(ctx, s, cid, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	// Volume → snapshot and clone.
	v.WriteAt(ctx, fill(10, 'V'), bs+5, true)
	v.WriteZeroes(ctx, 2*bs, bs, false, true)
	wantBytes(t, snap, 0, fill(4*bs, 'A'), "snapshot after writes to its volume")
	wantBytes(t, clone, 0, fill(4*bs, 'A'), "clone after writes to the origin volume")
	// Clone → snapshot and volume.
	clone.WriteAt(ctx, fill(bs, 'C'), 0, true)
	clone.Trim(ctx, 3*bs, bs)
	wantBytes(t, snap, 0, fill(4*bs, 'A'), "snapshot after writes to its clone")
	wantBytes(t, v, 0, fill(bs, 'A'), "volume after writes to a clone of its snapshot")
	wantBytes(t, v, 3*bs, fill(bs, 'A'), "volume block 3 after a trim on the clone")
	// Snapshots refuse writes.
	if err := snap.WriteAt(ctx, []byte("x"), 0, false); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write to a snapshot: %v", err)
	}
	if _, err := Open(ctx, s, sid, OpenOptions{Writable: true}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("opening a snapshot writable: %v", err)
	}
	// Removing the snapshot leaves the clone whole.
	if err := Remove(ctx, s, sid); err != nil {
		t.Fatal(err)
	}
	clone2, err := Open(ctx, s, cid, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, clone2, bs, fill(bs, 'A'), "clone after its snapshot was removed")
}

// TestCloneCopiesNoData checks invariant I6: a clone and a snapshot write
// one head object and no data.
func TestCloneCopiesNoData(t *testing.T) {
	s := objstore.NewMem()
	v := NewTestVolume(t, s, 64*bs, SmallShift)
	v.WriteAt(ctx, fill(64*bs, 7), 0, true)
	n0, _ := countObjects(t, s)
	sid, err := v.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Clone(ctx, s, sid, 128*bs); err != nil {
		t.Fatal(err)
	}
	if n1, _ := countObjects(t, s); n1 != n0+2 {
		t.Fatalf("snapshot + clone made %d objects, want 2 heads", n1-n0)
	}
	if _, err := Clone(ctx, s, v.ID(), 0); err == nil {
		t.Fatal("cloned a writable volume directly")
	}
	if _, err := Clone(ctx, s, sid, 10); !errors.Is(err, ErrBadSize) {
		t.Fatalf("clone smaller than its source: %v", err)
	}
}

func TestBadIO(t *testing.T) {
	s := objstore.NewMem()
	v := NewTestVolume(t, s, 3*bs+100, SmallShift)
	v.WriteAt(ctx, fill(3*bs+100, 1), 0, true)
	n0, b0 := countObjects(t, s)
	for _, tc := range []struct{ off, n int64 }{{-1, 1}, {3*bs + 100, 1}, {3 * bs, 101}, {1 << 62, 1 << 62}} {
		if tc.n < 1<<20 {
			if err := v.WriteAt(ctx, make([]byte, tc.n), tc.off, false); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("write %d+%d: %v", tc.off, tc.n, err)
			}
			if err := v.ReadAt(ctx, make([]byte, tc.n), tc.off); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("read %d+%d: %v", tc.off, tc.n, err)
			}
		}
		if err := v.WriteZeroes(ctx, tc.off, tc.n, false, false); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("zero %d+%d: %v", tc.off, tc.n, err)
		}
	}
	v.Flush(ctx)
	if n, b := countObjects(t, s); n != n0 || b != b0 {
		t.Fatalf("bad I/O changed the store: %d objects %d bytes, was %d, %d", n, b, n0, b0)
	}
	wantBytes(t, v, 0, fill(3*bs+100, 1), "after bad I/O")
	// The last, short block reads and writes at its end.
	if err := v.WriteAt(ctx, []byte{9}, 3*bs+99, false); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(ctx, s, CreateOptions{Size: 0}); !errors.Is(err, ErrBadSize) {
		t.Fatalf("zero-size volume: %v", err)
	}
	if _, err := Create(ctx, s, CreateOptions{Size: 1 << 20, BlockShift: 12}); !errors.Is(err, ErrBadSize) {
		t.Fatalf("4 KiB blocks: %v", err)
	}
	if _, err := Open(ctx, s, blockmap.NewID(), OpenOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open of a missing volume: %v", err)
	}
}

func TestCorruptSegment(t *testing.T) {
	s := objstore.NewMem()
	v := NewTestVolume(t, s, 4*bs, SmallShift)
	v.WriteAt(ctx, fill(bs, 3), 0, true)
	if err := v.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	h := v.Head()
	name := h.Segments[0].Name()
	b, _, _ := s.Get(ctx, name)
	b[len(b)/2] ^= 1
	s.Put(ctx, name, b)
	if _, err := Open(ctx, s, v.ID(), OpenOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with a corrupt segment: %v", err)
	}
	s.Delete(ctx, name)
	if _, err := Open(ctx, s, v.ID(), OpenOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with a missing segment: %v", err)
	}
	s.Put(ctx, blockmap.HeadName(v.ID()), []byte("garbage"))
	if _, err := Open(ctx, s, v.ID(), OpenOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with a corrupt head: %v", err)
	}
}

func TestMissingObject(t *testing.T) {
	s := objstore.NewMem()
	v := NewTestVolume(t, s, 4*bs, SmallShift)
	v.WriteAt(ctx, fill(2*bs, 3), 0, true)
	s.Delete(ctx, v.Entries()[0].ObjectName())
	v, err := Open(ctx, s, v.ID(), OpenOptions{}) // no object kept open
	if err != nil {
		t.Fatal(err)
	}
	if err := v.ReadAt(ctx, make([]byte, 10), 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of a block whose object is gone: %v", err)
	}
	wantBytes(t, v, bs, fill(bs, 3), "other blocks")
}

// TestFullDisk: a full store fails the write or the flush with
// ErrNoSpace; nothing that was flushed before changes, and once space is
// back the same handle flushes what it holds.
func TestFullDisk(t *testing.T) {
	mem := objstore.NewMem()
	f := objstore.NewFaulty(mem)
	v := NewTestVolume(t, f, 8*bs, SmallShift)
	v.WriteAt(ctx, fill(2*bs, 'a'), 0, true)

	f.Add(objstore.Rule{Op: objstore.OpWriteAt, Err: objstore.ErrNoSpace})
	if err := v.WriteAt(ctx, fill(bs, 'b'), 4*bs, false); !errors.Is(err, objstore.ErrNoSpace) {
		t.Fatalf("write on a full store: %v", err)
	}
	wantBytes(t, v, 4*bs, fill(bs, 0), "block after a failed write")
	f.Reset()

	v.WriteAt(ctx, fill(bs, 'c'), 5*bs, false)
	f.Add(objstore.Rule{Op: objstore.OpCreate, Prefix: "vol/", Err: objstore.ErrNoSpace})
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: "vol/", Err: objstore.ErrNoSpace})
	if err := v.Flush(ctx); !errors.Is(err, objstore.ErrNoSpace) {
		t.Fatalf("flush on a full store: %v", err)
	}
	reopened, err := Open(ctx, mem, v.ID(), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, reopened, 0, fill(2*bs, 'a'), "flushed data after a failed flush")
	wantBytes(t, reopened, 5*bs, fill(bs, 0), "unflushed block after a failed flush")
	f.Reset()
	if err := v.Flush(ctx); err != nil {
		t.Fatalf("flush once space is back: %v", err)
	}
	reopened, _ = Open(ctx, mem, v.ID(), OpenOptions{})
	wantBytes(t, reopened, 5*bs, fill(bs, 'c'), "block after the retried flush")
}

// TestFenced: a second writer takes over the head; the first handle's
// flush fails and it refuses every write after that.
func TestFenced(t *testing.T) {
	s := objstore.NewMem()
	a := NewTestVolume(t, s, 4*bs, SmallShift)
	a.WriteAt(ctx, fill(bs, 1), 0, true)
	b, err := Open(ctx, s, a.ID(), OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	b.WriteAt(ctx, fill(bs, 2), bs, true)
	a.WriteAt(ctx, fill(bs, 3), 2*bs, false)
	if err := a.Flush(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("flush by the stale writer: %v", err)
	}
	if err := a.WriteAt(ctx, []byte{1}, 0, false); !errors.Is(err, ErrFenced) {
		t.Fatalf("write by the fenced writer: %v", err)
	}
	c, _ := Open(ctx, s, a.ID(), OpenOptions{})
	wantBytes(t, c, bs, fill(bs, 2), "the new writer's data")
	wantBytes(t, c, 2*bs, fill(bs, 0), "the fenced writer's unflushed block")
}

func TestBlockStatus(t *testing.T) {
	s := objstore.NewMem()
	v := NewTestVolume(t, s, 6*bs+10, SmallShift)
	v.WriteAt(ctx, []byte{1}, bs+7, false)
	v.WriteAt(ctx, fill(bs, 1), 2*bs, false)
	v.WriteAt(ctx, []byte{1}, 6*bs+3, false)
	got, err := v.BlockStatus(ctx, 10, 6*bs)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{10, bs - 10, true}, {bs, 2 * bs, false}, {3 * bs, 3 * bs, true}, {6 * bs, 10, false}}
	if len(got) != len(want) {
		t.Fatalf("BlockStatus = %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("BlockStatus = %v, want %v", got, want)
		}
	}
}

// TestHashDedups: two snapshots with the same data, hashed, store it once.
func TestHashDedups(t *testing.T) {
	s := objstore.NewMem()
	data := bytes.Repeat([]byte("0123456789abcdef"), 4*bs/16)
	var snaps []blockmap.ID
	for i := 0; i < 2; i++ {
		v := NewTestVolume(t, s, 4*bs, SmallShift)
		v.WriteAt(ctx, data, 0, true)
		sid, _ := v.Snapshot(ctx)
		snaps = append(snaps, sid)
	}
	var total HashStats
	for _, sid := range snaps {
		h, err := Open(ctx, s, sid, OpenOptions{Remap: true})
		if err != nil {
			t.Fatal(err)
		}
		st, err := h.Hash(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		h.Close(ctx)
		total.Converted += st.Converted
		total.NewContent += st.NewContent
		r, _ := Open(ctx, s, sid, OpenOptions{})
		wantBytes(t, r, 0, data, "snapshot after hash")
	}
	// 4 blocks each, and every block has the same 16-byte pattern.
	if total.Converted != 8 || total.NewContent != 1 {
		t.Fatalf("hash stats %+v: want 8 converted, 1 new content object", total)
	}
}

// TestStalledWriterIsFenced: a writer whose unflushed data is older
// than MaxUnflushedAge checks every object its map will reference before
// persisting it; one deleted meanwhile (by a garbage collection) fences
// the handle: the flush fails, the head is unchanged, and every later
// write and flush fails too, also after a write re-created the object.
func TestStalledWriterIsFenced(t *testing.T) {
	type putOnly struct{ objstore.Store }
	for name, s := range map[string]objstore.Store{"mem": objstore.NewMem(), "whole-block": putOnly{objstore.NewMem()}} {
		t.Run(name, func(t *testing.T) {
			v := NewTestVolume(t, s, 4*bs, SmallShift)
			now := time.Now()
			v.now = func() time.Time { return now }
			if err := v.WriteAt(ctx, fill(bs, 1), 0, true); err != nil {
				t.Fatal(err)
			}
			v.WriteAt(ctx, fill(bs, 5), bs, false)
			v.WriteAt(ctx, fill(bs, 6), 2*bs, false)
			now = now.Add(MaxUnflushedAge + time.Minute)
			head, _, err := s.Get(ctx, blockmap.HeadName(v.ID()))
			if err != nil {
				t.Fatal(err)
			}
			s.Delete(ctx, v.Entries()[1].ObjectName())
			if err := v.Flush(ctx); !errors.Is(err, ErrStale) || !errors.Is(err, ErrFenced) {
				t.Fatalf("flush of a stalled writer whose object was deleted: %v, want ErrStale, a kind of ErrFenced", err)
			}
			for what, err := range map[string]error{
				"write":    v.WriteAt(ctx, fill(bs, 7), bs, false),
				"flush":    v.Flush(ctx),
				"zero":     v.WriteZeroes(ctx, 3*bs, bs, false, true),
				"resize":   v.Resize(ctx, 8*bs),
				"flush(2)": v.Flush(ctx),
			} {
				if !errors.Is(err, ErrStale) {
					t.Errorf("%s after the stale flush: %v, want ErrStale", what, err)
				}
			}
			if _, err := v.Snapshot(ctx); !errors.Is(err, ErrStale) {
				t.Errorf("snapshot after the stale flush: %v, want ErrStale", err)
			}
			if err := v.Close(ctx); !errors.Is(err, ErrStale) {
				t.Errorf("close after the stale flush: %v, want ErrStale", err)
			}
			if after, _, _ := s.Get(ctx, blockmap.HeadName(v.ID())); !bytes.Equal(after, head) {
				t.Fatal("the fenced writer changed the head")
			}
			r, err := Open(ctx, s, v.ID(), OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantBytes(t, r, 0, fill(bs, 1), "block flushed before the stall")
			wantBytes(t, r, bs, fill(2*bs, 0), "blocks of the fenced writer")
		})
	}
}

// TestStalledWriterDetectsDeletedObjects: a writer whose unflushed data is
// older than MaxUnflushedAge checks its objects before persisting its map; one
// deleted meanwhile (by a garbage collection) fails the flush instead of
// leaving a map that points at nothing.
func TestStalledWriterDetectsDeletedObjects(t *testing.T) {
	s := objstore.NewMem()
	v := NewTestVolume(t, s, 4*bs, SmallShift)
	v.WriteAt(ctx, fill(bs, 5), 0, false)
	v.mu.Lock()
	v.mu.dirtySince = time.Now().Add(-2 * MaxUnflushedAge)
	v.mu.Unlock()
	s.Delete(ctx, v.Entries()[0].ObjectName())
	if err := v.Flush(ctx); !errors.Is(err, ErrStale) {
		t.Fatalf("flush of a stalled writer whose object was deleted: %v", err)
	}
	r, err := Open(ctx, s, v.ID(), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e := r.Entries()[0]; e.Kind() != blockmap.Zero {
		t.Fatalf("the failed flush persisted a map entry %v", e)
	}
}

// setSeqReserved rewrites the stored head of id with SeqReserved n.
func setSeqReserved(t *testing.T, s objstore.Store, id blockmap.ID, n uint64) {
	t.Helper()
	h, ver, err := ReadHead(ctx, s, id)
	if err != nil {
		t.Fatal(err)
	}
	h.SeqReserved = n
	if _, err := s.Swap(ctx, blockmap.HeadName(id), blockmap.EncodeHead(h), ver); err != nil {
		t.Fatal(err)
	}
}

// TestSeqOverflow: sequence numbers never wrap: an open reserves at most
// what is left below 2^64, and once none is left the volume refuses to be
// opened for writing, saying why (issue 10 #16).
func TestSeqOverflow(t *testing.T) {
	s := objstore.NewMem()
	id, err := Create(ctx, s, CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	setSeqReserved(t, s, id, math.MaxUint64-2)
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if h, _, _ := ReadHead(ctx, s, id); h.SeqReserved != math.MaxUint64 {
		t.Fatalf("reserved up to %#x, want 2^64-1", h.SeqReserved)
	}
	// Two numbers are left: two blocks (a flush stores their entries in
	// the head's delta, using none).
	if err := v.WriteAt(ctx, []byte("x"), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, []byte("y"), bs, true); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, []byte("z"), 2*bs, false); !errors.Is(err, ErrSeqExhausted) {
		t.Fatalf("write past the last sequence number: %v", err)
	}
	v.Close(ctx)
	for _, opts := range []OpenOptions{{Writable: true}, {Remap: true}} {
		if _, err := Open(ctx, s, id, opts); !errors.Is(err, ErrSeqExhausted) {
			t.Fatalf("open %+v with no sequence number left: %v", opts, err)
		}
	}
	if h, _, _ := ReadHead(ctx, s, id); h.SeqReserved != math.MaxUint64 {
		t.Fatalf("the refused open changed the head: reserved %#x", h.SeqReserved)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	wantBytes(t, r, 0, []byte("x"), "the last write")
}

// TestFlushAfterTimedOutSwap: a head swap that timed out after the store
// applied it (outcome unknown) does not fence the writer: its next flush
// finds its own head in the store, adopts it and goes on; after a flush
// no segment is left behind.
func TestFlushAfterTimedOutSwap(t *testing.T) {
	for _, what := range []string{"flush", "snapshot"} {
		t.Run(what, func(t *testing.T) {
			f := objstore.NewFaulty(objstore.NewMem())
			v := NewTestVolume(t, f, 4*bs, SmallShift)
			v.WriteAt(ctx, fill(bs, 1), 0, false)
			timeout := objstore.Rule{Op: objstore.OpSwap, Prefix: blockmap.HeadName(v.ID()), Count: 1, Err: objstore.ErrTimeout, ErrAfter: true}
			if what == "flush" {
				f.Add(timeout)
				if err := v.Flush(ctx); !errors.Is(err, objstore.ErrTimeout) {
					t.Fatalf("flush: %v, want ErrTimeout", err)
				}
			} else {
				if err := v.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				f.Add(timeout)
				if _, err := v.Snapshot(ctx); !errors.Is(err, objstore.ErrTimeout) {
					t.Fatalf("snapshot: %v, want ErrTimeout", err)
				}
			}
			f.Reset()
			v.WriteAt(ctx, fill(bs, 2), bs, false)
			if err := v.Flush(ctx); err != nil {
				t.Fatalf("flush after the timed-out swap: %v", err)
			}
			if err := v.WriteAt(ctx, fill(bs, 3), 2*bs, true); err != nil {
				t.Fatalf("write after the timed-out swap: %v", err)
			}
			r, err := Open(ctx, f, v.ID(), OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantBytes(t, r, 0, append(append(fill(bs, 1), fill(bs, 2)...), fill(bs, 3)...), "blocks flushed around the timed-out swap")
			if what == "snapshot" {
				return // its segments count as shared: replaced ones are left to the collector
			}
			var segs int
			f.List(ctx, blockmap.VolumePrefix(v.ID())+"s/", func(objstore.Info) error { segs++; return nil })
			if n := len(r.Head().Segments); segs != n {
				t.Fatalf("%d segment objects for a head of %d segments", segs, n)
			}
		})
	}
}

// TestTimedOutSwapThenTakeover: after a head swap whose outcome was
// unknown, a conflict caused by another writer still fences.
func TestTimedOutSwapThenTakeover(t *testing.T) {
	f := objstore.NewFaulty(objstore.NewMem())
	a := NewTestVolume(t, f, 4*bs, SmallShift)
	a.WriteAt(ctx, fill(bs, 1), 0, false)
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: blockmap.HeadName(a.ID()), Count: 1, Err: objstore.ErrTimeout, ErrAfter: true})
	if err := a.Flush(ctx); !errors.Is(err, objstore.ErrTimeout) {
		t.Fatalf("flush: %v, want ErrTimeout", err)
	}
	b, err := Open(ctx, f, a.ID(), OpenOptions{Writable: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	a.WriteAt(ctx, fill(bs, 2), bs, false)
	if err := a.Flush(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("flush of the writer taken over: %v, want ErrFenced", err)
	}
	wantBytes(t, b, 0, fill(bs, 1), "the block the timed-out swap persisted")
	wantBytes(t, b, bs, fill(bs, 0), "the fenced writer's block")
}
