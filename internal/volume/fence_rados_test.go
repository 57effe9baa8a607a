//go:build ceph

package volume

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/rados"
)

type testClock struct{ t atomic.Pointer[time.Time] }

func newTestClock() *testClock {
	c := &testClock{}
	t := time.Unix(1000, 0)
	c.t.Store(&t)
	return c
}
func (c *testClock) Now() time.Time { return *c.t.Load() }
func (c *testClock) Advance(d time.Duration) {
	t := c.Now().Add(d)
	c.t.Store(&t)
}

// leasedWriter takes the lease of id on s (a host of its own, with its
// clock) and opens the volume as the daemon does.
func leasedWriter(t *testing.T, s *rados.Store, id string, node string, clk lease.Clock) (*Volume, *lease.Lease) {
	t.Helper()
	ctx := context.Background()
	m, err := lease.NewManager(s, lease.Config{Node: node, TTL: 5 * time.Second, MaxDrift: 500 * time.Millisecond, Clock: clk,
		Sleep: func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	l, err := m.Acquire(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Fenced() {
		t.Fatalf("lease on RADOS not fenced: %+v", l.Record())
	}
	vid, err := blockmap.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, s, vid, OpenOptions{Writable: true, Guard: l.Valid, NewEpoch: l.TookOver(), Fenced: l.Fenced()})
	if err != nil {
		t.Fatal(err)
	}
	return v, l
}

// TestRadosTakeoverFences: holder a writes in place with flushes that read
// no head, stalls past its lease (its clock stopped, as in a paused VM),
// b takes over and fences a; a's later writes fail with ErrFenced and
// change nothing b reads. A clean handover fences nobody.
func TestRadosTakeoverFences(t *testing.T) {
	for _, fua := range []bool{false, true} {
		t.Run(fmt.Sprintf("fua=%v", fua), func(t *testing.T) {
			ctx := context.Background()
			ss := rados.OpenTestStores(t, 2)
			var stats atomic.Int64
			ss[0].SetStatHook(func() { stats.Add(1) })
			vid, err := Create(ctx, ss[0], CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
			if err != nil {
				t.Fatal(err)
			}
			clkA, clkB := newTestClock(), newTestClock()
			a, _ := leasedWriter(t, ss[0], vid.String(), "a", clkA)
			if err := a.WriteAt(ctx, []byte("first"), 0, true); err != nil {
				t.Fatal(err)
			}
			stats.Store(0)
			if err := a.WriteAt(ctx, []byte("again"), 0, fua); err != nil {
				t.Fatal(err)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if n := stats.Load(); n != 0 {
				t.Fatalf("an in-place write and flush made %d Stats, want none", n)
			}
			// a stalls: its clock stops; b's runs past a's lease.
			clkB.Advance(6 * time.Second)
			b, lb := leasedWriter(t, ss[1], vid.String(), "b", clkB)
			if !lb.TookOver() {
				t.Fatal("b did not take the lease over")
			}
			got := make([]byte, 5)
			if err := b.ReadAt(ctx, got, 0); err != nil || string(got) != "again" {
				t.Fatalf("b reads %q, %v", got, err)
			}
			err = a.WriteAt(ctx, []byte("late!"), 0, fua)
			if err == nil && !fua {
				err = a.Flush(ctx)
			}
			if !errors.Is(err, ErrFenced) {
				t.Fatalf("a's write after b took over: %v, want ErrFenced", err)
			}
			if err := a.Flush(ctx); !errors.Is(err, ErrFenced) {
				t.Fatalf("a's flush after b took over: %v, want ErrFenced", err)
			}
			if err := b.ReadAt(ctx, got, 0); err != nil || string(got) != "again" {
				t.Fatalf("b reads %q after a's late write, %v", got, err)
			}
			if err := b.WriteAt(ctx, []byte("b"), 0, true); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("clean handover", func(t *testing.T) {
		ctx := context.Background()
		ss := rados.OpenTestStores(t, 2)
		vid, err := Create(ctx, ss[0], CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
		if err != nil {
			t.Fatal(err)
		}
		clk := newTestClock()
		a, la := leasedWriter(t, ss[0], vid.String(), "a", clk)
		if err := a.WriteAt(ctx, []byte("first"), 0, true); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := la.Release(ctx); err != nil {
			t.Fatal(err)
		}
		b, lb := leasedWriter(t, ss[1], vid.String(), "b", clk)
		if lb.TookOver() {
			t.Fatal("a clean handover took over")
		}
		if err := b.WriteAt(ctx, []byte("b"), 0, true); err != nil {
			t.Fatal(err)
		}
		if _, err := ss[0].Put(ctx, "still-writes", []byte("x")); err != nil {
			t.Fatalf("a's client after a clean handover: %v (ErrFenced: %v)", err, errors.Is(err, objstore.ErrFenced))
		}
	})
}

// BenchmarkInPlaceFlushRados: a 4 KiB write in place and a flush, by a
// writer whose lease fences it at a takeover (no head read) and by one
// whose lease does not (one Stat of the head per flush).
func BenchmarkInPlaceFlushRados(b *testing.B) {
	for _, fenced := range []bool{false, true} {
		b.Run(fmt.Sprintf("fenced=%v", fenced), func(b *testing.B) {
			ctx := context.Background()
			s := rados.OpenTestStore(b)
			id, err := Create(ctx, s, CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
			if err != nil {
				b.Fatal(err)
			}
			v, err := Open(ctx, s, id, OpenOptions{Writable: true, Fenced: fenced})
			if err != nil {
				b.Fatal(err)
			}
			p := make([]byte, 4096)
			if err := v.WriteAt(ctx, p, 0, true); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := v.WriteAt(ctx, p, 0, false); err != nil {
					b.Fatal(err)
				}
				if err := v.Flush(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRandomFUARados: 4 KiB FUA writes at random offsets of a fully
// written 256 MiB volume, at QD1, opened as the daemon opens it (fenced,
// with the write log): the engine's part of bench/rados.sh's FUA row,
// without NBD, beside the store alone (BenchmarkRandomIO/write/qd1).
func BenchmarkRandomFUARados(b *testing.B) {
	ctx := context.Background()
	s := rados.OpenTestStore(b)
	const size = 256 << 20
	id, err := Create(ctx, s, CreateOptions{Size: size})
	if err != nil {
		b.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true, Fenced: true, Log: true})
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close(ctx)
	fill := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(fill)) {
		if err := v.WriteAt(ctx, fill, off, false); err != nil {
			b.Fatal(err)
		}
	}
	if err := v.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 4096)
	for b.Loop() {
		if err := v.WriteAt(ctx, p, int64(rand.IntN(size/len(p))*len(p)), true); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
}
