package gc_test

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/move"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
)

// TestPoolsMigrateOrphanSnapshot: a snapshot whose origin volume was
// removed keeps its blocks, named by that origin, in the origin's pool.
// A migration out of that pool, then a collection, must leave the pool
// empty (it is then retired) with the snapshot still readable.
func TestPoolsMigrateOrphanSnapshot(t *testing.T) {
	meta, a, b := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	s, err := pools.New(meta, []pools.Named{{Name: "a", Store: a}, {Name: "b", Store: b}})
	if err != nil {
		t.Fatal(err)
	}
	m := manage.New(s)
	r, _ := pools.Of(s)
	const bs = 1 << blockmap.MinBlockShift
	rec, err := m.CreateVolume(ctx, "v", 4*bs, blockmap.MinBlockShift)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Place(ctx, rec.ID, "b"); err != nil {
		t.Fatal(err)
	}
	manage.WriteT(t, m, "v", 0, bytes.Repeat([]byte("s"), 2*bs))
	if _, err := m.Snapshot(ctx, "v", "v@1"); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	if err := r.Unplace(ctx, rec.ID); err != nil { // as volume remove does
		t.Fatal(err)
	}
	want := map[string][]byte{"v@1": manage.ReadT(t, m, "v@1", 0, -1)}
	if countIn(t, b) == 0 {
		t.Fatal("nothing in b")
	}
	if _, err := move.Migrate(ctx, m, "b", "a", move.Options{}, nil); err != nil {
		t.Fatal(err)
	}
	collect(t, m)
	if n := countIn(t, b); n != 0 {
		t.Errorf("%d copies left in b after migrating it out: the snapshot loses them when b is retired", n)
	}
	// b retired: the snapshot reads from a alone.
	s2, err := pools.New(meta, []pools.Named{{Name: "a", Store: a}, {Name: "b", Store: objstore.NewMem()}})
	if err != nil {
		t.Fatal(err)
	}
	m2 := manage.New(s2)
	for n, w := range want {
		v, _, err := m2.Open(ctx, n, false)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, len(w))
		if err := v.ReadAt(ctx, p, 0); err != nil || !bytes.Equal(p, w) {
			t.Errorf("%s after b is retired: %v", n, err)
		}
	}
}

// TestPoolsMigrateBucketObjects: objects stored in a bucket while pool a
// was the default keep their blocks there; after the default becomes b
// (as docs/pools.md says to do first), a migration from a to b, then a
// collection, must leave a empty with the objects still readable.
func TestPoolsMigrateBucketObjects(t *testing.T) {
	meta, a, b := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	s, err := pools.New(meta, []pools.Named{{Name: "a", Store: a}, {Name: "b", Store: b}})
	if err != nil {
		t.Fatal(err)
	}
	m := manage.New(s)
	if err := m.Buckets().CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("object data "), 50000)
	if _, err := m.Buckets().PutObject(ctx, "bkt", "key", bytes.NewReader(data), int64(len(data)), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if countIn(t, a) == 0 {
		t.Fatal("nothing in a")
	}
	// The default becomes b.
	s2, err := pools.New(meta, []pools.Named{{Name: "b", Store: b}, {Name: "a", Store: a}})
	if err != nil {
		t.Fatal(err)
	}
	m = manage.New(s2)
	if _, err := move.Migrate(ctx, m, "a", "b", move.Options{}, nil); err != nil {
		t.Fatal(err)
	}
	collect(t, m)
	if n := countIn(t, a); n != 0 {
		t.Errorf("%d copies left in a after migrating it out: the objects lose them when a is retired", n)
	}
	s3, err := pools.New(meta, []pools.Named{{Name: "b", Store: b}, {Name: "a", Store: objstore.NewMem()}})
	if err != nil {
		t.Fatal(err)
	}
	bs := manage.New(s3).Buckets()
	obj, err := bs.GetObject(ctx, "bkt", "key")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := bs.Read(ctx, obj, 0, int64(len(data)), &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Errorf("the object after a is retired: %v", err)
	}
}

// TestPoolsMoveStartWaitsForMarkedCollection: a collection that marked
// before a move's placement swap (paused between its mark and its
// sweep) holds the swap off until it ends: the move's start waits for
// it, and the collection deletes nothing any volume reads.
func TestPoolsMoveStartWaitsForMarkedCollection(t *testing.T) {
	m, _, _, _, want := moveFixture(t)
	time.Sleep(time.Millisecond)
	marked, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	gcDone := make(chan error, 1)
	go func() {
		_, err := m.GC(ctx, gc.WithShortGrace(gc.Options{Grace: time.Nanosecond, Progress: func(phase string, _ int64) {
			if phase == "mark" {
				once.Do(func() { close(marked); <-resume })
			}
		}}))
		gcDone <- err
	}()
	<-marked
	var swappedEarly atomic.Bool
	var gcEnded atomic.Bool
	started := make(chan struct{})
	moveDone := make(chan error, 1)
	go func() {
		_, err := move.Move(ctx, m, "v", "b", move.Options{Hook: func(step string) error {
			switch step {
			case move.StepStart:
				close(started)
			case move.StepReopen: // the record is swapped
				if !gcEnded.Load() {
					swappedEarly.Store(true)
				}
			}
			return nil
		}})
		moveDone <- err
	}()
	<-started
	time.Sleep(100 * time.Millisecond) // a mover that does not wait swaps meanwhile
	gcEnded.Store(true)                // set before the collection ends: only conservative
	close(resume)
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	if err := <-moveDone; err != nil {
		t.Fatal(err)
	}
	if swappedEarly.Load() {
		t.Error("the move swapped the placement while a collection that marked before it ran")
	}
	collect(t, m)
	readAll(t, m, want)
}

