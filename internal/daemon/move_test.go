package daemon

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/move"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
)

// TestMoveWhileWriting: a volume moves from pool a to b and back while a
// writer writes and flushes through a daemon, handed over to a second
// daemon between the two moves; no write fails, every write is there at
// the end, and after each move the writer's new blocks land in the
// target only (checked without the write log, where the first write to
// a block in a new epoch makes a block at once: with it, writes go to
// the log, in the metadata, until a checkpoint).
//
// With epoch, the mover asks the daemon for a new epoch at the cut-over
// (lease.EpochPath) and must neither take the lease nor fall back to the
// reopen; without, it cannot ask (nil manage.Manager.AskEpoch) and
// reopens the volume.
func TestMoveWhileWriting(t *testing.T) {
	for _, epoch := range []bool{true, false} {
		t.Run(fmt.Sprint("epoch=", epoch), func(t *testing.T) {
			t.Run("log", func(t *testing.T) { testMoveWhileWriting(t, false, epoch) })
			t.Run("no-log", func(t *testing.T) { testMoveWhileWriting(t, true, epoch) })
		})
	}
}

// staleMem is a memory store whose Stat is not trusted fresh: writers
// keep no write log on it.
type staleMem struct{ *objstore.Mem }

func (staleMem) FreshStat() bool { return false }

func testMoveWhileWriting(t *testing.T, whole, epoch bool) {
	ctx := context.Background()
	var meta, pa, pb objstore.Store = objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	if whole {
		pa, pb = staleMem{objstore.NewMem()}, staleMem{objstore.NewMem()}
	}
	// Each process has its own router (its own caches) on the shared
	// backends.
	router := func() objstore.Store {
		s, err := pools.New(meta, []pools.Named{{Name: "a", Store: pa}, {Name: "b", Store: pb}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	n1, n2 := newNode(t, router(), "n1", time.Hour), newNode(t, router(), "n2", time.Hour)
	mover := manage.New(router())
	var handoffs atomic.Int64
	handoff := lease.HTTPAskToken(time.Second, adminToken)
	leases, err := lease.NewManager(mover.Store, lease.Config{Node: "mover", TTL: time.Hour, MaxDrift: time.Minute,
		Ask: func(ctx context.Context, rec lease.Record, volume string) error {
			handoffs.Add(1)
			return handoff(ctx, rec, volume)
		}})
	if err != nil {
		t.Fatal(err)
	}
	mover.Leases = leases
	mover.AskEpoch = nil
	if epoch {
		mover.AskEpoch = lease.HTTPEpochAskToken(time.Second, adminToken)
	}
	const size = 2 << 20
	if _, err := n1.d.mgr.CreateVolume(ctx, "v", size, 16); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	var mu sync.Mutex // guards model and the writer's volume
	e := n1.open(t, "v")
	rnd := rand.New(rand.NewSource(1))
	var writes atomic.Int64
	write := func() {
		mu.Lock()
		defer mu.Unlock()
		i := writes.Add(1)
		off := int64(rnd.Intn(size/4096)) * 4096
		rec := bytes.Repeat([]byte(fmt.Sprintf("w%07d", i)), 512)
		if err := e.WriteAt(ctx, rec, off, false); err != nil {
			t.Errorf("write %d: %v", i, err)
			return
		}
		copy(model[off:], rec)
		if i%7 == 0 {
			if err := e.Flush(ctx); err != nil {
				t.Errorf("flush after write %d: %v", i, err)
			}
		}
	}
	for range 200 {
		write()
	}
	moveWhile := func(to string) {
		t.Helper()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
					write()
				}
			}
		}()
		before := writes.Load()
		handoffs.Store(0)
		fellBack := false
		res, err := move.Move(ctx, mover, "v", to, move.Options{Hook: func(step string) error {
			if step == move.StepFallback {
				fellBack = true
			}
			if step == move.StepCopy || step == move.StepSwitch {
				// Let the writer write between the steps.
				for w := writes.Load(); writes.Load() < w+20 && !t.Failed(); {
					time.Sleep(time.Millisecond)
				}
			}
			return nil
		}})
		close(stop)
		<-done
		if err != nil {
			t.Fatal(err)
		}
		if epoch && (fellBack || handoffs.Load() != 0) {
			t.Errorf("move to %s: fell back to the reopen %v, %d handoffs", to, fellBack, handoffs.Load())
		}
		if !epoch && !fellBack {
			t.Errorf("move to %s: no reopen without an epoch ask", to)
		}
		if writes.Load() < before+40 {
			t.Fatalf("only %d writes during the move", writes.Load()-before)
		}
		t.Logf("moved to %s: %+v, %d writes during it", to, res, writes.Load()-before)
	}
	count := func(s objstore.Store) (n int) {
		s.List(ctx, "", func(objstore.Info) error { n++; return nil })
		return n
	}
	check := func(what string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		got := readBack(t, e, 0, size)
		if !bytes.Equal(got, model) {
			t.Fatalf("%s: the daemon reads different data from what was written", what)
		}
		// And another process, from the store.
		if !bytes.Equal(manage.ReadT(t, manage.New(router()), "v", 0, -1), model) {
			t.Fatalf("%s: the store holds different data from what was written", what)
		}
	}

	moveWhile("b")
	check("after the move to b")
	inA := count(pa)
	for range 100 {
		write()
	}
	check("after writes in b")
	if whole && count(pa) != inA {
		t.Errorf("writes after the move to b added %d objects to a", count(pa)-inA)
	}
	// The writer moves to the other daemon, then the volume moves back.
	e = n2.open(t, "v")
	for range 50 {
		write()
	}
	moveWhile("a")
	check("after the move to a")
	inB := count(pb)
	for range 100 {
		write()
	}
	check("after writes in a")
	if whole && count(pb) != inB {
		t.Errorf("writes after the move to a added %d objects to b", count(pb)-inB)
	}
	if role(n2, "v") != "writer" {
		t.Errorf("n2 is %s", role(n2, "v"))
	}
}

