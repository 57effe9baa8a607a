package volume

import (
	"fmt"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// noPendingNamed fails if a stored head of id names an object whose
// lazy create is not durable yet (f.LazyPending).
func noPendingNamed(t *testing.T, f *objstore.File, id blockmap.ID, what string) {
	t.Helper()
	pending := map[string]bool{}
	for _, name := range f.LazyPending() {
		pending[name] = true
	}
	head, _, err := ReadHead(ctx, f, id)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := LoadMap(ctx, f, head)
	if err != nil {
		t.Fatal(err)
	}
	for b, e := range entries {
		if e.Kind() == blockmap.Zero {
			continue
		}
		if pending[e.ObjectName()] {
			t.Fatalf("%s: the stored head names block %d's object %s, whose create is not durable", what, b, e.ObjectName())
		}
	}
}

// TestLazyCreateStoredHeadsSynced: whatever stores a head (a flush with
// the writer's handles evicted meanwhile, a snapshot right after first
// writes, a hash, a close, a checkpoint of the write log), no stored
// head names a block whose create is still pending, and a flush leaves
// none of the writer's creates pending.
func TestLazyCreateStoredHeadsSynced(t *testing.T) {
	for _, log := range []bool{false, true} {
		for _, op := range []string{"evict", "snapshot", "hash", "close", "checkpoint"} {
			t.Run(fmt.Sprintf("%s/log=%v", op, log), func(t *testing.T) {
				f, cid := lazyClone(t)
				v, err := Open(ctx, f, cid, OpenOptions{Writable: true, Log: log})
				if err != nil {
					t.Fatal(err)
				}
				if op == "evict" {
					v.handles.mu.Lock()
					v.handles.max = 2
					v.handles.mu.Unlock()
				}
				for b := 0; b < lazyBlocks; b++ {
					pg := b<<lazyShift/4096 + b%16
					if err := v.WriteAt(ctx, lazyPage(pg, 1), int64(pg)*4096, false); err != nil {
						t.Fatal(err)
					}
				}
				waitKick(v)
				noPendingNamed(t, f, cid, "before "+op)
				switch op {
				case "evict":
					err = v.Flush(ctx)
				case "snapshot":
					var snap blockmap.ID
					snap, err = v.Snapshot(ctx)
					if err == nil {
						noPendingNamed(t, f, snap, "the snapshot")
					}
				case "hash":
					_, err = v.HashWith(ctx, HashOptions{})
				case "close":
					err = v.Close(ctx)
				case "checkpoint":
					err = v.Checkpoint(ctx)
				}
				if err != nil {
					t.Fatal(err)
				}
				noPendingNamed(t, f, cid, "after "+op)
				if op != "close" {
					if err := v.Flush(ctx); err != nil {
						t.Fatal(err)
					}
					if p := f.LazyPending(); len(p) != 0 {
						t.Fatalf("after %s and a flush, %d creates pending: %v", op, len(p), p)
					}
					v.Close(ctx)
				} else if p := f.LazyPending(); len(p) != 0 {
					t.Fatalf("after close, %d creates pending: %v", len(p), p)
				}
			})
		}
	}
}

// TestLazyCreateDiscardForgets: a writer discarded before it flushed (a
// lost lease) leaves its lazily created blocks to the garbage collector,
// and no note of them in the store's pending set: a long-lived process
// whose writers are discarded would otherwise fill the set (65,536) and
// then create every private block with its fsyncs, for good.
func TestLazyCreateDiscardForgets(t *testing.T) {
	f, cid := lazyClone(t)
	v, err := Open(ctx, f, cid, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	for b := 0; b < 8; b++ {
		pg := b << lazyShift / 4096
		if err := v.WriteAt(ctx, lazyPage(pg, 1), int64(pg)*4096, false); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.LazyPending()) != 8 {
		t.Fatalf("pending %v, want 8 creates", f.LazyPending())
	}
	if err := v.Discard(ctx); err != nil {
		t.Fatal(err)
	}
	if p := f.LazyPending(); len(p) != 0 {
		t.Fatalf("after Discard, %d creates are still noted as pending: %v", len(p), p)
	}
}
