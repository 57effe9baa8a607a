package volume

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// A fresh clone on the file store for the lazy-create tests: 128 blocks
// of 64 KiB over a snapshot whose every page reads lazyPage(page, 0).
const (
	lazyShift  = 16
	lazyBlocks = 128
	lazySize   = lazyBlocks << lazyShift
	lazyPages  = lazySize / 4096
)

// lazyPage is the content of page pg as written at step (0: the base's).
func lazyPage(pg, step int) []byte {
	p := make([]byte, 4096)
	for i := 0; i < len(p); i += 8 {
		binary.LittleEndian.PutUint32(p[i:], uint32(pg)+1)
		binary.LittleEndian.PutUint32(p[i+4:], uint32(step)+1)
	}
	return p
}

// lazyClone makes the snapshot and a clone of it on a new file store.
func lazyClone(t *testing.T) (*objstore.File, blockmap.ID) {
	t.Helper()
	f, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	id, err := Create(ctx, f, CreateOptions{Size: lazySize, BlockShift: lazyShift})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, f, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	for pg := 0; pg < lazyPages; pg++ {
		if err := v.WriteAt(ctx, lazyPage(pg, 0), int64(pg)*4096, false); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := v.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	cid, err := Clone(ctx, f, snap, 0)
	if err != nil {
		t.Fatal(err)
	}
	return f, cid
}

// TestCloneFirstWriteNoFsync: the first write to each block of a fresh
// clone creates the block's object without an fsync (through the map,
// past the write log's burst too); the flush makes them durable. It made
// about four per block (a temporary file, the object's directory, the
// directories made for it).
func TestCloneFirstWriteNoFsync(t *testing.T) {
	for _, log := range []bool{false, true} {
		t.Run(fmt.Sprintf("log=%v", log), func(t *testing.T) {
			f, cid := lazyClone(t)
			v, err := Open(ctx, f, cid, OpenOptions{Writable: true, Log: log})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close(ctx)
			write := func(b int) {
				pg := b<<lazyShift/4096 + b%16
				if err := v.WriteAt(ctx, lazyPage(pg, 1), int64(pg)*4096, false); err != nil {
					t.Fatal(err)
				}
			}
			first := 0
			if log {
				// The first 256 KiB go to the log; the write past them
				// starts a flush in the background that checkpoints
				// them (TestLogBurstKickCheckpoints). The writes after
				// it take the map path.
				for ; first <= int(logBurst/4096); first++ {
					write(first)
				}
				waitKick(v)
			}
			// The write that started the flush took the map path; its
			// object is still pending when the flush took its cut before
			// the write's map change, and durable when after.
			pending := len(f.LazyPending())
			before := f.Fsyncs()
			for b := first; b < lazyBlocks; b++ {
				write(b)
			}
			created := len(f.LazyPending()) - pending
			if n := f.Fsyncs() - before; n != 0 {
				t.Fatalf("%d first writes to a fresh clone's blocks made %d fsyncs, want 0", lazyBlocks-first, n)
			}
			if created != lazyBlocks-first {
				t.Fatalf("%d objects created lazily, want %d", created, lazyBlocks-first)
			}
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if p := f.LazyPending(); len(p) != 0 {
				t.Fatalf("after the flush, %d objects are not durable: %v", len(p), p)
			}
			if n := f.Fsyncs() - before; n < int64(created) {
				t.Fatalf("the flush made %d fsyncs for %d new objects", n, created)
			}
		})
	}
}

// waitKick waits for the flush a write started in the background (past
// the write log's burst) to end.
func waitKick(v *Volume) {
	for {
		v.mu.Lock()
		kick := v.mu.logKick
		v.mu.Unlock()
		if !kick {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCloneLazyCreateCrash: a fresh clone written at random and flushed
// now and then, then a machine crash (objstore.File.CrashLazy: each
// object created since the last flush absent, unlinked, or linked
// without its data). Every page reads what the last flush saw or a write
// made to it since, never garbage: the clone's unwritten pages read as
// the base, flushed data is intact. (A flush that does not make its
// lazily created objects durable fails this.)
func TestCloneLazyCreateCrash(t *testing.T) {
	for seed := uint64(0); seed < 6; seed++ {
		for _, log := range []bool{false, true} {
			t.Run(fmt.Sprintf("seed=%d/log=%v", seed, log), func(t *testing.T) {
				lazyCrash(t, seed, log)
			})
		}
	}
}

func lazyCrash(t *testing.T, seed uint64, log bool) {
	rng := rand.New(rand.NewPCG(seed, 11))
	f, cid := lazyClone(t)
	v, err := Open(ctx, f, cid, OpenOptions{Writable: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	flushed := make([]int, lazyPages) // step of each page's content at the last flush
	since := make([][]int, lazyPages) // steps written since
	damaged := false
	for step := 1; step <= 300; step++ {
		pg := rng.IntN(lazyPages)
		if err := v.WriteAt(ctx, lazyPage(pg, step), int64(pg)*4096, false); err != nil {
			t.Fatal(err)
		}
		since[pg] = append(since[pg], step)
		if rng.IntN(40) == 0 && step < 290 {
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			for i := range since {
				if n := len(since[i]); n > 0 {
					flushed[i], since[i] = since[i][n-1], nil
				}
			}
		}
	}
	// The machine stops: no flush after this moment (one that the
	// write log's burst started runs to its end first, as one the crash
	// came after).
	waitKick(v)
	v.flushMu.Lock()
	damaged = len(f.LazyPending()) > 0
	if err := f.CrashLazy(rng); err != nil {
		t.Fatal(err)
	}
	g, err := objstore.OpenFile(f.Root(), false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, g, cid, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	for pg := 0; pg < lazyPages; pg++ {
		if err := r.ReadAt(ctx, got, int64(pg)*4096); err != nil {
			t.Fatal(err)
		}
		ok := bytes.Equal(got, lazyPage(pg, flushed[pg]))
		for _, s := range since[pg] {
			ok = ok || bytes.Equal(got, lazyPage(pg, s))
		}
		if !ok {
			t.Fatalf("page %d (block %d) reads %x..., want step %d's or one of %v (damaged: %v)",
				pg, pg*4096>>lazyShift, got[:8], flushed[pg], since[pg], damaged)
		}
	}
	r.Close(ctx)
	// A writer opened after the crash works on it.
	w, err := Open(ctx, g, cid, OpenOptions{Writable: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteAt(ctx, lazyPage(0, 999), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLazyCreateTakeoverLate: a writer that created blocks lazily and is
// taken over before it flushed (another process opens the volume) either
// never syncs them (its machine crashed: CrashLazy) or wakes up late and
// flushes (which syncs them, then fails): the taker and every later
// reader see the base where the taker did not write, never the old
// writer's objects.
func TestLazyCreateTakeoverLate(t *testing.T) {
	for _, late := range []string{"crash", "flush"} {
		t.Run(late, func(t *testing.T) {
			a, cid := lazyClone(t)
			old, err := Open(ctx, a, cid, OpenOptions{Writable: true})
			if err != nil {
				t.Fatal(err)
			}
			for b := 0; b < lazyBlocks; b++ {
				pg := b << lazyShift / 4096
				if err := old.WriteAt(ctx, lazyPage(pg, 1), int64(pg)*4096, false); err != nil {
					t.Fatal(err)
				}
			}
			if len(a.LazyPending()) == 0 {
				t.Fatal("nothing created lazily")
			}
			b, err := objstore.OpenFile(a.Root(), false)
			if err != nil {
				t.Fatal(err)
			}
			taker, err := Open(ctx, b, cid, OpenOptions{Writable: true})
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, 0, lazySize)
			for pg := 0; pg < lazyPages; pg++ {
				want = append(want, lazyPage(pg, 0)...)
			}
			wantContents(t, taker, want, "the taker")
			// The taker writes half the blocks, the old writer's too.
			for blk := 0; blk < lazyBlocks; blk += 2 {
				pg := blk<<lazyShift/4096 + 1
				if err := taker.WriteAt(ctx, lazyPage(pg, 2), int64(pg)*4096, false); err != nil {
					t.Fatal(err)
				}
				copy(want[pg*4096:], lazyPage(pg, 2))
			}
			if err := taker.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			switch late {
			case "crash":
				if err := a.CrashLazy(rand.New(rand.NewPCG(1, 2))); err != nil {
					t.Fatal(err)
				}
			case "flush":
				if err := old.Flush(ctx); !errors.Is(err, ErrFenced) {
					t.Fatalf("the old writer's late flush: %v, want ErrFenced", err)
				}
			}
			wantContents(t, taker, want, "the taker after the old writer woke")
			if err := taker.Close(ctx); err != nil {
				t.Fatal(err)
			}
			c, err := objstore.OpenFile(a.Root(), false)
			if err != nil {
				t.Fatal(err)
			}
			wantStored(t, c, cid, want, "a reader after both")
		})
	}
}
