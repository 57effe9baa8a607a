package move

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// deadClock is the real clock until the holder died, then an hour
// ahead: its lease has run out (it is taken over at once).
type deadClock struct{ l *live }

func (c deadClock) Now() time.Time {
	if c.l.dead.Load() {
		return time.Now().Add(time.Hour)
	}
	return time.Now()
}

// live is a fixture whose volume v has a live writer w, holding the
// lease as a daemon does (with an admin address, "holder"), with blocks
// written and flushed through its write log and in place. The mover
// (f.m) takes leases as another node; when it asks the holder to hand
// over (lease.Config.Ask), w flushes and releases, as a daemon's handoff
// does; with dead, it does not answer and its lease is taken over.
type live struct {
	*fixture
	ops  *opLog
	id   blockmap.ID
	w    *volume.Volume
	hm   *manage.Manager
	dead atomic.Bool
}

func newLive(t *testing.T) *live {
	t.Helper()
	meta, a, b := objstore.NewFaulty(objstore.NewMem()), objstore.NewFaulty(objstore.NewMem()), objstore.NewFaulty(objstore.NewMem())
	l := &live{fixture: newFixture(t, meta, a, b), ops: &opLog{}}
	l.ops.watch("meta", meta)
	l.ops.watch("a", a)
	l.ops.watch("b", b)
	rec, err := l.m.Lookup(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	l.id = rec.ID
	hm := *l.m
	hm.Leases, err = lease.NewManager(l.m.Store, lease.Config{Node: "holder", Addr: "holder:1"})
	if err != nil {
		t.Fatal(err)
	}
	l.hm = &hm
	mover := *l.m
	mover.Leases, err = lease.NewManager(l.m.Store, lease.Config{Node: "mover", Clock: deadClock{l}, Ask: func(ctx context.Context, rec lease.Record, vol string) error {
		if l.dead.Load() {
			return errors.New("connection refused")
		}
		if err := l.w.Flush(ctx); err != nil {
			return err
		}
		return l.w.Discard(ctx)
	}})
	if err != nil {
		t.Fatal(err)
	}
	l.m = &mover
	l.w, _, err = l.hm.OpenWriter(ctx, l.id, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.w.Discard(context.Background()) })
	l.write(t, 0, "before")
	return l
}

// write writes a small write into blocks 0, 2 and 7 (shared with the
// image: logged) and a whole block 9 (private: in place), and flushes.
func (l *live) write(t *testing.T, seed int, what string) {
	t.Helper()
	want := l.want["v"]
	for i, blk := range []int{0, 2, 7} {
		p := []byte(strings.Repeat(fmt.Sprint(seed+i), 100))
		if err := l.w.WriteAt(ctx, p, int64(blk*bs+5), false); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		copy(want[blk*bs+5:], p)
	}
	p := []byte(strings.Repeat(fmt.Sprint(seed+7), bs))[:bs]
	if err := l.w.WriteAt(ctx, p, 9*bs, false); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	copy(want[9*bs:], p)
	if err := l.w.Flush(ctx); err != nil {
		t.Fatalf("%s: flush: %v", what, err)
	}
}

// leaseWrites are the lease writes and write log reads among ops.
func leaseWrites(ops []string) []string {
	var out []string
	for _, o := range ops {
		f := strings.Fields(o)
		if (strings.HasPrefix(f[2], "lease/") && f[1] != "get") || (strings.Contains(f[2], "/l/") && (f[1] == "get" || f[1] == "readat")) {
			out = append(out, o)
		}
	}
	return out
}