// TestMoveBusyWriterAsksOnce: a move's reopen under a writer that writes
// back to back takes the lease after one handoff request. The daemon
// that handed the lease over used to take it back at its next write,
// before the mover's request had its answer, and the mover asked again,
// with pauses growing to a tenth of the TTL (a move back once took 65 s).
func TestMoveBusyWriterAsksOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	meta, pa, pb := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	router := func() objstore.Store {
		s, err := pools.New(meta, []pools.Named{{Name: "a", Store: pa}, {Name: "b", Store: pb}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	n1 := newNode(t, router(), "n1", time.Hour)
	mover := manage.New(router())
	const maxAsks = 8
	var asks atomic.Int64
	ask := lease.HTTPAskToken(time.Second, adminToken)
	leases, err := lease.NewManager(mover.Store, lease.Config{Node: "mover", TTL: time.Hour, MaxDrift: time.Minute,
		Ask: func(ctx context.Context, rec lease.Record, volume string) error {
			if asks.Add(1) > maxAsks {
				cancel() // the old behaviour: give up rather than wait minutes
			}
			return ask(ctx, rec, volume)
		}})
	if err != nil {
		t.Fatal(err)
	}
	mover.Leases = leases
	const size = 1 << 20
	if _, err := n1.d.mgr.CreateVolume(ctx, "v", size, 16); err != nil {
		t.Fatal(err)
	}
	e := n1.open(t, "v")
	stop := make(chan struct{})
	done := make(chan struct{})
	var writes atomic.Int64
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			buf[0] = byte(i)
			if err := e.WriteAt(context.Background(), buf, int64(i%(size/4096))*4096, false); err != nil {
				t.Errorf("write %d: %v", i, err)
				return
			}
			writes.Add(1)
		}
	}()
	for writes.Load() < 50 {
		time.Sleep(time.Millisecond)
	}
	for _, to := range []string{"b", "a"} {
		before := asks.Load()
		_, err := move.Move(ctx, mover, "v", to, move.Options{})
		if err != nil {
			close(stop)
			<-done
			t.Fatalf("move to %s: %v (after %d handoff requests)", to, err, asks.Load()-before)
		}
		if n := asks.Load() - before; n > 2 {
			t.Errorf("move to %s asked the writer for the lease %d times", to, n)
		}
	}
	close(stop)
	<-done
}
