package volume

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
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
