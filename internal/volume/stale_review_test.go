package volume

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestStaleCheckRacingASweep: a writer stalls with unflushed data while
// a garbage collection starts; the collection marked before the writer's
// head swap and its cutoff is past the writer's new objects, so its sweep
// deletes them whenever it reaches them. The writer's existence check
// passes (the sweep has not reached them yet), and the sweep deletes one
// just before the head swap: the flush persists a map that points at
// nothing (it returned nil; the block then read as corrupt). With
// OpenOptions.Hold (package manage passes a collection hold), the writer
// first waits for the running collection to end and keeps others off
// until its head is swapped; its check then finds the object gone and it
// is fenced (ErrStale).
func TestStaleCheckRacingASweep(t *testing.T) {
	f := objstore.NewFaulty(objstore.NewMem())
	id, err := Create(ctx, f, CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	sweeping, held := true, false
	sweep := func() {
		if sweeping {
			f.Store.Delete(ctx, victim)
			sweeping = false
		}
	}
	hold := func(context.Context) (func() error, error) {
		sweep() // the running collection ends first
		held = true
		return func() error { held = false; return nil }, nil
	}
	v, err := Open(ctx, f, id, OpenOptions{Writable: true, Hold: hold})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	v.now = func() time.Time { return now }
	if err := v.WriteAt(ctx, fill(bs, 5), 0, false); err != nil {
		t.Fatal(err)
	}
	victim = v.Entries()[0].ObjectName()
	now = now.Add(time.Hour) // the stall
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: "vol/", Hook: func(context.Context, objstore.Op, string) {
		if !held {
			sweep() // the sweep goes on beside the flush
		}
	}})
	if err := v.Flush(ctx); !errors.Is(err, ErrStale) {
		t.Errorf("flush of a stalled writer while a sweep deletes its objects: %v, want ErrStale", err)
	}
	r, err := Open(ctx, f, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ReadAt(ctx, make([]byte, bs), 0); err != nil {
		t.Fatalf("the stored map points at a deleted object: %v", err)
	}
}
