package manage

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/objstore"
)

// lostAtSwap is a segmented store that, once armed, runs hook before the
// swap of a head naming one write log (a takeover's checkpoint, the last
// swap of its open).
type lostAtSwap struct {
	segOnly
	armed atomic.Bool
	hook  func()
}

func (s *lostAtSwap) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	if blockmap.ParseName(name).Kind == blockmap.HeadObject && s.armed.Load() {
		if h, err := blockmap.DecodeHead(data); err == nil && len(h.Logs) == 1 {
			s.armed.Store(false)
			s.hook()
		}
	}
	return s.segOnly.Swap(ctx, name, data, old)
}

// TestReviewOpenLeaseLostDuringOpen: the lease is kept from before the
// open (a takeover's replay may outlast it); when it is lost during the
// open after the open's last check of it, the open must fail, not return
// a writer without a lease and call lost from inside OpenWriter: the
// daemon holds its handle's lock around OpenWriter and its lost callback
// takes that lock (a deadlock of the handle), and the handle's lease is
// not yet the one lost (the loss was ignored).
func TestReviewOpenLeaseLostDuringOpen(t *testing.T) {
	const ttl = 2 * time.Second
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	s := &lostAtSwap{segOnly: segOnly{objstore.NewMem()}}
	manager := func(node string, tick chan struct{}) *Manager {
		m := New(s)
		l, err := lease.NewManager(s, lease.Config{Node: node, TTL: ttl, MaxDrift: 100 * time.Millisecond, Clock: clk,
			Sleep: func(ctx context.Context, d time.Duration) error {
				if d != ttl/3 || tick == nil {
					clk.advance(d)
					return nil
				}
				select {
				case <-tick:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		m.Leases = l
		return m
	}
	m := manager("a", make(chan struct{}))
	r, err := m.CreateVolume(ctx, "vm", 4*bs, 16)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := m.OpenWriter(ctx, r.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := v.WriteAt(ctx, []byte{byte(i + 1)}, int64(i*100), false); err != nil {
			t.Fatal(err)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The writer dies; its lease expires; node b takes over, and loses
	// the lease (broken by an operator) during its open's last swap.
	clk.advance(time.Minute)
	tick := make(chan struct{})
	lostInOpen := make(chan struct{})
	defer setLeaseLostInOpen(func() { close(lostInOpen) })()
	m2 := manager("b", tick)
	breaker := manager("c", nil)
	s.hook = func() {
		if _, err := breaker.Leases.Break(ctx, r.ID.String(), true); err != nil {
			t.Error(err)
		}
		tick <- struct{}{} // b's keeper renews, and finds the lease lost
		select {
		case <-lostInOpen:
		case <-time.After(10 * time.Second):
			t.Error("the keeper did not report the loss")
		}
	}
	s.armed.Store(true)
	var mu sync.Mutex // as the daemon's handle lock, held around OpenWriter
	lostCalls := 0
	mu.Lock()
	w, _, err := m2.OpenWriter(ctx, r.ID, func(*lease.Lease, error) {
		if !mu.TryLock() {
			t.Error("lost called while the caller of OpenWriter still runs it (the daemon would deadlock)")
			return
		}
		lostCalls++
		mu.Unlock()
	})
	mu.Unlock()
	if s.armed.Load() {
		t.Fatal("the open swapped no head naming one log")
	}
	if err == nil {
		w.Discard(ctx)
		t.Fatal("the open succeeded with a lease lost during it")
	}
	if !errors.Is(err, lease.ErrLost) {
		t.Fatalf("open: %v, want lease.ErrLost", err)
	}
}

func setLeaseLostInOpen(fn func()) func() {
	old := leaseLostInOpen
	leaseLostInOpen = fn
	return func() { leaseLostInOpen = old }
}

// TestReviewInfoCountsLogInOtherForm: a log's form (segments or one
// object) follows the store's capabilities, which a store of several
// pools changes with its configuration; Info counts a log the head names
// in either form.
func TestReviewInfoCountsLogInOtherForm(t *testing.T) {
	mem := objstore.NewMem()
	s := segOnly{mem}
	m := New(s)
	if _, err := m.CreateVolume(ctx, "vm", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	v, r, err := m.Open(ctx, "vm", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, []byte("x"), 10, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var want int64
	mem.List(ctx, blockmap.VolumePrefix(r.ID)+"l/", func(in objstore.Info) error {
		want += in.Size
		return nil
	})
	if want == 0 {
		t.Fatal("no log segment was written")
	}
	in, err := New(mem).Info(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	if in.LogBytes != want {
		t.Fatalf("info through a store with in-place writes: log %d bytes, want %d (its segments)", in.LogBytes, want)
	}
	v.Discard(ctx)
}
