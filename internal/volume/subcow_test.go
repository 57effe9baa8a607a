package volume

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// counting wraps a memory store with in-place writes, syncs and copies
// (no handles, so every I/O passes here) and counts the data it moves.
type counting struct {
	objstore.Store      // the *objstore.Mem below, without its handles
	mem                 *objstore.Mem
	mu                  sync.Mutex
	written, read       int64 // bytes of data objects written (copies included) and read
	reads               int   // ReadAt calls on data objects
	readNames           []string
	countOn             bool
	copies, writesCalls int
}

func (c *counting) on(v bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.countOn, c.written, c.read, c.reads, c.readNames, c.copies, c.writesCalls = v, 0, 0, 0, nil, 0, 0
}

func newCounting() *counting {
	m := objstore.NewMem()
	return &counting{Store: m, mem: m}
}

func isData(name string) bool {
	return bytes.Contains([]byte(name), []byte("/d/")) || bytes.HasPrefix([]byte(name), []byte("blk/"))
}

func (c *counting) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	c.mu.Lock()
	if c.countOn && isData(name) {
		c.read += int64(len(p))
		c.reads++
		c.readNames = append(c.readNames, name)
	}
	c.mu.Unlock()
	return c.mem.ReadAt(ctx, name, p, off)
}

func (c *counting) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	b, ver, err := c.mem.Get(ctx, name)
	c.mu.Lock()
	if c.countOn && isData(name) {
		c.read += int64(len(b))
		c.reads++
	}
	c.mu.Unlock()
	return b, ver, err
}

func (c *counting) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	c.mu.Lock()
	if c.countOn && isData(name) {
		c.written += int64(len(p))
		c.writesCalls++
	}
	c.mu.Unlock()
	return c.mem.WriteAt(ctx, name, p, off)
}

func (c *counting) Put(ctx context.Context, name string, p []byte) (objstore.Version, error) {
	c.mu.Lock()
	if c.countOn && isData(name) {
		c.written += int64(len(p))
		c.writesCalls++
	}
	c.mu.Unlock()
	return c.mem.Put(ctx, name, p)
}

func (c *counting) Copy(ctx context.Context, src, dst string) error {
	in, err := c.mem.Stat(ctx, src)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.countOn {
		c.written += in.Size
		c.copies++
	}
	c.mu.Unlock()
	return c.mem.Copy(ctx, src, dst)
}

func (c *counting) Sync(ctx context.Context, name string) error { return c.mem.Sync(ctx, name) }

var (
	_ objstore.RangeWriter = (*counting)(nil)
	_ objstore.Copier      = (*counting)(nil)
	_ objstore.Syncer      = (*counting)(nil)
)

// TestFirstWriteToCloneMovesOneSubBlock: the first 4 KiB write to a
// block of a fresh clone (or of a volume just snapshotted) of a 4 MiB-block
// volume copies at most one sub-block (64 KiB), not the block (issue 11).
func TestFirstWriteToCloneMovesOneSubBlock(t *testing.T) {
	s := newCounting()
	v := NewTestVolume(t, s, 8<<20, 0)
	full := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{1}).Read(full)
	if err := v.WriteAt(ctx, full, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, full, 4<<20, false); err != nil {
		t.Fatal(err)
	}
	sid, err := v.Snapshot(ctx)
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
	defer clone.Close(ctx)
	sub := int64(4<<20) / 64
	for _, tc := range []struct {
		name string
		v    *Volume
		off  int64
	}{{"clone", clone, 100 << 10}, {"snapshotted volume", v, 4<<20 + 3*sub - 2048}} {
		p := fill(4096, 'x')
		s.on(true)
		if err := tc.v.WriteAt(ctx, p, tc.off, false); err != nil {
			t.Fatal(err)
		}
		w, r := s.written, s.read
		s.on(false)
		// A write straddling two sub-blocks fills both.
		limit := sub
		if tc.off/sub != (tc.off+4095)/sub {
			limit = 2 * sub
		}
		if w > limit || r > limit {
			t.Errorf("%s: a 4 KiB write wrote %d and read %d bytes of data, want at most %d each", tc.name, w, r, limit)
		}
		want := append([]byte(nil), full...)
		copy(want[tc.off&(4<<20-1):], p)
		wantBytes(t, tc.v, tc.off&^(4<<20-1), want, tc.name+" after the write")
		if err := tc.v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The snapshot still reads what it held.
	snap, err := Open(ctx, s, sid, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, snap, 0, full, "snapshot block 0")
	wantBytes(t, snap, 4<<20, full, "snapshot block 1")
	// Reopened, the clone reads the same: the partial map persisted.
	clone.Close(ctx)
	clone, err = Open(ctx, s, cid, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), full...)
	copy(want[100<<10:], fill(4096, 'x'))
	wantBytes(t, clone, 0, want, "clone reopened")
}