// TestMoveCutoverAsksEpoch: with a live writer that answers, the move's
// cut-over asks it for a new epoch: no lease changes hands, no write log
// is read, no reopen; the writer goes on writing with its lease, and
// every block written after the cut-over is in the target pool.
func TestMoveCutoverAsksEpoch(t *testing.T) {
	l := newLive(t)
	asked := 0
	l.m.AskEpoch = func(ctx context.Context, rec lease.Record, vol string, atLeast uint64, key string) error {
		asked++
		if rec.Addr != "holder:1" || vol != l.id.String() {
			t.Errorf("asked %+v for %s", rec, vol)
		}
		_, err := l.w.BeginEpoch(ctx, atLeast, key)
		return err
	}
	var cut []string
	fellBack := false
	_, err := Move(ctx, l.m, "v", "b", Options{Hook: func(step string) error {
		switch step {
		case StepReopen:
			l.ops.set(true)
		case StepFallback:
			fellBack = true
		case StepCopy:
			if cut == nil {
				cut = l.ops.set(false)
				l.write(t, 20, "a write during the copy")
			}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if asked != 1 || fellBack {
		t.Errorf("asked %d times, fell back %v", asked, fellBack)
	}
	if w := leaseWrites(cut); len(w) != 0 {
		t.Errorf("the cut-over wrote a lease or read a log: %q", w)
	}
	l.write(t, 40, "a write after the move")
	l.f().inPool(t, "v", "b")
	if err := l.w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	l.check(t)
	l.f().inPool(t, "v", "b")
}

func (l *live) f() *fixture { return l.fixture }

// TestMoveCutoverFallback: the ask does not do, and the move takes the
// lease as before: the holder stalls past the mover's wait (and wakes up
// after the handoff: it has no writer any more), answers without
// beginning an epoch (the verification catches it), or died after it
// began one (its lease is taken over). Nothing is lost; every block is
// in the target pool after the switch.
func TestMoveCutoverFallback(t *testing.T) {
	for _, kind := range []string{"stall", "lie", "died"} {
		t.Run(kind, func(t *testing.T) {
			l := newLive(t)
			woke := make(chan error, 1)
			asked := false
			l.m.AskEpoch = func(ctx context.Context, rec lease.Record, vol string, atLeast uint64, key string) error {
				asked = true
				switch kind {
				case "stall":
					<-ctx.Done()
					go func() {
						_, err := l.w.BeginEpoch(context.Background(), atLeast, key)
						woke <- err
					}()
					return ctx.Err()
				case "lie":
					return nil
				}
				if _, err := l.w.BeginEpoch(ctx, atLeast, key); err != nil {
					t.Error(err)
				}
				l.dead.Store(true)
				return errors.New("connection reset")
			}
			fellBack := false
			_, err := Move(ctx, l.m, "v", "b", Options{EpochWait: time.Millisecond, Hook: func(step string) error {
				if step == StepFallback {
					fellBack = true
				}
				return nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			if !fellBack || !asked {
				t.Fatalf("fell back %v, asked %v", fellBack, asked)
			}
			if kind == "stall" {
				if err := <-woke; err == nil {
					t.Error("the stalled holder began an epoch after it handed the volume over")
				}
			}
			l.check(t)
			l.f().inPool(t, "v", "b")
			if kind == "died" {
				return
			}
			// The writer comes back (a daemon's next write retakes the
			// lease) and writes: in the target only.
			w, _, err := l.hm.OpenWriter(ctx, l.id, nil)
			if err != nil {
				t.Fatal(err)
			}
			l.w = w
			l.write(t, 60, "a write after the move")
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			l.check(t)
			l.f().inPool(t, "v", "b")
		})
	}
}

// TestMoveCutoverAskCrash: the mover is killed after the holder answered
// (before it verified) and at the fallback; the rerun finishes, with the
// writer live throughout, and nothing flushed is lost.
func TestMoveCutoverAskCrash(t *testing.T) {
	for _, at := range []string{StepAsked, StepFallback} {
		t.Run(at, func(t *testing.T) {
			l := newLive(t)
			l.m.AskEpoch = func(ctx context.Context, rec lease.Record, vol string, atLeast uint64, key string) error {
				if at == StepFallback {
					return lease.ErrNotHolder
				}
				_, err := l.w.BeginEpoch(ctx, atLeast, key)
				return err
			}
			_, err := Move(ctx, l.m, "v", "b", Options{Hook: func(step string) error {
				if step == at {
					return errKilled
				}
				return nil
			}})
			if !errors.Is(err, errKilled) {
				t.Fatalf("the killed move: %v", err)
			}
			l.write(t, 80, "a write between the runs")
			l.check(t)
			if _, err := Move(ctx, l.m, "v", "b", Options{}); err != nil {
				t.Fatal(err)
			}
			if at == StepAsked {
				l.write(t, 90, "a write after the move")
			} else if w, _, err := l.hm.OpenWriter(ctx, l.id, nil); err != nil {
				t.Fatal(err)
			} else {
				l.w = w
				l.write(t, 90, "a write after the move")
			}
			if err := l.w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			l.check(t)
			l.f().inPool(t, "v", "b")
		})
	}
}
