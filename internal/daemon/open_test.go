package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// hookStore counts the writes that reach a store and lets a test stop
// or fail any call (hook runs before it; its error is the call's).
type hookStore struct {
	objstore.Store
	writes atomic.Int64
	mu     sync.Mutex
	hook   func(op objstore.Op, name string) error
}

func (s *hookStore) setHook(fn func(op objstore.Op, name string) error) {
	s.mu.Lock()
	s.hook = fn
	s.mu.Unlock()
}

func (s *hookStore) call(op objstore.Op, name string, write bool) error {
	if write {
		s.writes.Add(1)
	}
	s.mu.Lock()
	fn := s.hook
	s.mu.Unlock()
	if fn != nil {
		return fn(op, name)
	}
	return nil
}

func (s *hookStore) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := s.call(objstore.OpReadAt, name, false); err != nil {
		return err
	}
	return s.Store.ReadAt(ctx, name, p, off)
}

func (s *hookStore) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if err := s.call(objstore.OpGet, name, false); err != nil {
		return nil, 0, err
	}
	return s.Store.Get(ctx, name)
}

func (s *hookStore) Stat(ctx context.Context, name string) (objstore.Info, error) {
	if err := s.call(objstore.OpStat, name, false); err != nil {
		return objstore.Info{}, err
	}
	return s.Store.Stat(ctx, name)
}

func (s *hookStore) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if err := s.call(objstore.OpPut, name, true); err != nil {
		return 0, err
	}
	return s.Store.Put(ctx, name, data)
}

func (s *hookStore) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if err := s.call(objstore.OpCreate, name, true); err != nil {
		return 0, err
	}
	return s.Store.Create(ctx, name, data)
}

func (s *hookStore) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	if err := s.call(objstore.OpSwap, name, true); err != nil {
		return 0, err
	}
	return s.Store.Swap(ctx, name, data, old)
}

func (s *hookStore) Delete(ctx context.Context, name string) error {
	if err := s.call(objstore.OpDelete, name, true); err != nil {
		return err
	}
	return s.Store.Delete(ctx, name)
}

func (s *hookStore) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	if err := s.call(objstore.OpDelete, name, true); err != nil {
		return err
	}
	return s.Store.DeleteVersion(ctx, name, old)
}

// newHookDaemon returns a daemon on a hooked mem store with volumes of
// 1 MiB called by names.
func newHookDaemon(t *testing.T, names ...string) (*Daemon, *hookStore, map[string]blockmap.ID) {
	t.Helper()
	ctx := context.Background()
	s := &hookStore{Store: objstore.NewMem()}
	m := manage.New(s)
	ids := map[string]blockmap.ID{}
	for _, n := range names {
		r, err := m.CreateVolume(ctx, n, 1<<20, 16)
		if err != nil {
			t.Fatal(err)
		}
		ids[n] = r.ID
	}
	d := New(m, t.Logf)
	t.Cleanup(func() { d.Close(context.Background()) })
	return d, s, ids
}

// holdFirst makes the first op on name wait: hit is closed when it
// arrives, and it goes on (failing with err, if not nil) once release is
// closed.
func holdFirst(s *hookStore, op objstore.Op, name string, err error) (hit, release chan struct{}) {
	hit, release = make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	s.setHook(func(o objstore.Op, n string) error {
		if o == op && n == name && first.CompareAndSwap(false, true) {
			close(hit)
			<-release
			return err
		}
		return nil
	})
	return hit, release
}

// failWhile makes every op on name fail while the returned flag is set
// (it starts set).
func failWhile(s *hookStore, op objstore.Op, name string) *atomic.Bool {
	var fail atomic.Bool
	fail.Store(true)
	s.setHook(func(o objstore.Op, n string) error {
		if o == op && n == name && fail.Load() {
			return errors.New("store unavailable")
		}
		return nil
	})
	return &fail
}

// within fails the test if done is not closed in a long time: it
// catches a deadlock, not a slow machine.
func within(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s: still blocked after a minute", what)
	}
}

