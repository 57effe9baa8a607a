package daemon

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// segStore hides every optional capability of the store it wraps but a
// fresh Stat: a store without in-place writes (S3, or pools with an S3
// pool), where a writer's log is stored as segments, one per flush.
type segStore struct{ objstore.Store }

func (segStore) FreshStat() bool { return true }

// TestSwitchWritesNoBlock: a client that writes 4 KiB and flushes, over
// and over, through daemon a, then connects to daemon b and writes and
// flushes there before it closes its idle connection to a (as a VM
// migrated between hosts does, and the writer of e2e
// TestRadosPoolsMoveLive): b asks a to hand the volume over, and its
// write+flush writes no block. b's open finds a's log, one segment per
// flush, past what a handover keeps (keptSegs), and checkpoints it: into
// the persisted index (docs/format.md, "Write log index"), not into a
// block per block the log touched, which held that first write+flush for
// about a second with blocks on RADOS or S3 (a checkpoint put each block
// whole there). Counted in store operations, not time.
func TestSwitchWritesNoBlock(t *testing.T) {
	ctx := context.Background()
	s := segStore{objstore.NewMem()}
	a, b := newNode(t, s, "a", 5*time.Second), newNode(t, s, "b", 5*time.Second)
	if _, err := a.d.mgr.CreateVolume(ctx, "v", 1<<20, 16); err != nil {
		t.Fatal(err)
	}
	rec := func(tag string, i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("%s %04d\n", tag, i)), 4096/8) }
	off := func(i int) int64 { return int64(i*7%256) * 4096 } // 16 blocks of 64 KiB, all touched
	want := make([]byte, 1<<20)
	ea, releaseA, err := a.d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer releaseA()
	const flushes = 100 // segments of a's log: more than a handover kept before
	for i := range flushes {
		p := rec("a", i)
		if err := ea.WriteAt(ctx, p, off(i), false); err != nil {
			t.Fatal(err)
		}
		if err := ea.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		copy(want[off(i):], p)
	}
	var (
		mu     sync.Mutex
		blocks []string
	)
	b.store.Add(objstore.Rule{Hook: func(_ context.Context, op objstore.Op, name string) {
		switch op {
		case objstore.OpPut, objstore.OpCreate, objstore.OpSwap:
		default:
			return
		}
		if k := blockmap.ParseName(name).Kind; k == blockmap.PrivateObject || k == blockmap.ContentObject {
			mu.Lock()
			blocks = append(blocks, string(op)+" "+name)
			mu.Unlock()
		}
	}})
	eb := b.open(t, "v")
	p := rec("b", flushes)
	if err := eb.WriteAt(ctx, p, off(flushes), false); err != nil {
		t.Fatal(err)
	}
	if err := eb.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	copy(want[off(flushes):], p)
	b.store.Reset()
	if role(a, "v") != "follower" || role(b, "v") != "writer" {
		t.Fatalf("after b's write: a is %s, b is %s", role(a, "v"), role(b, "v"))
	}
	mu.Lock()
	if len(blocks) > 0 {
		t.Errorf("b's first write+flush wrote %d blocks (want none: its write goes to its log): %v", len(blocks), blocks)
	}
	mu.Unlock()
	releaseA() // the client closes its idle connection to a
	if got := readBack(t, eb, 0, len(want)); !bytes.Equal(got, want) {
		t.Error("b reads other than what was written through a, then b")
	}
	if got := readBack(t, newNode(t, s, "c", 5*time.Second).open(t, "v"), 0, len(want)); !bytes.Equal(got, want) {
		t.Error("a third daemon reads other than what was written through a, then b")
	}
}
