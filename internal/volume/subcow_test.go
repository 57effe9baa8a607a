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
	for _, w := range []struct{ off, n int64 }{{sub, 3 * sub}, {10*sub + 5, 7}} {
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