// TestReconnectDuringClose: a client writes without flushing and
// disconnects; another connects while the daemon is still doing the
// final flush for the first. The new open waits for that flush, and
// reads the writes back (issue 10 #6: the new open fenced the closing
// handle, whose writes were lost).
func TestReconnectDuringClose(t *testing.T) {
	ctx := context.Background()
	d, s, ids := newHookDaemon(t, "v")
	e1, release1, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("acknowledged, not flushed "), 1000)
	if err := e1.WriteAt(ctx, data, 12345, false); err != nil {
		t.Fatal(err)
	}
	// Hold the final flush at its head write.
	inFlush, unblock := holdFirst(s, objstore.OpSwap, blockmap.HeadName(ids["v"]), nil)
	released := make(chan struct{})
	go func() { release1(); close(released) }()
	within(t, inFlush, "the final flush")

	waiting := make(chan struct{}, 1)
	d.onWait = func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	}
	type opened struct {
		e interface {
			ReadAt(context.Context, []byte, int64) error
		}
		release func()
		err     error
	}
	second := make(chan opened, 1)
	go func() {
		e, rel, err := d.Open(ctx, "v")
		second <- opened{e, rel, err}
	}()
	var o opened
	select {
	case <-waiting: // the open waits for the closing handle
		close(unblock)
		o = <-second
	case o = <-second: // it went ahead: the race is lost for certain
		close(unblock)
	}
	within(t, released, "the first release")
	if o.err != nil {
		t.Fatalf("reconnecting: %v", o.err)
	}
	defer o.release()
	got := make([]byte, len(data))
	if err := o.e.ReadAt(ctx, got, 12345); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("the reconnected client reads %q..., want %q...", got[:26], data[:26])
	}
}

// TestReconnectConcurrent: clients connect, write without flushing and
// disconnect, many at once and in quick succession; every write is there
// at the end.
func TestReconnectConcurrent(t *testing.T) {
	ctx := context.Background()
	d, _, _ := newHookDaemon(t, "v")
	var wg sync.WaitGroup
	for k := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				e, release, err := d.Open(ctx, "v")
				if err != nil {
					t.Error(err)
					return
				}
				err = e.WriteAt(ctx, []byte(fmt.Sprintf("%d-%02d", k, i)), int64(k*25+i)*4096, false)
				release()
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	e, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for k := range 4 {
		for i := range 25 {
			want := fmt.Sprintf("%d-%02d", k, i)
			got := make([]byte, len(want))
			if err := e.ReadAt(ctx, got, int64(k*25+i)*4096); err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Errorf("write %s reads %q", want, got)
			}
		}
	}
}

