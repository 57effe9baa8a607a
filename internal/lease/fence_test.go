package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// fences is the fence list of a fake store shared by fenceConns.
type fences struct {
	mu     sync.Mutex
	fenced map[string]bool
	calls  []string // Fence calls, in order
}

// fenceConn is one client of a store that can fence (objstore.Fencer):
// once fenced, every write of it fails with objstore.ErrFenced.
type fenceConn struct {
	objstore.Store
	id     string
	f      *fences
	cannot error // FenceID's error: this client lacks the right to fence
}

func (c *fenceConn) FenceID(context.Context) (string, error) {
	if c.cannot != nil {
		return "", c.cannot
	}
	return c.id, nil
}

func (c *fenceConn) Fence(_ context.Context, id string) error {
	if c.cannot != nil {
		return c.cannot
	}
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	c.f.fenced[id] = true
	c.f.calls = append(c.f.calls, id)
	return nil
}

func (c *fenceConn) check() error {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if c.f.fenced[c.id] {
		return fmt.Errorf("%w (%s)", objstore.ErrFenced, c.id)
	}
	return nil
}

func (c *fenceConn) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Store.Swap(ctx, name, data, old)
}

func (c *fenceConn) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Store.Put(ctx, name, data)
}

func fenceConns(n int) ([]*fenceConn, *fences) {
	s := objstore.NewMem()
	f := &fences{fenced: map[string]bool{}}
	var cs []*fenceConn
	for i := range n {
		cs = append(cs, &fenceConn{Store: s, id: fmt.Sprintf("client-%d", i), f: f})
	}
	return cs, f
}

// TestTakeoverFences: the record names its holder's fence identity, and a
// taker of a lease its holder did not release (expired, or broken) fences
// that identity before Acquire returns; a clean handover fences nobody.
func TestTakeoverFences(t *testing.T) {
	cs, f := fenceConns(3)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, b, c := newNode(t, cs[0], "a", clk), newNode(t, cs[1], "b", clk), newNode(t, cs[2], "c", clk)

	la, err := a.Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if r := la.Record(); r.Fence != "client-0" || !la.Fenced() {
		t.Fatalf("holder's record %+v (Fenced %v): want its fence identity", r, la.Fenced())
	}
	// A clean handover: no fence.
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 0 || lb.TookOver() {
		t.Fatalf("clean handover fenced %v (took over %v)", f.calls, lb.TookOver())
	}
	// b stalls past its lease; c takes over and fences b first.
	clk.Advance(ttl + drift + time.Millisecond)
	lc, err := c.Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if !lc.TookOver() || len(f.calls) != 1 || f.calls[0] != "client-1" {
		t.Fatalf("takeover fenced %v (took over %v), want client-1", f.calls, lc.TookOver())
	}
	if _, err := cs[1].Put(ctx, "x", nil); !errors.Is(err, objstore.ErrFenced) {
		t.Fatalf("fenced holder's write: %v", err)
	}
	if err := lb.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("fenced holder's renewal: %v, want ErrLost", err)
	}
	if _, err := b.Acquire(ctx, "other"); !errors.Is(err, objstore.ErrFenced) {
		t.Fatalf("fenced node's acquire: %v, want ErrFenced", err)
	}
	// An operator breaks c's lease: whoever takes it next fences c.
	if _, err := a.Break(ctx, "vol", true); err != nil {
		t.Fatal(err)
	}
	if r, _, _ := a.Read(ctx, "vol"); !r.Broken || r.Fence != "client-2" {
		t.Fatalf("broken record %+v: want c's fence identity kept", r)
	}
	if _, err := a.Acquire(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 2 || f.calls[1] != "client-2" {
		t.Fatalf("taking a broken lease fenced %v, want client-2 second", f.calls)
	}
}

