//go:build ceph

package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/objstore/rados"
)

// A writer stalled with in-place writes queued behind one in flight on
// RADOS (the store merges them into one operation once that one ends)
// is taken over and fenced; when it resumes, the held operation and the
// merged one are refused: the writes return (they were sent) or fail,
// a's flush fails with ErrFenced, and the taker reads what it read at
// takeover.
func TestRadosTakeoverFencesMergedWrites(t *testing.T) {
	ctx := context.Background()
	ss := rados.OpenTestStores(t, 2)
	vid, err := Create(ctx, ss[0], CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	clkA, clkB := newTestClock(), newTestClock()
	a, _ := leasedWriter(t, ss[0], vid.String(), "a", clkA)
	want := make([]byte, bs)
	copy(want, "first")
	if err := a.WriteAt(ctx, want, 0, true); err != nil {
		t.Fatal(err)
	}
	// a's next write operation holds (a stalls), and its other writes to
	// the block queue behind it.
	release := ss[0].HoldWrites()
	defer release()
	const n = 4
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- a.WriteAt(ctx, []byte("late!"), int64(i*512), false) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for ss[0].Queued() != n-1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued behind the held one, want %d", ss[0].Queued(), n-1)
		}
		time.Sleep(time.Millisecond)
	}
	clkB.Advance(6 * time.Second)
	b, lb := leasedWriter(t, ss[1], vid.String(), "b", clkB)
	if !lb.TookOver() {
		t.Fatal("b did not take the lease over")
	}
	release()
	for range n {
		select {
		case err := <-errs:
			if err != nil && !errors.Is(err, ErrFenced) {
				t.Fatalf("a's held or merged write after b took over: %v, want nil or ErrFenced", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("a's write hung after b took over")
		}
	}
	if err := a.Flush(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("a's flush after its late writes: %v, want ErrFenced", err)
	}
	got := make([]byte, bs)
	if err := b.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("b reads %q after a's late writes, want %q", got[:16], want[:16])
	}
}

// Many writers at once on the same blocks of a fresh clone on RADOS
// (copy-on-write first, then in place; with and without the write log),
// each rewriting its own 512-byte pieces in sequence, some with FUA: the
// store merges the writes that queue on one object, and after a flush
// the volume, and a reopen of it, reads each piece's last write.
func TestRadosConcurrentWritesOneBlock(t *testing.T) {
	for _, logged := range []bool{false, true} {
		t.Run(fmt.Sprintf("log=%v", logged), func(t *testing.T) {
			ctx := context.Background()
			s := rados.OpenTestStore(t)
			vid, err := Create(ctx, s, CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
			if err != nil {
				t.Fatal(err)
			}
			base, err := Open(ctx, s, vid, OpenOptions{Writable: true})
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewSource(3))
			want := make([]byte, 4*bs)
			rng.Read(want)
			if err := base.WriteAt(ctx, want, 0, true); err != nil {
				t.Fatal(err)
			}
			snap, err := base.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := base.Close(ctx); err != nil {
				t.Fatal(err)
			}
			cid, err := Clone(ctx, s, snap, 0)
			if err != nil {
				t.Fatal(err)
			}
			m, err := lease.NewManager(s, lease.Config{Node: "a", TTL: time.Minute, MaxDrift: time.Second,
				Sleep: func(context.Context, time.Duration) error { return nil }})
			if err != nil {
				t.Fatal(err)
			}
			l, err := m.Acquire(ctx, cid.String())
			if err != nil {
				t.Fatal(err)
			}
			v, err := Open(ctx, s, cid, OpenOptions{Writable: true, Guard: l.Valid, NewEpoch: l.TookOver(), Fenced: l.Fenced(), Log: logged})
			if err != nil {
				t.Fatal(err)
			}
			const writers, piece = 16, 512
			pieces := 2 * bs / piece // blocks 0 and 1
			var wg sync.WaitGroup
			var mu sync.Mutex
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewSource(int64(w)))
					for r := range 3 {
						for _, c := range rng.Perm(pieces / writers) {
							off := int64((c*writers + w) * piece)
							p := make([]byte, piece)
							rng.Read(p)
							if err := v.WriteAt(ctx, p, off, rng.Intn(8) == 0); err != nil {
								t.Errorf("writer %d round %d: %v", w, r, err)
								return
							}
							mu.Lock()
							copy(want[off:], p)
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			t.Logf("%d writes merged into operations with others", s.Merged())
			if s.Merged() == 0 {
				t.Fatal("no write was merged: the test does not exercise merging")
			}
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4*bs)
			if err := v.ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("the clone does not read each piece's last write")
			}
			if err := v.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
			r, err := Open(ctx, s, cid, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			clear(got)
			if err := r.ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("the reopened clone does not read each piece's last write")
			}
			r.Close(ctx)
		})
	}
}
