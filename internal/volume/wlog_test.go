package volume

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// countMem counts the writes of map objects (segments and heads) and the
// syncs, and runs afterSwap once after the next head swap.
type countMem struct {
	*objstore.Mem
	mu        sync.Mutex
	swaps     atomic.Int64
	creates   atomic.Int64
	syncs     atomic.Int64
	afterSwap func()
}

func (m *countMem) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	m.swaps.Add(1)
	ver, err := m.Mem.Swap(ctx, name, data, old)
	m.mu.Lock()
	f := m.afterSwap
	m.afterSwap = nil
	m.mu.Unlock()
	if f != nil && err == nil {
		f()
	}
	return ver, err
}

func (m *countMem) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	m.creates.Add(1)
	return m.Mem.Create(ctx, name, data)
}

func (m *countMem) Sync(ctx context.Context, name string) error {
	m.syncs.Add(1)
	return m.Mem.Sync(ctx, name)
}

func (m *countMem) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	h, err := m.Mem.OpenHandle(ctx, name, create, writable)
	if err != nil {
		return nil, err
	}
	return countHandle{h, m}, nil
}

type countHandle struct {
	objstore.Handle
	m *countMem
}

func (h countHandle) Sync() error {
	h.m.syncs.Add(1)
	return h.Handle.Sync()
}

