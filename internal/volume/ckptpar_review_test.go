package volume

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
)

// TestReviewCheckpointPartFails: the next writer's checkpoint of a
// previous writer's log of 8 logged blocks, all written at once, where
// one block write fails (an unknown outcome: a timeout), another lands
// though it reports the same, and the others land. The open fails and
// stores no head; crash images taken while the writes are in flight (any
// subset landed) and the store after the failure read every flushed
// byte, and the next open checkpoints and reads them too.
func TestReviewCheckpointPartFails(t *testing.T) {
	ctx := context.Background()
	const blocks = 8
	mem := objstore.NewCrashable()
	s := objstore.NewFaulty(mem)
	id := newClone(t, s, blocks)
	v := openLogged(t, s, id, OpenOptions{})
	want := pattern(blocks*bs, 1)
	for b := range blocks {
		off := b*bs + 512
		p := pattern(4096, byte(10+b))
		if err := v.WriteAt(ctx, p, int64(off), false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Discard(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(what string, h *Volume) {
		t.Helper()
		got := make([]byte, len(want))
		if err := h.ReadAt(ctx, got, 0); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s reads other bytes than were flushed", what)
		}
	}
	timeout := errors.New("test: operation timed out")
	data := "vol/" + id.String() + "/d/"
	var (
		mu     sync.Mutex
		images []*objstore.Mem
		rng    = rand.New(rand.NewPCG(1, 2))
	)
	s.Add(objstore.Rule{Op: objstore.OpWriteAt, Prefix: data, Skip: 2, Count: 1, Err: timeout})
	s.Add(objstore.Rule{Op: objstore.OpWriteAt, Prefix: data, Skip: 4, Count: 1, Err: timeout, ErrAfter: true})
	s.Add(objstore.Rule{Prefix: data, Hook: func(_ context.Context, op objstore.Op, _ string) {
		if op != objstore.OpWriteAt && op != objstore.OpPut && op != objstore.OpSync {
			return
		}
		mu.Lock()
		images = append(images, mem.Crash(rng))
		mu.Unlock()
	}})
	if w, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true}); err != nil {
		t.Logf("open: %v", err)
	} else {
		// The checkpoint may run at the first flush instead.
		ferr := w.Flush(ctx)
		w.Discard(ctx)
		if ferr == nil {
			t.Log("the checkpoint did not fail")
		}
	}
	s.Reset()
	mu.Lock()
	imgs := images
	mu.Unlock()
	if len(imgs) == 0 {
		t.Fatal("no block write was seen")
	}
	t.Logf("%d crash images", len(imgs))
	for i, img := range imgs {
		r, err := Open(ctx, img, id, OpenOptions{})
		if err != nil {
			t.Fatalf("crash image %d: %v", i, err)
		}
		check("a crash image", r)
		r.Close(ctx)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check("a reader after the failed checkpoint", r)
	w := openLogged(t, s, id, OpenOptions{})
	check("the next writer", w)
	if err := w.WriteAt(ctx, pattern(100, 99), 3*bs+600, false); err != nil {
		t.Fatal(err)
	}
	copy(want[3*bs+600:], pattern(100, 99))
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	img := mem.Crash(rng)
	for what, st := range map[string]objstore.Store{"a reopen": s, "a crash image after Close": img} {
		r, err := Open(ctx, st, id, OpenOptions{})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		check(what, r)
	}
}

// TestReviewCheckpointMemoryBounded: checkpoints write several blocks at
// once, each through a block's buffer (4 MiB by default, up to 32 MiB),
// and a daemon checkpoints many volumes at once (the writers of a
// drained host's volumes, each opened after a handoff): the block writes
// in flight over all of them, and so their buffers, stay within
// checkpointMem. Two volumes' checkpoints of 8 logged blocks each run at
// once under a budget of 4 blocks; each block write is held until more
// than that are in flight (or, when none comes, for a while).
func TestReviewCheckpointMemoryBounded(t *testing.T) {
	ctx := context.Background()
	const (
		blocks  = 8
		volumes = 2
		budget  = 4
	)
	defer func(m *semaphore.Weighted) { checkpointMem = m }(checkpointMem)
	checkpointMem = semaphore.NewWeighted(budget * bs)
	s := objstore.NewFaulty(objstore.NewMem())
	var ids []blockmap.ID
	for range volumes {
		id := newClone(t, s, blocks)
		v := openLogged(t, s, id, OpenOptions{})
		for b := range blocks {
			if err := v.WriteAt(ctx, pattern(4096, byte(10+b)), int64(b*bs+512), false); err != nil {
				t.Fatal(err)
			}
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := v.Discard(ctx); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	var (
		mu         sync.Mutex
		inFl, most int
		over       = make(chan struct{})
	)
	s.Add(objstore.Rule{Prefix: "vol/", Hook: func(_ context.Context, op objstore.Op, name string) {
		if op != objstore.OpWriteAt && op != objstore.OpPut || !strings.Contains(name, "/d/") {
			return
		}
		mu.Lock()
		inFl++
		most = max(most, inFl)
		if inFl == budget+1 {
			close(over)
		}
		mu.Unlock()
		select {
		case <-over:
		case <-time.After(200 * time.Millisecond): // none came: let this one go
		}
		mu.Lock()
		inFl--
		mu.Unlock()
	}})
	g := &errgroup.Group{}
	for _, id := range ids {
		g.Go(func() error {
			w, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true})
			if err != nil {
				return err
			}
			return w.Close(ctx)
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if most > budget {
		t.Errorf("%d checkpoints of %d logged blocks had %d block writes in flight, want at most %d", volumes, blocks, most, budget)
	}
}

// TestReviewOwnCheckpointPartFails: a writer's own checkpoint of 8
// logged blocks, written at once, where one block write fails with an
// unknown outcome and another lands though it reports the same: the
// checkpoint fails, the writer keeps writing, and its next flush, a
// crash image after it, and a reopen after Close read every byte.
func TestReviewOwnCheckpointPartFails(t *testing.T) {
	ctx := context.Background()
	const blocks = 8
	mem := objstore.NewCrashable()
	s := objstore.NewFaulty(mem)
	id := newClone(t, s, blocks)
	w := openLogged(t, s, id, OpenOptions{})
	want := pattern(blocks*bs, 1)
	write := func(off int, p []byte) {
		t.Helper()
		if err := w.WriteAt(ctx, p, int64(off), false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	for b := range blocks {
		write(b*bs+512, pattern(4096, byte(10+b)))
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	timeout := errors.New("test: operation timed out")
	data := "vol/" + id.String() + "/d/"
	s.Add(objstore.Rule{Op: objstore.OpWriteAt, Prefix: data, Skip: 2, Count: 1, Err: timeout})
	s.Add(objstore.Rule{Op: objstore.OpWriteAt, Prefix: data, Skip: 4, Count: 1, Err: timeout, ErrAfter: true})
	if err := w.Checkpoint(ctx); err == nil {
		t.Fatal("the checkpoint did not fail")
	}
	s.Reset()
	for b := range blocks {
		write(b*bs+1024, pattern(512, byte(30+b)))
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(what string, st objstore.Store) {
		t.Helper()
		r, err := Open(ctx, st, id, OpenOptions{})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		got := make([]byte, len(want))
		if err := r.ReadAt(ctx, got, 0); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s reads other bytes than were flushed", what)
		}
	}
	check("a crash image after the next flush", mem.Crash(rand.New(rand.NewPCG(3, 4))))
	if err := w.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	check("a reopen after Close", s)
	check("a crash image after Close", mem.Crash(rand.New(rand.NewPCG(5, 6))))
}