// TestPoolsGCDuringCancel: a move interrupted after writes landed in the
// target, then cancelled, with a collection at every step of the
// cancel: nothing any volume reads is deleted, and after it the target
// holds nothing (the volume's blocks written there were copied back).
func TestPoolsGCDuringCancel(t *testing.T) {
	m, _, _, b, want := moveFixture(t)
	crash := errors.New("crash")
	n := 0
	if _, err := move.Move(ctx, m, "v", "b", move.Options{Hook: func(step string) error {
		if step == move.StepCopied {
			if n++; n == 2 {
				return crash
			}
		}
		return nil
	}}); !errors.Is(err, crash) {
		t.Fatal(err)
	}
	const bs = 1 << blockmap.MinBlockShift
	manage.WriteT(t, m, "v", 5*bs, bytes.Repeat([]byte("t"), bs)) // into b
	want["v"] = manage.ReadT(t, m, "v", 0, -1)
	collect(t, m)
	readAll(t, m, want)
	if _, err := move.Cancel(ctx, m, "v", move.Options{Hook: func(step string) error {
		if step != move.StepCopied {
			collect(t, m)
			readAll(t, m, want)
		}
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	collect(t, m)
	readAll(t, m, want)
	if n := countIn(t, b); n != 0 {
		t.Errorf("%d copies left in b after the cancel and a collection", n)
	}
}

// TestPoolsHashDuringMoveKeepsOnlyCopy: a hash of the volume just before
// its move's switch makes content blocks in the default pool (the
// source), which the move does not copy; collections after the switch
// keep them (the target, the volume's only home, holds no copy), and a
// later move takes them along.
func TestPoolsHashDuringMoveKeepsOnlyCopy(t *testing.T) {
	m, r, _, _, want := moveFixture(t)
	hashed := false
	if _, err := move.Move(ctx, m, "v", "b", move.Options{Hook: func(step string) error {
		if step == move.StepSwitch && !hashed {
			hashed = true
			_, err := m.Hash(ctx, "v", nil)
			return err
		}
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	collect(t, m)
	collect(t, m)
	readAll(t, m, want)
	// v reads content blocks only a holds.
	v, _, err := m.Open(ctx, "v", false)
	if err != nil {
		t.Fatal(err)
	}
	onlyA := 0
	for _, e := range v.Entries() {
		if e.Kind() != blockmap.Content {
			continue
		}
		inB, _ := r.Holds(ctx, "b", e.ObjectName())
		if !inB {
			onlyA++
		}
	}
	v.Close(ctx)
	if onlyA == 0 {
		t.Fatal("the hash made no block only a holds")
	}
	// The move back and forth copies them; a then empties of v's.
	if _, err := move.Move(ctx, m, "v", "a", move.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := move.Move(ctx, m, "v", "b", move.Options{}); err != nil {
		t.Fatal(err)
	}
	collect(t, m)
	readAll(t, m, want)
}

// TestPoolsSnapshotAndCloneDuringMove: snapshots taken and a clone made
// of one during a move (at its first walk, and just before its switch),
// with collections after each step: everything reads the same, and the
// snapshots' blocks are in the target.
func TestPoolsSnapshotAndCloneDuringMove(t *testing.T) {
	m, r, _, _, want := moveFixture(t)
	const bs = 1 << blockmap.MinBlockShift
	n := 0
	if _, err := move.Move(ctx, m, "v", "b", move.Options{Hook: func(step string) error {
		if step != move.StepCopy && step != move.StepSwitch {
			return nil
		}
		n++
		if n > 2 {
			collect(t, m)
			readAll(t, m, want)
			return nil
		}
		s, c := fmt.Sprintf("v@m%d", n), fmt.Sprintf("cm%d", n)
		manage.WriteT(t, m, "v", int64(n)*bs, bytes.Repeat([]byte{byte('0' + n)}, bs))
		want["v"] = manage.ReadT(t, m, "v", 0, -1)
		if _, err := m.Snapshot(ctx, "v", s); err != nil {
			return err
		}
		if _, err := m.Clone(ctx, s, c, 0); err != nil {
			return err
		}
		manage.WriteT(t, m, c, 7*bs, bytes.Repeat([]byte("C"), bs))
		want[s], want[c] = manage.ReadT(t, m, s, 0, -1), manage.ReadT(t, m, c, 0, -1)
		collect(t, m)
		readAll(t, m, want)
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	collect(t, m)
	readAll(t, m, want)
	for _, s := range []string{"v@m1", "v@m2"} {
		v, _, err := m.Open(ctx, s, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range v.Entries() {
			if nm := e.ObjectName(); nm != "" {
				if ok, _ := r.Holds(ctx, "b", nm); !ok {
					t.Errorf("%s: %s not in b", s, nm)
				}
			}
		}
		v.Close(ctx)
	}
}