// TestProbeWritesNothing: a client that connects, reads a little, asks
// for block status and disconnects writes nothing to the store (issue
// 10 #16: each such probe took the lease, rewrote the head and reserved
// 2^32 sequence numbers).
func TestProbeWritesNothing(t *testing.T) {
	ctx := context.Background()
	d, s, _ := newHookDaemon(t, "v")
	manage.WriteT(t, d.mgr, "v", 0, []byte("boot sector"))
	if _, err := d.mgr.Snapshot(ctx, "v", "snap"); err != nil {
		t.Fatal(err)
	}
	before := s.writes.Load()
	for _, name := range []string{"v", "snap", "v", "nothing", "bad/name"} {
		e, release, err := d.Open(ctx, name)
		if err != nil {
			continue
		}
		e.Size()
		p := make([]byte, 512)
		for off := range int64(3) {
			if err := e.ReadAt(ctx, p, off*512); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.BlockStatus(ctx, 0, 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		release()
	}
	if _, err := d.List(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.writes.Load() - before; n != 0 {
		t.Fatalf("probes wrote %d times to the store", n)
	}
	// The first write takes the lease.
	e, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := e.WriteAt(ctx, []byte("x"), 0, true); err != nil {
		t.Fatal(err)
	}
	if st := d.Status(); len(st) != 1 || st[0].Role != "writer" {
		t.Fatalf("after a write: %+v", st)
	}
}

// TestOpenDoesNotBlockOthers: while one volume's open is stuck in the
// store, other volumes open, handoffs are answered and the status is
// listed; a second client of the stuck volume waits for the first open.
func TestOpenDoesNotBlockOthers(t *testing.T) {
	ctx := context.Background()
	d, s, ids := newHookDaemon(t, "slow", "fast")
	e, release, err := d.Open(ctx, "fast")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := e.WriteAt(ctx, []byte("x"), 0, false); err != nil { // holds the lease
		t.Fatal(err)
	}
	stuck, unblock := holdFirst(s, objstore.OpGet, blockmap.HeadName(ids["slow"]), nil)
	slowDone := make(chan error, 2)
	go func() {
		_, rel, err := d.Open(ctx, "slow")
		if err == nil {
			rel() // before the test may end: the close logs through t
		}
		slowDone <- err
	}()
	within(t, stuck, "the slow open")

	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, rel, err := d.Open(ctx, "fast"); err != nil {
			t.Error(err)
		} else {
			rel()
		}
		if released, err := d.Handoff(ctx, ids["fast"]); err != nil || !released {
			t.Errorf("handoff: %v, %v", released, err)
		}
		if released, err := d.Handoff(ctx, ids["slow"]); err != nil || released {
			t.Errorf("handoff of the volume being opened: %v, %v", released, err)
		}
		d.Status()
	}()
	within(t, done, "open, handoff and status while another volume opens")

	// A second client of the slow volume waits for the same open.
	waiting := make(chan struct{}, 1)
	d.onWait = func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	}
	go func() {
		_, rel, err := d.Open(ctx, "slow")
		if err == nil {
			rel() // before the test may end: the close logs through t
		}
		slowDone <- err
	}()
	within(t, waiting, "the second open of the slow volume")
	close(unblock)
	for range 2 {
		if err := <-slowDone; err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenFailuresLeaveNothing: opening names that do not exist, or a
// volume whose open fails, leaves no handle behind: client input does
// not grow the daemon's table.
func TestOpenFailuresLeaveNothing(t *testing.T) {
	ctx := context.Background()
	d, s, ids := newHookDaemon(t, "broken")
	for i := range 2000 {
		if _, _, err := d.Open(ctx, fmt.Sprintf("nothing-%d", i)); err == nil {
			t.Fatal("opened a name that does not exist")
		}
	}
	if err := s.Store.Delete(ctx, blockmap.HeadName(ids["broken"])); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, _, err := d.Open(ctx, "broken"); err == nil {
			t.Fatal("opened a volume whose head is gone")
		}
	}
	d.mu.Lock()
	n := len(d.open)
	d.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d handles left after failed opens", n)
	}
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// TestStalledWriterReads: a writer that stalled past its lease (a paused
// VM host, here a clock moved forward) does not serve reads from its
// stale map once another node took the volume over and wrote it: it
// learns that the lease is gone before reading.
func TestStalledWriterReads(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	const ttl = time.Hour
	mk := func(name string) (*Daemon, *httptest.Server) {
		var d *Daemon
		admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d.AdminHandler().ServeHTTP(w, r)
		}))
		t.Cleanup(admin.Close)
		m := manage.New(s)
		l, err := lease.NewManager(s, lease.Config{Node: name, Addr: admin.Listener.Addr().String(),
			TTL: ttl, MaxDrift: ttl / 10, Clock: clock, Ask: lease.HTTPAsk(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		m.Leases = l
		d = New(m, t.Logf)
		t.Cleanup(func() { d.Close(context.Background()) })
		return d, admin
	}
	a, adminA := mk("a")
	b, _ := mk("b")
	if _, err := a.mgr.CreateVolume(ctx, "v", 1<<20, 16); err != nil {
		t.Fatal(err)
	}
	ea, relA, err := a.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer relA()
	if err := ea.WriteAt(ctx, []byte("old"), 0, true); err != nil {
		t.Fatal(err)
	}
	// a stalls: it answers no handoff, and its lease runs out.
	adminA.Listener.Close()
	clock.add(ttl + ttl/10 + time.Second)
	eb, relB, err := b.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer relB()
	if err := eb.WriteAt(ctx, []byte("new"), 0, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3)
	if err := ea.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if string(got) != "new" {
		t.Fatalf("the stalled writer reads %q after the takeover, want %q", got, "new")
	}
	if st := a.Status(); len(st) != 1 || st[0].Role != "follower" {
		t.Fatalf("the stalled writer's status: %+v", st)
	}
	if errors.Is(err, ErrLeaseLost) {
		t.Fatal(err)
	}
}

// TestWriteAfterClose: a client still connected when the daemon closes
// (a shutdown whose grace ran out) gets errors; its write does not take
// the lease again on a handle nobody will close.
func TestWriteAfterClose(t *testing.T) {
	ctx := context.Background()
	d, _, ids := newHookDaemon(t, "v")
	e, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := e.WriteAt(ctx, []byte("x"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.WriteAt(ctx, []byte("y"), 0, false); !errors.Is(err, volume.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if rec, _, err := d.mgr.Leases.Read(ctx, ids["v"].String()); err != nil || rec.Owner != "" {
		t.Fatalf("lease after close: %+v, %v", rec, err)
	}
	if _, _, err := d.Open(ctx, "v"); !errors.Is(err, ErrClosed) {
		t.Fatalf("open after close: %v", err)
	}
}

// TestSustainedReadsPromote: a follower that keeps reading takes the
// lease if nobody holds it, so that its reads stop checking the head;
// it never asks a holder for it.
func TestSustainedReadsPromote(t *testing.T) {
	ctx := context.Background()
	d, s, _ := newHookDaemon(t, "v")
	d.promoteAfter = 10
	e, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	before := s.writes.Load()
	p := make([]byte, 512)
	for range 9 {
		if err := e.ReadAt(ctx, p, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.writes.Load() - before; n != 0 || role(&node{d: d}, "v") != "follower" {
		t.Fatalf("after 9 reads: %s, %d writes", role(&node{d: d}, "v"), n)
	}
	if err := e.ReadAt(ctx, p, 0); err != nil {
		t.Fatal(err)
	}
	if r := role(&node{d: d}, "v"); r != "writer" {
		t.Fatalf("after 10 reads: %s", r)
	}

	// Held elsewhere: reads do not ask for it.
	st := objstore.NewMem()
	a, b := newNode(t, st, "a", time.Hour), newNode(t, st, "b", time.Hour)
	a.d.promoteAfter = 10
	a.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	ea, eb := a.open(t, "v"), b.open(t, "v")
	if err := eb.WriteAt(ctx, []byte("b's"), 0, true); err != nil {
		t.Fatal(err)
	}
	for range 25 {
		if got := readBack(t, ea, 0, 3); string(got) != "b's" {
			t.Fatalf("a reads %q", got)
		}
	}
	if role(a, "v") != "follower" || role(b, "v") != "writer" {
		t.Fatalf("after a's reads: a is %s, b is %s", role(a, "v"), role(b, "v"))
	}
}

// TestCloseDuringOpen: Close gives up on an open stuck in the store when
// its context ends, and that open, when it finishes, is refused and
// leaves nothing open.
func TestCloseDuringOpen(t *testing.T) {
	ctx := context.Background()
	d, s, ids := newHookDaemon(t, "v")
	stuck, unblock := holdFirst(s, objstore.OpGet, blockmap.HeadName(ids["v"]), nil)
	opened := make(chan error, 1)
	go func() {
		_, _, err := d.Open(ctx, "v")
		opened <- err
	}()
	within(t, stuck, "the open")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := d.Close(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("close with an open stuck: %v", err)
	}
	close(unblock)
	if err := <-opened; !errors.Is(err, ErrClosed) {
		t.Fatalf("the open that finished after close: %v", err)
	}
	d.mu.Lock()
	n := len(d.open)
	d.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d handles left", n)
	}
}

// TestFinalFlushFails: when the flush after the last client left fails
// (the store is briefly unavailable), the daemon keeps the writes and
// the lease: the next client takes the handle over and reads them, and
// they reach the store once a flush succeeds.
func TestFinalFlushFails(t *testing.T) {
	ctx := context.Background()
	d, s, ids := newHookDaemon(t, "v")
	e, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.WriteAt(ctx, []byte("unflushed"), 4096, false); err != nil {
		t.Fatal(err)
	}
	fail := failWhile(s, objstore.OpSwap, blockmap.HeadName(ids["v"]))
	release()
	if st := d.Status(); len(st) != 1 || st[0].Role != "writer" || st[0].Clients != 0 {
		t.Fatalf("after a failed final flush: %+v", st)
	}
	fail.Store(false)
	e, release, err = d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, e, 4096, 9); string(got) != "unflushed" {
		t.Fatalf("the next client reads %q", got)
	}
	release()
	if st := d.Status(); len(st) != 0 {
		t.Fatalf("after a final flush that worked: %+v", st)
	}
	v, err := volume.Open(ctx, s, ids["v"], volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	got := make([]byte, 9)
	if err := v.ReadAt(ctx, got, 4096); err != nil || string(got) != "unflushed" {
		t.Fatalf("the store has %q, %v", got, err)
	}
}

// TestIdleHandleRetires: a handle kept after a failed final flush is
// flushed and closed by the periodic flush once the store works again.
func TestIdleHandleRetires(t *testing.T) {
	ctx := context.Background()
	d, s, ids := newHookDaemon(t, "v")
	e, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.WriteAt(ctx, []byte("unflushed"), 4096, false); err != nil {
		t.Fatal(err)
	}
	fail := failWhile(s, objstore.OpSwap, blockmap.HeadName(ids["v"]))
	release()
	fail.Store(false)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.FlushLoop(lctx, time.Millisecond, t.Logf); close(done) }()
	defer func() { cancel(); <-done }()
	for i := 0; len(d.Status()) != 0; i++ {
		if i == 10000 {
			t.Fatalf("the idle handle is still open: %+v", d.Status())
		}
		time.Sleep(time.Millisecond)
	}
	rec, _, err := d.mgr.Leases.Read(ctx, ids["v"].String())
	if err != nil || rec.Owner != "" {
		t.Fatalf("lease after retiring: %+v, %v", rec, err)
	}
}

// TestSeqExhausted: a volume whose sequence numbers are all used serves
// reads, and refuses writes with an error that says why.
func TestSeqExhausted(t *testing.T) {
	ctx := context.Background()
	d, s, ids := newHookDaemon(t, "v")
	id := ids["v"]
	h, ver, err := volume.ReadHead(ctx, s, id)
	if err != nil {
		t.Fatal(err)
	}
	h.SeqReserved = math.MaxUint64
	if _, err := s.Swap(ctx, blockmap.HeadName(id), blockmap.EncodeHead(h), ver); err != nil {
		t.Fatal(err)
	}
	e, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	readBack(t, e, 0, 512)
	if err := e.WriteAt(ctx, []byte("x"), 0, false); !errors.Is(err, volume.ErrSeqExhausted) {
		t.Fatalf("write: %v", err)
	}
	readBack(t, e, 0, 512)
}

// TestOpenSeesResize: a client that opens a volume another process
// resized while this daemon kept it open (for an earlier client) is told
// the new size: an NBD client learns the size at its handshake only,
// and a stale one makes its I/O past the old end fail.
func TestOpenSeesResize(t *testing.T) {
	ctx := context.Background()
	d, s, _ := newHookDaemon(t, "v")
	c1, rel1, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer rel1()
	if n := c1.Size(); n != 1<<20 {
		t.Fatalf("size %d, want %d", n, 1<<20)
	}
	if err := manage.New(s).Resize(ctx, "v", 2<<20, false); err != nil {
		t.Fatal(err)
	}
	c2, rel2, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer rel2()
	if n := c2.Size(); n != 2<<20 {
		t.Fatalf("a client opening the volume after another process resized it is told %d bytes, want %d", n, 2<<20)
	}
}