func pattern(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// newClone makes a volume with every block written, a snapshot of it and
// a clone of the snapshot, and returns the clone's ID.
func newClone(t *testing.T, s objstore.Store, blocks int) blockmap.ID {
	t.Helper()
	ctx := context.Background()
	id, err := Create(ctx, s, CreateOptions{Size: uint64(blocks * bs), BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, pattern(blocks*bs, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	snap, err := v.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := Clone(ctx, s, snap, 0)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestLogFlushWritesNoMap: on a fresh clone, a small write to each shared
// block and a flush after each store no map (no head swap, no segment)
// and sync one object; what was flushed survives a crash, reads the same
// through a follower and after a reopen, and Close checkpoints it into
// the map and leaves no log in the head.
func TestLogFlushWritesNoMap(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewCrashable()
	s := &countMem{Mem: mem}
	id := newClone(t, s, 4)
	v := openLogged(t, s, id, OpenOptions{})
	f, err := Open(ctx, s, id, OpenOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	want := pattern(4*bs, 1)
	swaps, creates, syncs := s.swaps.Load(), s.creates.Load(), s.syncs.Load()
	for b := range 4 {
		off := b*bs + 100*b + 7
		p := pattern(4096, byte(10+b))
		if err := v.WriteAt(ctx, p, int64(off), false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.swaps.Load() - swaps; n != 0 {
		t.Errorf("4 flushes of logged writes swapped the head %d times, want 0", n)
	}
	if n := s.creates.Load() - creates; n != 0 {
		t.Errorf("4 flushes of logged writes created %d objects, want 0", n)
	}
	if n := s.syncs.Load() - syncs; n != 4 {
		t.Errorf("4 flushes of logged writes made %d syncs, want 4 (the log's)", n)
	}
	check := func(what string, h *Volume) {
		t.Helper()
		got := make([]byte, len(want))
		if err := h.ReadAt(ctx, got, 0); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s reads other bytes than were written", what)
		}
	}
	check("the writer", v)
	check("a follower", f)
	img := mem.Crash(nil)
	r, err := Open(ctx, img, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check("a crash image", r)
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h, _, err := ReadHead(ctx, s, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Logs) != 0 {
		t.Errorf("after Close the head names logs %v", h.Logs)
	}
	w, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check("a reopen after Close", w)
	check("a follower after Close", f)
}

// TestLogTornAppend: a replay applies only records a commit follows, and
// stops at the first record that is torn (a header whose data did not
// land, or a checksum that does not match), and so never applies the
// records after it; those were never flushed.
func TestLogTornAppend(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewMem()
	id := newClone(t, mem, 2)
	v := openLogged(t, mem, id, OpenOptions{})
	for k := range 3 {
		if err := v.WriteAt(ctx, pattern(1000, byte(20+k)), int64(k*2000), false); err != nil {
			t.Fatal(err)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A write no flush committed: never applied.
	if err := v.WriteAt(ctx, pattern(1000, 40), 1000, false); err != nil {
		t.Fatal(err)
	}
	lf := v.Head().Logs[0]
	name := blockmap.LogName(id, lf.Epoch, lf.Seq)
	// Tear the second record (after the first and its commit): one byte
	// of its data.
	second := int64(logHeader+1000+logHeader) + logHeader + 500
	if err := mem.WriteAt(ctx, name, []byte{99}, second); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, mem, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6000)
	if err := r.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	want := pattern(6000, 1)
	copy(want, pattern(1000, 20))
	if !bytes.Equal(got, want) {
		t.Fatalf("replay over a torn record: got %v... at 2000, %v... at 4000; want only the first record applied", got[2000:2004], got[4000:4004])
	}
}

// TestLogTakeoverStalledWriter: a writer that stalls past its lease with
// a logged write in flight, and appends and flushes after the volume was
// taken over, fails that flush (ErrFenced), also when its append lands
// between the taker's head swap and its replay of the old log; what it
// flushed before the takeover is there, and what it appended late
// survives in no later open of the volume once the taker checkpointed.
// Dropping the head check of a flush without a map change
// (persistInPlace) fails it.
func TestLogTakeoverStalledWriter(t *testing.T) {
	for _, during := range []bool{false, true} {
		name := "after"
		if during {
			name = "during"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := &countMem{Mem: objstore.NewMem()}
			id := newClone(t, s, 3)
			old := openLogged(t, s, id, OpenOptions{})
			if err := old.WriteAt(ctx, pattern(4096, 7), 0, false); err != nil {
				t.Fatal(err)
			}
			if err := old.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			late := func() error {
				if err := old.WriteAt(ctx, pattern(4096, 9), int64(bs), false); err != nil {
					return err
				}
				return old.Flush(ctx)
			}
			var lateErr error
			if during {
				s.mu.Lock()
				s.afterSwap = func() { lateErr = late() }
				s.mu.Unlock()
			}
			taker, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
			if err != nil {
				t.Fatal(err)
			}
			if !during {
				lateErr = late()
			}
			if !errors.Is(lateErr, ErrFenced) {
				t.Fatalf("the stalled writer's late append and flush: %v, want ErrFenced", lateErr)
			}
			if err := taker.WriteAt(ctx, pattern(100, 5), int64(2*bs), false); err != nil {
				t.Fatal(err)
			}
			if err := taker.Close(ctx); err != nil {
				t.Fatal(err)
			}
			r, err := Open(ctx, s, id, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 3*bs)
			if err := r.ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			if got[0] != 7 || got[4095] != 7 {
				t.Errorf("the flush before the takeover is lost: %d", got[0])
			}
			if !during && got[bs] != 1 {
				t.Errorf("the late append after the takeover shows: %d", got[bs])
			}
			if got[2*bs] != 5 {
				t.Errorf("the taker's write is lost: %d", got[2*bs])
			}
			// Whatever it showed, a late write to the old log after the
			// taker dropped it changes nothing.
			if err := old.WriteAt(ctx, pattern(4096, 11), int64(bs), false); err != nil && !errors.Is(err, ErrFenced) {
				t.Fatal(err)
			}
			r2, err := Open(ctx, s, id, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got2 := make([]byte, 3*bs)
			if err := r2.ReadAt(ctx, got2, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, got2) {
				t.Errorf("a write of the stale writer changed the volume after the taker closed it")
			}
		})
	}
}

// TestLogCheckpointRotates: past logBound a flush checkpoints into the
// map and starts a new log; the old one is deleted, and what was written
// reads the same.
func TestLogCheckpointRotates(t *testing.T) {
	defer setLogBound(bs)()
	ctx := context.Background()
	s := objstore.NewMem()
	id := newClone(t, s, 4)
	v := openLogged(t, s, id, OpenOptions{})
	first := v.Head().Logs[0]
	want := pattern(4*bs, 1)
	for k := range 16 {
		off := (k * 9973) % (4*bs - 8192)
		p := pattern(8192, byte(30+k))
		if err := v.WriteAt(ctx, p, int64(off), false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	h := v.Head()
	if len(h.Logs) != 1 || h.Logs[0].Seq == first.Seq {
		t.Fatalf("logs after 128 KiB appended with a bound of %d: %+v (first %+v)", bs, h.Logs, first)
	}
	if _, err := s.Stat(ctx, blockmap.LogName(id, first.Epoch, first.Seq)); !objstore.IsNotExist(err) {
		t.Errorf("the first log is still there after a checkpoint rotated it: %v", err)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := r.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("reads other bytes than were written")
	}
}

// TestLogUncommittedDropped: a writer taken over (or discarded) with
// logged writes it did not flush: the next writer does not apply them.
func TestLogUncommittedDropped(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewMem()
	id := newClone(t, mem, 2)
	v := openLogged(t, mem, id, OpenOptions{})
	if err := v.WriteAt(ctx, pattern(100, 50), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, pattern(100, 51), 200, false); err != nil {
		t.Fatal(err)
	}
	w, err := Open(ctx, mem, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 300)
	if err := w.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if got[0] != 50 || got[200] != 1 {
		t.Fatalf("after the takeover: flushed byte %d (want 50), unflushed byte %d (want 1)", got[0], got[200])
	}
}

// TestLogBoundedWithoutFlush: writes that no flush follows still get
// checkpointed once the log passes four times its bound (a flush runs in the
// background), so the log and its index stay bounded.
func TestLogBoundedWithoutFlush(t *testing.T) {
	defer setLogBound(bs)()
	ctx := context.Background()
	s := objstore.NewMem()
	id := newClone(t, s, 4)
	v := openLogged(t, s, id, OpenOptions{})
	defer v.Close(ctx)
	for k := range 80 {
		if err := v.WriteAt(ctx, pattern(8192, byte(k)), int64(k*8192%(4*bs)), false); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		v.mu.Lock()
		n := v.mu.logBytes
		v.mu.Unlock()
		if n <= 4*logBound+8192+logHeader {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log holds %d bytes unflushed, bound %d", n, logBound)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLogStaleCheckpointWritesNothing: a writer taken over that wakes up
// and flushes with a checkpoint due writes none of its logged bytes into
// the blocks (objects of its epoch that the taker's map still
// references): the check of the head comes first, and fails. Dropping it
// fails this test (found by TestModelStalls).
func TestLogStaleCheckpointWritesNothing(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	id := newClone(t, s, 2)
	old := openLogged(t, s, id, OpenOptions{})
	sb := int(bs / blockmap.SubBlocks)
	if err := old.WriteAt(ctx, pattern(100, 3), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := old.Checkpoint(ctx); err != nil { // block 0: a partial block of old's
		t.Fatal(err)
	}
	if e := old.Entries()[0]; e.Kind() != blockmap.Partial {
		t.Fatalf("block 0 is %v after a checkpoint, want a partial block", e)
	}
	// Sub-blocks 0 (old's) to 5 (not): logged, not flushed.
	if err := old.WriteAt(ctx, pattern(5*sb, 4), 50, false); err != nil {
		t.Fatal(err)
	}
	taker, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	read := func() []byte {
		p := make([]byte, bs)
		if err := taker.ReadAt(ctx, p, 0); err != nil {
			t.Fatal(err)
		}
		return p
	}
	before := read()
	if err := old.Checkpoint(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("the stale writer's checkpoint: %v, want ErrFenced", err)
	}
	if !bytes.Equal(read(), before) {
		t.Fatal("the stale writer's checkpoint changed what the taker reads")
	}
}

// TestLogBurstTakesMapPath: writes that no flush follows stop going to the
// log once their burst passes logBurst: the records logged so far are
// checkpointed in the background, and later writes to shared blocks take
// the map path (a partial block), as before the log; a flush asked for
// ends the burst, and the next write logs again. Every byte reads back,
// also after a reopen. (Without the burst, a fresh clone written at QD32
// without flushes ran at a fifth of its speed: each write logged, then
// copied again by a checkpoint.)
func TestLogBurstTakesMapPath(t *testing.T) {
	defer setLogBurst(16 << 10)()
	ctx := context.Background()
	s := objstore.NewMem()
	id := newClone(t, s, 8)
	v := openLogged(t, s, id, OpenOptions{})
	want := make([]byte, 8*bs)
	if err := v.ReadAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	write := func(k int, off int64) {
		t.Helper()
		p := pattern(8192, byte(k))
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	logged := func() (int64, int) {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.mu.logBytes, len(v.mu.index)
	}
	write(1, 0)
	write(2, bs)
	if n, _ := logged(); n == 0 {
		t.Fatal("the first writes after opening were not logged")
	}
	write(3, 2*bs) // the burst passes 16 KiB: the log is checkpointed
	deadline := time.Now().Add(time.Minute)
	for _, blocks := logged(); blocks > 0; _, blocks = logged() {
		if time.Now().After(deadline) {
			t.Fatal("the burst's records were not checkpointed")
		}
		time.Sleep(time.Millisecond)
	}
	before, _ := logged()
	for k := 3; k < 8; k++ {
		write(10+k, int64(k)*bs+4096)
	}
	if n, blocks := logged(); n != before || blocks != 0 {
		t.Fatalf("writes past the burst were logged: %d bytes over %d blocks", n-before, blocks)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	write(20, 4*bs+8192)
	if _, blocks := logged(); blocks != 1 {
		t.Fatalf("a write after a flush was not logged (%d blocks logged)", blocks)
	}
	got := make([]byte, 8*bs)
	if err := v.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back differs (%v)", err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	if err := r.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back after reopening differs (%v)", err)
	}
}

// TestLogBurstKickCheckpoints: the write that takes a burst past
// logBurst goes to a block with logged bytes (so it is logged too, and
// changes no map entry): the flush it starts in the background must
// checkpoint the log all the same, or the blocks with logged bytes take
// every later write into the log (each an extent of the index) until the
// log outgrows four times its bound.
func TestLogBurstKickCheckpoints(t *testing.T) {
	defer setLogBurst(16 << 10)()
	ctx := context.Background()
	s := objstore.NewMem()
	id := newClone(t, s, 8)
	v := openLogged(t, s, id, OpenOptions{})
	defer v.Close(ctx)
	for i, off := range []int64{0, bs, 8192} {
		if err := v.WriteAt(ctx, pattern(8192, byte(i+1)), off, false); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		v.mu.Lock()
		kick, blocks := v.mu.logKick, len(v.mu.index)
		v.mu.Unlock()
		if !kick {
			if blocks > 0 {
				t.Fatalf("the burst's flush left %d blocks with logged bytes", blocks)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the burst's flush did not end")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCheckpointTouchedSubBlocks: a checkpoint copies on write only the
// sub-blocks the logged bytes touch, not the span from the first to the
// last, and a partial block that gains logged sub-blocks stays partial.
func TestCheckpointTouchedSubBlocks(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	id := newClone(t, s, 2)
	v := openLogged(t, s, id, OpenOptions{})
	want := make([]byte, 2*bs)
	if err := v.ReadAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	sub := int64(bs) / 64
	check := func(mask uint64, what string) {
		t.Helper()
		if err := v.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		if e := v.Entries()[0]; e.Kind() != blockmap.Partial || e.Mask() != mask {
			t.Fatalf("%s: block 0 is %v, want a partial block with mask %#x", what, e, mask)
		}
		wantBytes(t, v, 0, want, what)
	}
	for _, off := range []int64{10, bs - 100} {
		p := pattern(50, byte(off))
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	check(1|1<<63, "first checkpoint")
	p := pattern(int(sub), 9)
	if err := v.WriteAt(ctx, p, 5*sub, false); err != nil {
		t.Fatal(err)
	}
	copy(want[5*sub:], p)
	check(1|1<<5|1<<63, "second checkpoint")
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	wantBytes(t, r, 0, want, "after reopening")
}