// TestPartialReadOneRequestPerRun: a read of a partly written block
// issues one backend read per run of sub-blocks that live in the same
// object, never one per sub-block.
func TestPartialReadOneRequestPerRun(t *testing.T) {
	s := newCounting()
	v := NewTestVolume(t, s, 4<<20, 0)
	full := fill(4<<20, 'a')
	if err := v.WriteAt(ctx, full, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	sub := int64(4<<20) / 64
	// Sub-blocks 1..3 and 10 written: runs 0 | 1-3 | 4-9 | 10 | 11-63.
	// (A snapshot between the writes: the second write of one epoch that
	// needs sub-blocks the block lacks completes the block.)
	for i, w := range []struct{ off, n int64 }{{sub, 3 * sub}, {10*sub + 5, 7}} {
		if i > 0 {
			if _, err := v.Snapshot(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := v.WriteAt(ctx, fill(int(w.n), 'b'), w.off, false); err != nil {
			t.Fatal(err)
		}
	}
	copy(full[sub:4*sub], fill(int(3*sub), 'b'))
	copy(full[10*sub+5:], fill(7, 'b'))
	s.on(true)
	wantBytes(t, v, 0, full, "whole block")
	if s.reads != 5 {
		t.Errorf("a read of the whole block made %d backend reads (%v), want 5 (one per run)", s.reads, s.readNames)
	}
	s.on(true)
	wantBytes(t, v, sub+10, full[sub+10:3*sub], "inside one run")
	if s.reads != 1 {
		t.Errorf("a read inside one run made %d backend reads, want 1", s.reads)
	}
	s.on(false)
	e := v.Entries()[0]
	if e.Kind() != blockmap.Partial || e.Mask() != 0b10000001110 {
		t.Fatalf("block 0 is %v, want a partial block with sub-blocks 1-3 and 10", e)
	}
	// Filling every sub-block makes it a plain private block.
	if err := v.WriteAt(ctx, fill(4<<20, 'c'), 0, false); err != nil {
		t.Fatal(err)
	}
	if e := v.Entries()[0]; e.Kind() != blockmap.Private {
		t.Fatalf("block 0 is %v after a whole write, want private", e)
	}
}

// snapshotted returns a volume of 4 blocks of 64 KiB on s, written whole
// with 'a' and snapshotted, so that its next writes copy on write.
func snapshotted(t *testing.T, s objstore.Store) (*Volume, []byte) {
	t.Helper()
	v := NewTestVolume(t, s, 4*bs, SmallShift)
	data := fill(4*bs, 'a')
	if err := v.WriteAt(ctx, data, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	return v, data
}

// TestPartialConcurrentWrites: writes to one partial block at once, to
// sub-blocks it has and lacks, partly covered or whole, and reads beside
// them, end as their serial effect (each range is written by one writer).
func TestPartialConcurrentWrites(t *testing.T) {
	v, data := snapshotted(t, objstore.NewMem())
	sub := bs / blockmap.SubBlocks
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				off := (w*8+i)*sub + (w*7+i)%sub/2
				n := 1 + (w+i*3)%(sub-(off%sub))
				p := fill(n, byte('A'+w))
				if err := v.WriteAt(ctx, p, int64(off), false); err != nil {
					t.Error(err)
					return
				}
				mustRead(t, v, 0, bs)
			}
		}()
	}
	wg.Wait()
	for w := 0; w < 8; w++ {
		for i := 0; i < 8; i++ {
			off := (w*8+i)*sub + (w*7+i)%sub/2
			n := 1 + (w+i*3)%(sub-(off%sub))
			copy(data[off:], fill(n, byte('A'+w)))
		}
	}
	wantBytes(t, v, 0, data, "after concurrent writes")
	if e := v.Entries()[0]; e.Kind() != blockmap.Private {
		t.Fatalf("block 0 is %v after every sub-block was written, want private", e)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, v.store, v.ID(), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, r, 0, data, "reopened")
}

// TestUnsealedBlockCopiedWhole: after a takeover, a small write to a block
// of the epoch taken over copies it whole: no partial block reads from an
// object that the old writer's late write may still change.
func TestUnsealedBlockCopiedWhole(t *testing.T) {
	s := objstore.NewMem()
	v := NewTestVolume(t, s, 4*bs, SmallShift)
	if err := v.WriteAt(ctx, fill(bs, 'a'), 0, true); err != nil {
		t.Fatal(err)
	}
	n, err := Open(ctx, s, v.ID(), OpenOptions{Writable: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	if err := n.WriteAt(ctx, []byte("x"), 10, false); err != nil {
		t.Fatal(err)
	}
	if e := n.Entries()[0]; e.Kind() != blockmap.Private {
		t.Fatalf("a write to an unsealed block made %v, want a private copy", e)
	}
	// A late write of the old writer does not show.
	if err := v.WriteAt(ctx, fill(bs, 'L'), 0, false); err != nil {
		t.Fatal(err)
	}
	want := fill(bs, 'a')
	want[10] = 'x'
	wantBytes(t, n, 0, want, "after the late write")
}

// TestTaintedPartialRetired: an in-place write to a partial block that
// timed out taints its object; the next write copies the block whole
// (base included) to a new object, so the late write never shows.
func TestTaintedPartialRetired(t *testing.T) {
	ls := NewLateStore(objstore.NewMem())
	v, data := snapshotted(t, ls)
	if err := v.WriteAt(ctx, fill(10, 'p'), 100, false); err != nil {
		t.Fatal(err)
	}
	copy(data[100:], fill(10, 'p'))
	if e := v.Entries()[0]; e.Kind() != blockmap.Partial {
		t.Fatalf("block 0 is %v, want partial", e)
	}
	ls.Arm()
	if err := v.WriteAt(ctx, fill(10, 'L'), 200, false); err == nil {
		t.Fatal("the write that timed out succeeded")
	}
	if err := v.WriteAt(ctx, fill(10, 'n'), bs/2, true); err != nil {
		t.Fatal(err)
	}
	copy(data[bs/2:], fill(10, 'n'))
	ls.Land()
	if e := v.Entries()[0]; e.Kind() != blockmap.Private {
		t.Fatalf("block 0 is %v after the retirement, want private", e)
	}
	got := mustRead(t, v, 0, bs)
	got[200] = data[200] // the write that timed out may or may not have landed before the copy
	if !bytes.Equal(got[:200], data[:200]) || !bytes.Equal(got[210:], data[210:bs]) {
		t.Fatal("the block changed beyond the write that timed out")
	}
	before := mustRead(t, v, 0, bs)
	if err := v.WriteAt(ctx, nil, 0, true); err != nil {
		t.Fatal(err)
	}
	wantBytes(t, v, 0, before, "after the late write landed")
}

// TestHashPartial: Hash turns partial blocks into content blocks that
// read the same, and RepairHash stores such a content block again from
// the partial block's object and base.
func TestHashPartial(t *testing.T) {
	s := objstore.NewMem()
	v, data := snapshotted(t, s)
	for _, off := range []int{5, bs + bs/2, 3*bs - 1} {
		if err := v.WriteAt(ctx, []byte("xyz"), int64(off), false); err != nil {
			t.Fatal(err)
		}
		copy(data[off:], "xyz")
	}
	st, err := v.HashWith(ctx, HashOptions{KeepReplaced: true})
	if err != nil {
		t.Fatal(err)
	}
	partials := 0
	for _, r := range st.Replaced {
		if r.Old.Kind() == blockmap.Partial {
			partials++
		}
	}
	if partials != 4 { // the last write straddles blocks 2 and 3
		t.Fatalf("hash replaced %d partial blocks, want 4 (%+v)", partials, st.Replaced)
	}
	for _, e := range v.Entries() {
		if e.Kind() != blockmap.Content {
			t.Fatalf("block is %v after a hash, want content", e)
		}
	}
	wantBytes(t, v, 0, data, "after the hash")
	for _, r := range st.Replaced {
		s.Delete(ctx, r.New.ObjectName())
	}
	if lost, err := RepairHash(ctx, s, st.Replaced); err != nil || len(lost) != 0 {
		t.Fatalf("repair: lost %v, %v", lost, err)
	}
	r, err := Open(ctx, s, v.ID(), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, r, 0, data, "after the repair")
}

// TestSecondWriteCompletesBlock: the first write to a block of a clone
// moves a sub-block; the block's second write that needs sub-blocks it
// lacks copies the rest from the base, so that a guest that flushes
// after each write pays at most two map changes per block, not one per
// sub-block.
func TestSecondWriteCompletesBlock(t *testing.T) {
	s := objstore.NewMem()
	v := NewTestVolume(t, s, 4<<20, 0)
	full := fill(4<<20, 'a')
	if err := v.WriteAt(ctx, full, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	sub := int64(4<<20) / 64
	if err := v.WriteAt(ctx, fill(100, 'b'), 5*sub, true); err != nil {
		t.Fatal(err)
	}
	copy(full[5*sub:], fill(100, 'b'))
	if e := v.Entries()[0]; e.Kind() != blockmap.Partial {
		t.Fatalf("after the first write block 0 is %v, want partial", e)
	}
	if err := v.WriteAt(ctx, fill(100, 'b'), 5*sub+200, true); err != nil { // a sub-block it has: in place
		t.Fatal(err)
	}
	copy(full[5*sub+200:], fill(100, 'b'))
	if e := v.Entries()[0]; e.Kind() != blockmap.Partial {
		t.Fatalf("after a write into a sub-block it has, block 0 is %v, want partial", e)
	}
	if err := v.WriteAt(ctx, fill(100, 'c'), 40*sub, true); err != nil {
		t.Fatal(err)
	}
	copy(full[40*sub:], fill(100, 'c'))
	if e := v.Entries()[0]; e.Kind() != blockmap.Private {
		t.Fatalf("after a second write needing a new sub-block, block 0 is %v, want private (whole)", e)
	}
	wantBytes(t, v, 0, full, "completed block")
	r, err := Open(ctx, s, v.ID(), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	wantBytes(t, r, 0, full, "completed block, reopened")
}

// TestUnloggedWriteKeepsPartial: on a logging writer, a write past the
// burst (no flush asked for lately) to a block of its own that lacks the
// sub-blocks it touches moves those sub-blocks, not the rest of the
// block: the map change it makes is batched into the next flush anyway,
// so completing the block (TestSecondWriteCompletesBlock, for writers
// that do not log) would only move the whole block, under its stripe,
// while the guest's other writes to it wait.
func TestUnloggedWriteKeepsPartial(t *testing.T) {
	defer setLogBurst(0)()
	s := objstore.NewMem()
	id := newClone(t, s, 2)
	v := openLogged(t, s, id, OpenOptions{})
	defer v.Close(ctx)
	want := make([]byte, 2*bs)
	if err := v.ReadAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	sub := int64(bs) / 64
	for i, off := range []int64{5*sub + 7, 40 * sub, 41*sub - 10} {
		p := pattern(100, byte(i+7))
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	if e := v.Entries()[0]; e.Kind() != blockmap.Partial || e.Mask() != 1<<5|1<<40|1<<41 {
		t.Fatalf("block 0 is %v, want a partial block with sub-blocks 5, 40 and 41", e)
	}
	wantBytes(t, v, 0, want, "before the flush")
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	wantBytes(t, r, 0, want, "reopened after the flush")
}
