package move

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore/pools"
	"github.com/archipelago-go/archip/internal/volume"
)

// TestMoveAfterTakeoverSealsFirst: a volume whose writer was taken over
// (its last epoch unsealed: that writer may still land a late write in
// place in its own objects) is moved; the late write lands in the
// source's object after the copy. The move must not leave the map
// referencing a name whose copies in the two pools differ (which one a
// read finds, and which one gc keeps, would then depend on caches and
// timing): it seals the taken-over epoch before it copies, as a
// snapshot does.
func TestMoveAfterTakeoverSealsFirst(t *testing.T) {
	for _, kind := range []string{"mem", "file"} {
		t.Run(kind, func(t *testing.T) {
			f := newKind(t, kind)
			rec, err := f.m.Lookup(ctx, "v")
			if err != nil {
				t.Fatal(err)
			}
			// The takeover: a writer opens v in a new epoch without the
			// old one's release (what lease.TookOver makes OpenWriter do).
			w, err := volume.Open(ctx, f.m.Store, rec.ID, volume.OpenOptions{Writable: true, NewEpoch: true})
			if err != nil {
				t.Fatal(err)
			}
			h := w.Head()
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if h.Unsealed == 0 {
				t.Fatal("no unsealed epoch after the takeover")
			}
			var late string
			for _, e := range w.Entries() {
				if e.IsPrivate() && e.Owner() == rec.ID && e.Epoch() >= h.Unsealed && e.Epoch() < h.Epoch {
					late = e.ObjectName()
				}
			}
			if late == "" {
				t.Fatal("no block of the unsealed epoch")
			}
			landed := false
			_, err = Move(ctx, f.m, "v", "b", Options{Hook: func(step string) error {
				if step == StepSwitch && !landed {
					// The old writer's late write lands in its object, in a.
					landed = true
					b, _, err := f.a.Get(ctx, late)
					if err != nil {
						return err
					}
					_, err = f.a.Put(ctx, late, bytes.Repeat([]byte("L"), len(b)))
					return err
				}
				return nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			if !landed {
				t.Fatal("the late write did not land")
			}
			names, err := referenced(ctx, f.m, rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range names {
				if n == late {
					t.Errorf("after the move, v still references %s, of the epoch taken over", n)
				}
				if blockmap.ParseName(n).Kind != blockmap.PrivateObject {
					continue
				}
				ba, _, erra := f.a.Get(ctx, n)
				bb, _, errb := f.b.Get(ctx, n)
				if erra == nil && errb == nil && !bytes.Equal(ba, bb) {
					t.Errorf("%s: its copies in a and b differ", n)
				}
			}
			if v, _, err := f.m.Open(ctx, "v", false); err != nil {
				t.Fatal(err)
			} else if v.Head().Unsealed != 0 {
				t.Errorf("v left unsealed after the move: %d", v.Head().Unsealed)
			}
		})
	}
}

// TestMoveTwoMovers: two movers of one volume at once (one manager:
// one lease node, so their reopens may also conflict on the head): the
// volume ends in the target, intact, after a rerun if both failed.
func TestMoveTwoMovers(t *testing.T) {
	f := newKind(t, "mem")
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := Move(ctx, f.m, "v", "b", Options{})
			errs <- err
		}()
	}
	failed := 0
	for range 2 {
		if err := <-errs; err != nil {
			failed++
			t.Logf("mover: %v", err)
		}
	}
	if failed == 2 {
		if _, err := Move(ctx, f.m, "v", "b", Options{}); err != nil {
			t.Fatal(err)
		}
	}
	f.inPool(t, "v", "b")
	f.check(t)
}

// TestMoveSnapshotChain: a volume with three snapshots, each after
// writes, and a write after the last, moves with all of them.
func TestMoveSnapshotChain(t *testing.T) {
	f := newKind(t, "file")
	rnd := rand.New(rand.NewSource(7))
	for i := 2; i <= 4; i++ {
		f.write(t, "v", int64(i)*bs+int64(i), rnd, bs)
		n := fmt.Sprintf("v@%d", i)
		if _, err := f.m.Snapshot(ctx, "v", n); err != nil {
			t.Fatal(err)
		}
		f.want[n] = manage.ReadT(t, f.m, n, 0, -1)
	}
	f.write(t, "v", 14*bs, rnd, bs)
	f.want["v"] = manage.ReadT(t, f.m, "v", 0, -1)
	if _, err := Move(ctx, f.m, "v", "b", Options{}); err != nil {
		t.Fatal(err)
	}
	f.inPool(t, "v", "b")
	f.check(t)
}

// TestMigrateVolumeCreatedMeanwhile: a volume placed in the source pool
// while a migration runs (rate-limited, with an injected sleep) is moved
// by it too: after it no volume is placed in the source.
func TestMigrateVolumeCreatedMeanwhile(t *testing.T) {
	f := newKind(t, "mem")
	created := false
	var slept atomic.Int64
	opts := Options{Rate: 1 << 20, Sleep: func(ctx context.Context, d time.Duration) error { slept.Add(int64(d)); return nil }}
	res, err := Migrate(ctx, f.m, "a", "b", opts, func(name string) {
		if created {
			return
		}
		created = true
		rec, err := f.m.CreateVolume(ctx, "late", size, shift)
		if err != nil {
			t.Error(err)
			return
		}
		if err := f.r.Place(ctx, rec.ID, "a"); err != nil {
			t.Error(err)
		}
		manage.WriteT(t, f.m, "late", 0, bytes.Repeat([]byte("l"), bs))
	})
	if err != nil {
		t.Fatal(err)
	}
	if slept.Load() == 0 {
		t.Errorf("the rate limit never slept: %+v", res)
	}
	f.want["late"] = manage.ReadT(t, f.m, "late", 0, -1)
	for _, n := range []string{"img", "v", "c", "late"} {
		f.inPool(t, n, "b")
	}
	f.check(t)
}

// TestMoveRacingRemove: the volume is removed (as volume remove does,
// its placement record with it) while its move copies; the move fails,
// and its snapshot and the clone of it read the same.
func TestMoveRacingRemove(t *testing.T) {
	f := newKind(t, "mem")
	rec, _ := f.m.Lookup(ctx, "v")
	removed := false
	_, err := Move(ctx, f.m, "v", "b", Options{Hook: func(step string) error {
		if step == StepCopy && !removed {
			removed = true
			if err := f.m.Remove(ctx, "v"); err != nil {
				return err
			}
			return f.r.Unplace(ctx, rec.ID)
		}
		return nil
	}})
	if err == nil {
		t.Fatal("the move of a removed volume succeeded")
	}
	delete(f.want, "v")
	f.check(t)
	if p, _, err := f.r.Record(ctx, rec.ID); err != nil || p != (pools.Record{}) {
		t.Errorf("the removed volume's placement: %+v %v", p, err)
	}
}

// TestCancelInterruptedRerun: a cancel interrupted, then run again,
// finishes the cancel: the volume ends in the pool its move came from
// (running --cancel again must not undo the cancel).
func TestCancelInterruptedRerun(t *testing.T) {
	for _, step := range []string{StepReopen, StepCopy, StepSwitch} {
		t.Run(step, func(t *testing.T) {
			f := newKind(t, "mem")
			if _, err := Move(ctx, f.m, "v", "b", Options{Hook: crashAt(StepCopied, 2)}); !errors.Is(err, errCrash) {
				t.Fatal(err)
			}
			if _, err := Cancel(ctx, f.m, "v", Options{Hook: crashAt(step, 1)}); !errors.Is(err, errCrash) {
				t.Fatal(err)
			}
			res, err := Cancel(ctx, f.m, "v", Options{})
			if err != nil {
				t.Fatal(err)
			}
			if res.To != "a" {
				t.Errorf("the rerun of the cancel moved v to %s", res.To)
			}
			f.inPool(t, "v", "a")
			f.check(t)
		})
	}
}