// TestTakeoverCannotFence: a node that cannot fence refuses to take over
// a lease whose holder relies on being fenced (its flushes do not check
// the map), and writes nothing; a holder that cannot fence names no
// identity, so anyone may take it over.
func TestTakeoverCannotFence(t *testing.T) {
	cs, f := fenceConns(2)
	cs[1].cannot = fmt.Errorf("%w: no caps", objstore.ErrUnsupport)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, b := newNode(t, cs[0], "a", clk), newNode(t, cs[1], "b", clk)
	if _, err := a.Acquire(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(ttl + drift + time.Millisecond)
	_, err := b.Acquire(ctx, "vol")
	if !errors.Is(err, ErrCannotFence) {
		t.Fatalf("takeover without the right to fence: %v, want ErrCannotFence", err)
	}
	if r, _, _ := b.Read(ctx, "vol"); r.Owner != "a" {
		t.Fatalf("record after the refused takeover: %+v", r)
	}
	// b's own lease names nobody to fence: a takes it over without.
	lb, err := b.Acquire(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	if lb.Record().Fence != "" || lb.Fenced() {
		t.Fatalf("record of a node that cannot fence: %+v", lb.Record())
	}
	clk.Advance(ttl + drift + time.Millisecond)
	if _, err := a.Acquire(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 0 {
		t.Fatalf("fenced %v", f.calls)
	}
}

// TestFenceIDPassingFailure: a store that could not tell this node's
// fence identity for a passing reason (its FenceID error does not wrap
// objstore.ErrUnsupport: the monitors did not answer) is asked again at
// a lease a TTL later: once it answers, this node's records name it and
// it takes over leases of holders that rely on being fenced. (It was
// asked once: the node stayed unable to fence until restarted.)
func TestFenceIDPassingFailure(t *testing.T) {
	cs, f := fenceConns(2)
	cs[0].cannot = errors.New("rados: mon command timed out")
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, b := newNode(t, cs[0], "a", clk), newNode(t, cs[1], "b", clk)
	if _, err := b.Acquire(ctx, "held"); err != nil {
		t.Fatal(err)
	}
	l1, err := a.Acquire(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if l1.Fenced() {
		t.Fatalf("record without a fence identity: %+v", l1.Record())
	}
	cs[0].cannot = nil
	// Not asked again before a TTL has passed.
	l2, err := a.Acquire(ctx, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if l2.Fenced() {
		t.Fatalf("record right after the failure: %+v, want no fence identity", l2.Record())
	}
	clk.Advance(ttl + drift + time.Millisecond)
	l3, err := a.Acquire(ctx, "v3")
	if err != nil {
		t.Fatal(err)
	}
	if r := l3.Record(); r.Fence != "client-0" || !l3.Fenced() {
		t.Fatalf("record once the store answers: %+v, want fence identity client-0", r)
	}
	if _, err := a.Acquire(ctx, "held"); err != nil {
		t.Fatalf("takeover once the store answers: %v", err)
	}
	if len(f.calls) != 1 || f.calls[0] != "client-1" {
		t.Fatalf("fenced %v, want client-1", f.calls)
	}
}

// TestAcquireReleasedTakesNothingOver: AcquireReleased (a reader that
// would like the lease) neither takes over nor fences a holder whose
// lease expired (it may only have been slow to renew) or was broken; it
// takes a released lease.
func TestAcquireReleasedTakesNothingOver(t *testing.T) {
	cs, f := fenceConns(2)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a, b := newNode(t, cs[0], "a", clk), newNode(t, cs[1], "b", clk)
	la, err := a.Acquire(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(ttl + drift + time.Millisecond)
	if _, err := b.AcquireReleased(ctx, "vol"); !errors.Is(err, ErrHeld) {
		t.Fatalf("expired lease: %v, want ErrHeld", err)
	}
	if _, err := a.Break(ctx, "vol", true); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AcquireReleased(ctx, "vol"); !errors.Is(err, ErrHeld) {
		t.Fatalf("broken lease: %v, want ErrHeld", err)
	}
	if len(f.calls) != 0 {
		t.Fatalf("fenced %v", f.calls)
	}
	if err := la.Release(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("release of the broken lease: %v", err)
	}
	lo, err := a.Acquire(ctx, "other2")
	if err != nil {
		t.Fatal(err)
	}
	if err := lo.Release(ctx); err != nil {
		t.Fatal(err)
	}
	lb, err := b.AcquireReleased(ctx, "other2")
	if err != nil || lb.TookOver() {
		t.Fatalf("released lease: %v (took over %v)", err, lb != nil && lb.TookOver())
	}
}
