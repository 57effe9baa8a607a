package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// stallStore is one node's view of the shared store. While the node is
// paused (a stopped process, a frozen VM), every call it makes waits at
// the gate until it resumes, and then runs, late. A call made with a
// context that carries a *stallMark closes the mark when it waits, so a
// test knows that a request is stuck inside the store.
type stallStore struct {
	objstore.Store
	hang context.Context // ends every wait: protection against a hung test

	mu     sync.Mutex
	resume chan struct{} // non-nil while paused
	after  int           // > 0: the call that pauses the node, counting down
}

type stallKey struct{}

// stallMark is closed when the request whose context carries it waits
// at a paused gate.
type stallMark struct {
	once sync.Once
	ch   chan struct{}
}

// pauseAfter pauses the node at its n-th store call from now (n >= 1),
// so that a request stalls at any point of its course.
func (s *stallStore) pauseAfter(n int) {
	s.mu.Lock()
	s.after = n
	s.mu.Unlock()
}

// pause pauses the node now, if it is not yet.
func (s *stallStore) pause() {
	s.mu.Lock()
	s.after = 0
	if s.resume == nil {
		s.resume = make(chan struct{})
	}
	s.mu.Unlock()
}

func (s *stallStore) unpause() {
	s.mu.Lock()
	if s.resume != nil {
		close(s.resume)
		s.resume = nil
	}
	s.mu.Unlock()
}

func (s *stallStore) paused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resume != nil
}

func (s *stallStore) gate(ctx context.Context) error {
	s.mu.Lock()
	if s.after > 0 {
		if s.after--; s.after == 0 {
			s.resume = make(chan struct{})
		}
	}
	ch := s.resume
	s.mu.Unlock()
	if ch == nil {
		return nil
	}
	if m, ok := ctx.Value(stallKey{}).(*stallMark); ok {
		m.once.Do(func() { close(m.ch) })
	}
	select {
	case <-ch:
		return nil
	case <-s.hang.Done():
		return s.hang.Err()
	}
}

func (s *stallStore) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := s.gate(ctx); err != nil {
		return err
	}
	return s.Store.ReadAt(ctx, name, p, off)
}

func (s *stallStore) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if err := s.gate(ctx); err != nil {
		return nil, 0, err
	}
	return s.Store.Get(ctx, name)
}

func (s *stallStore) Stat(ctx context.Context, name string) (objstore.Info, error) {
	if err := s.gate(ctx); err != nil {
		return objstore.Info{}, err
	}
	return s.Store.Stat(ctx, name)
}

func (s *stallStore) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if err := s.gate(ctx); err != nil {
		return 0, err
	}
	return s.Store.Put(ctx, name, data)
}

func (s *stallStore) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if err := s.gate(ctx); err != nil {
		return 0, err
	}
	return s.Store.Create(ctx, name, data)
}

func (s *stallStore) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	if err := s.gate(ctx); err != nil {
		return 0, err
	}
	return s.Store.Swap(ctx, name, data, old)
}

func (s *stallStore) Delete(ctx context.Context, name string) error {
	if err := s.gate(ctx); err != nil {
		return err
	}
	return s.Store.Delete(ctx, name)
}

func (s *stallStore) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	if err := s.gate(ctx); err != nil {
		return err
	}
	return s.Store.DeleteVersion(ctx, name, old)
}

func (s *stallStore) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	if err := s.gate(ctx); err != nil {
		return err
	}
	return s.Store.List(ctx, prefix, fn)
}

// stallStoreRW is a stallStore over a store that writes in place
// (files, RADOS): the volume then writes owned blocks with WriteAt and
// syncs them at flush.
type stallStoreRW struct{ *stallStore }

func (s stallStoreRW) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := s.gate(ctx); err != nil {
		return err
	}
	return s.Store.(objstore.RangeWriter).WriteAt(ctx, name, p, off)
}

func (s stallStoreRW) Sync(ctx context.Context, name string) error {
	if err := s.gate(ctx); err != nil {
		return err
	}
	return s.Store.(objstore.Syncer).Sync(ctx, name)
}

func (s stallStoreRW) Copy(ctx context.Context, src, dst string) error {
	if err := s.gate(ctx); err != nil {
		return err
	}
	return s.Store.(objstore.Copier).Copy(ctx, src, dst)
}

const (
	stallTTL      = time.Minute
	stallDrift    = stallTTL / 10
	stallSlot     = 4096      // every write fills one slot
	stallSize     = 256 << 10 // 4 blocks of 64 KiB, 64 slots
	stallSlots    = stallSize / stallSlot
	stallLogLines = 300 // of the log shown when the test fails
)

// stallWrite is one write of the test: its id fills the slot.
type stallWrite struct {
	vol, slot int
	id        uint64 // > 0; 0 is the zeros a volume starts with
}

// stallEvent is where a write is in the test's history: when it was
// issued, and when its call returned (0: not yet). Two writes whose
// spans overlap may land in either order.
type stallEvent struct{ issued, ended uint64 }

func stallData(w stallWrite) []byte {
	p := make([]byte, stallSlot)
	for i := 0; i < stallSlot; i += 16 {
		binary.BigEndian.PutUint64(p[i:], w.id)
		binary.BigEndian.PutUint32(p[i+8:], uint32(w.vol))
		binary.BigEndian.PutUint32(p[i+12:], uint32(w.slot))
	}
	return p
}

// stallDecode returns the id of the write a slot holds, or false if its
// bytes are no single write of it (torn, or another slot's).
func stallDecode(p []byte, vol, slot int) (uint64, bool) {
	if bytes.Equal(p, make([]byte, len(p))) {
		return 0, true
	}
	id := binary.BigEndian.Uint64(p)
	return id, id != 0 && bytes.Equal(p, stallData(stallWrite{vol, slot, id}))
}

// stallSlotState is what a slot may read: the writes not known to be
// overwritten. A write known durable (acknowledged, then flushed through
// the same daemon, or with FUA) overwrites every write whose call
// returned before it was issued; a write in flight meanwhile may land
// before or after it.
type stallSlotState struct {
	cands   map[uint64]*stallEvent
	durable []uint64 // the writes known durable, for messages
}

func (s *stallSlotState) allows(id uint64) bool { return s.cands[id] != nil }

func (s *stallSlotState) String() string {
	var ids []uint64
	for id := range s.cands {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return fmt.Sprintf("it may read one of %v; known durable: %v", ids, s.durable[max(0, len(s.durable)-3):])
}

// stallClient is one client connection to one volume through one node.
type stallClient struct {
	node, vol int
	e         *Volume
	release   func()
	pending   []stallWrite // acknowledged since its last flush
}

type stallNode struct {
	name   string
	d      *Daemon
	store  *stallStore
	leases *lease.Manager
}

// stallSnap is a snapshot taken during the test: what each slot read
// just after it was taken.
type stallSnap struct {
	name string
	vol  int
	id   blockmap.ID
	held []uint64
	when int // the step it was taken at
}

type stallTest struct {
	t         *testing.T
	ctx       context.Context
	seed      int64
	rng       *rand.Rand
	base      objstore.Store
	rw        bool
	clock     *fakeClock
	nodes     []*stallNode
	dead      []*stallNode    // crashed: paused for good (until the end)
	loops     context.Context // ends the daemons' periodic flushes
	wg        sync.WaitGroup  // the periodic flushes
	snapper   *manage.Manager // takes snapshots, as the command line does
	snapStore *stallStore
	breaker   *lease.Manager
	vols      []string
	ids       []blockmap.ID
	slots     [][]stallSlotState
	clients   map[[2]int]*stallClient
	nextID    uint64
	events    map[uint64]*stallEvent // of every write, by id
	seq       uint64                 // numbers the issue and end of every write
	snaps     []stallSnap
	nSnaps    int
	// unchecked[node][vol]: the node held the volume's lease when it was
	// broken with now=true: until its validity runs out it may serve its
	// own, older map (see lease.Manager.Break), so its reads are not
	// checked against the oracle.
	unchecked map[[2]int]bool
	step      int
	atStep    atomic.Int64 // step, for logf from the daemons' goroutines
	logMu     sync.Mutex
	log       []string
}

func (st *stallTest) logf(format string, args ...any) {
	st.logMu.Lock()
	st.log = append(st.log, fmt.Sprintf("%4d ", st.atStep.Load())+fmt.Sprintf(format, args...))
	st.logMu.Unlock()
}

func (st *stallTest) fail(format string, args ...any) {
	st.t.Helper()
	st.t.Errorf("seed %d (ARCHIP_STALL_SEED=%d), step %d: %s", st.seed, st.seed, st.step, fmt.Sprintf(format, args...))
}

// newStallStore wraps the shared store for one node.
func (st *stallTest) newStallStore() (*stallStore, objstore.Store) {
	s := &stallStore{Store: st.base, hang: st.ctx}
	if st.rw {
		return s, stallStoreRW{s}
	}
	return s, s
}

// sleep is the lease managers' Config.Sleep: renewals (every TTL/3) run
// every few milliseconds of real time without moving the clock; every
// other wait (a taker waiting out a holder that does not answer) moves
// the shared clock on by what it waits.
func (st *stallTest) sleep(ctx context.Context, d time.Duration) error {
	if d == stallTTL/3 {
		d = 20 * time.Millisecond
	} else {
		st.clock.add(d)
		d = 50 * time.Microsecond
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

var errUnreachable = errors.New("stall test: node unreachable (paused)")

// ask is the lease managers' Config.Ask, in process: a paused node does
// not answer.
func (st *stallTest) ask(ctx context.Context, rec lease.Record, vol string) error {
	var n *stallNode
	for _, x := range st.nodes {
		if x.name == rec.Owner {
			n = x
		}
	}
	if n == nil || n.store.paused() {
		return errUnreachable
	}
	id, err := blockmap.ParseID(vol)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		_, err := n.d.Handoff(context.WithoutCancel(ctx), id)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (st *stallTest) leaseManager(s objstore.Store, name string) *lease.Manager {
	l, err := lease.NewManager(s, lease.Config{Node: name, Addr: name, TTL: stallTTL, MaxDrift: stallDrift,
		Clock: st.clock, Sleep: st.sleep, Ask: st.ask, Logf: func(string, ...any) {}})
	if err != nil {
		st.t.Fatal(err)
	}
	return l
}

// TestStallHandoff is the randomized test of lease handoff with stalls:
// several daemons share a store and serve the same volumes; a client
// writes through each in turn, with flushes (the daemons also flush
// periodically); at random points a lease holder is paused (every store
// call it makes waits, a request of its client stuck at some call) while
// the clock moves past its expiry and another daemon takes over, and
// then resumes and finishes its late calls; the snapshot taker is paused
// likewise in the middle of a snapshot; leases are broken (mostly at
// once, as lease break --now); a daemon crashes and restarts with the
// same node id; snapshots are taken. Every read must match the oracle,
// every acknowledged and flushed write must read back through a fresh
// open at the end, and every snapshot must read at the end what it read
// when it was taken.
//
// ARCHIP_STALL_SEED replays a seed; ARCHIP_STALL_STEPS sets the number
// of steps (default 150, 60 with -short).
func TestStallHandoff(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("ARCHIP_STALL_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	steps := 150
	if testing.Short() {
		steps = 60
	}
	if s := os.Getenv("ARCHIP_STALL_STEPS"); s != "" {
		var err error
		if steps, err = strconv.Atoi(s); err != nil {
			t.Fatal(err)
		}
	}
	runStall(t, seed, steps, -1)
}

// runStall runs the test with a seed; store picks the store (-1: by the
// seed): 0 a mem store written whole (as S3), 1 a mem store written in
// place, 2 a file store.
func runStall(t *testing.T, seed int64, steps int, store int) {
	t.Logf("seed %d (replay with ARCHIP_STALL_SEED=%d)", seed, seed)
	// Hang protection only: a healthy run takes seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st := &stallTest{t: t, ctx: ctx, seed: seed, rng: rand.New(rand.NewSource(seed)),
		clock: &fakeClock{now: time.Unix(1e9, 0)}, clients: map[[2]int]*stallClient{}, unchecked: map[[2]int]bool{},
		events: map[uint64]*stallEvent{0: {issued: 1, ended: 1}}, seq: 1}
	defer func() {
		if t.Failed() {
			t.Logf("seed %d; the last steps:", seed)
			for _, l := range st.log[max(0, len(st.log)-stallLogLines):] {
				t.Log(l)
			}
		}
	}()
	if store < 0 {
		store = st.rng.Intn(3)
	}
	switch store {
	case 0:
		st.base = objstore.NewMem()
	case 1:
		st.base, st.rw = objstore.NewMem(), true
	case 2:
		f, err := objstore.OpenFile(t.TempDir(), true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		st.base, st.rw = f, true
	}
	nNodes, nVols := 2+st.rng.Intn(2), 1+st.rng.Intn(2)
	t.Logf("store %d, %d daemons, %d volumes, %d steps", store, nNodes, nVols, steps)
	// Every daemon flushes its volumes now and then, as 'archip serve'
	// does; the oracle does not count on it.
	loops, stopLoops := context.WithCancel(ctx)
	st.loops = loops
	defer func() {
		for _, n := range st.dead {
			n.store.unpause()
		}
		stopLoops()
		st.wg.Wait()
	}()
	for i := range nNodes {
		st.nodes = append(st.nodes, st.startNode(fmt.Sprintf("node%d", i)))
	}
	snapStore, snapView := st.newStallStore()
	st.snapStore = snapStore
	st.snapper = manage.New(snapView)
	st.snapper.Leases = st.leaseManager(snapView, "snapper")
	st.breaker = st.leaseManager(st.base, "operator")
	for i := range nVols {
		name := fmt.Sprintf("vol%d", i)
		r, err := st.snapper.CreateVolume(ctx, name, stallSize, 16)
		if err != nil {
			t.Fatal(err)
		}
		st.vols, st.ids = append(st.vols, name), append(st.ids, r.ID)
		slots := make([]stallSlotState, stallSlots)
		for s := range slots {
			slots[s].cands = map[uint64]*stallEvent{0: st.events[0]}
		}
		st.slots = append(st.slots, slots)
	}

	for st.step = 0; st.step < steps && !t.Failed() && ctx.Err() == nil; st.step++ {
		st.atStep.Store(int64(st.step))
		switch r := st.rng.Intn(100); {
		case r < 40:
			st.write(st.pick(-1))
		case r < 58:
			st.flush(st.pick(-1))
		case r < 72:
			st.read(st.pick(-1))
		case r < 78:
			st.snapshot(st.rng.Intn(len(st.vols)))
		case r < 82:
			st.breakLease(st.rng.Intn(len(st.vols)))
		case r < 86:
			st.reconnect(st.pick(-1))
		case r < 96:
			st.stallSnapshot()
		case r < 98:
			st.crash()
		default:
			st.stall()
		}
	}
	// The crashed daemons' calls still stuck in the store land now,
	// late: what they write must change nothing checked.
	for _, n := range st.dead {
		n.store.unpause()
	}
	stopLoops()
	st.wg.Wait()
	if ctx.Err() != nil {
		st.fail("hung: %v", ctx.Err())
	}
	st.check("before the daemons close")
	for _, n := range append(st.nodes, st.dead...) {
		if err := n.d.Close(ctx); err != nil {
			st.logf("closing %s: %v", n.name, err)
		}
	}
	st.check("after the daemons closed")
}

// pick returns a client of a random volume through a random node other
// than skip, connecting it if needed.
func (st *stallTest) pick(skip int) *stallClient {
	for {
		k := st.rng.Intn(len(st.nodes))
		if k == skip {
			continue
		}
		return st.client(k, st.rng.Intn(len(st.vols)))
	}
}

func (st *stallTest) client(k, v int) *stallClient {
	key := [2]int{k, v}
	if c := st.clients[key]; c != nil {
		return c
	}
	e, release, err := st.nodes[k].d.Open(st.ctx, st.vols[v])
	if err != nil {
		st.fail("%s opens %s: %v", st.nodes[k].name, st.vols[v], err)
		e, release = nil, func() {}
	}
	c := &stallClient{node: k, vol: v, e: e, release: release}
	st.clients[key] = c
	return c
}

// expected reports whether err is one a request may fail with when its
// daemon lost the lease (stalled past it, or broken).
func expected(err error) bool {
	return errors.Is(err, ErrLeaseLost) || errors.Is(err, volume.ErrFenced) ||
		errors.Is(err, lease.ErrLost) || errors.Is(err, lease.ErrStale)
}

// failed handles a request's error: an expected one makes the client
// reconnect (its unflushed writes stay possible, not durable).
func (st *stallTest) failed(c *stallClient, what string, err error) {
	st.logf("%s via %s on %s failed: %v", what, st.nodes[c.node].name, st.vols[c.vol], err)
	if !expected(err) {
		st.fail("%s via %s on %s: unexpected error: %v", what, st.nodes[c.node].name, st.vols[c.vol], err)
	}
	st.reconnect(c)
}

func (st *stallTest) reconnect(c *stallClient) {
	st.logf("%s reconnects to %s", st.nodes[c.node].name, st.vols[c.vol])
	delete(st.clients, [2]int{c.node, c.vol})
	c.release()
}

// issue records a write about to be sent: from now on it may land.
func (st *stallTest) issue(c *stallClient) stallWrite {
	st.nextID++
	st.seq++
	w := stallWrite{vol: c.vol, slot: st.rng.Intn(stallSlots), id: st.nextID}
	ev := &stallEvent{issued: st.seq}
	st.events[w.id] = ev
	st.slots[w.vol][w.slot].cands[w.id] = ev
	return w
}

// ended records that w's call returned, acknowledged or not.
func (st *stallTest) ended(w stallWrite) {
	st.seq++
	st.events[w.id].ended = st.seq
}

// durable records that w is acknowledged and flushed: the slot reads w,
// a write in flight while w was, or a later write.
func (st *stallTest) durable(w stallWrite) {
	s := &st.slots[w.vol][w.slot]
	issued := st.events[w.id].issued
	for id, ev := range s.cands {
		if ev.ended != 0 && ev.ended < issued {
			delete(s.cands, id)
		}
	}
	s.durable = append(s.durable, w.id)
}

func (st *stallTest) write(c *stallClient) {
	if c.e == nil {
		return
	}
	w := st.issue(c)
	fua := st.rng.Intn(8) == 0
	st.logf("write %d to %s slot %d via %s (fua %v)", w.id, st.vols[w.vol], w.slot, st.nodes[c.node].name, fua)
	err := c.e.WriteAt(st.ctx, stallData(w), int64(w.slot)*stallSlot, fua)
	st.ended(w)
	if err != nil {
		st.failed(c, "write", err)
		return
	}
	st.acked(c, w, fua)
}

func (st *stallTest) acked(c *stallClient, w stallWrite, fua bool) {
	if fua {
		st.durable(w)
	} else {
		c.pending = append(c.pending, w)
	}
}

func (st *stallTest) flush(c *stallClient) {
	if c.e == nil {
		return
	}
	st.logf("flush %s via %s (%d pending)", st.vols[c.vol], st.nodes[c.node].name, len(c.pending))
	if err := c.e.Flush(st.ctx); err != nil {
		st.failed(c, "flush", err)
		return
	}
	st.flushed(c, c.pending)
}

func (st *stallTest) flushed(c *stallClient, ws []stallWrite) {
	for _, w := range ws {
		st.durable(w)
	}
	c.pending = c.pending[len(ws):]
}

func (st *stallTest) read(c *stallClient) {
	if c.e == nil {
		return
	}
	slot := st.rng.Intn(stallSlots)
	p := make([]byte, stallSlot)
	if err := c.e.ReadAt(st.ctx, p, int64(slot)*stallSlot); err != nil {
		st.failed(c, "read", err)
		return
	}
	id, ok := stallDecode(p, c.vol, slot)
	st.logf("read %s slot %d via %s: %d", st.vols[c.vol], slot, st.nodes[c.node].name, id)
	if st.unchecked[[2]int{c.node, c.vol}] {
		return
	}
	if s := &st.slots[c.vol][slot]; !ok || !s.allows(id) {
		st.fail("%s reads %s slot %d as write %d (whole: %v); the oracle says %s", st.nodes[c.node].name, st.vols[c.vol], slot, id, ok, s)
	}
}

// readAll reads every slot of volume or snapshot id through a fresh
// open of the shared store.
func (st *stallTest) readAll(id blockmap.ID, vol int) ([]uint64, error) {
	v, err := volume.Open(st.ctx, st.base, id, volume.OpenOptions{})
	if err != nil {
		return nil, err
	}
	defer v.Close(st.ctx)
	p := make([]byte, stallSize)
	if err := v.ReadAt(st.ctx, p, 0); err != nil {
		return nil, err
	}
	out := make([]uint64, stallSlots)
	for s := range out {
		id, ok := stallDecode(p[s*stallSlot:(s+1)*stallSlot], vol, s)
		if !ok {
			return nil, fmt.Errorf("slot %d is torn or foreign: %x", s, p[s*stallSlot:s*stallSlot+16])
		}
		out[s] = id
	}
	return out, nil
}

func (st *stallTest) snapshot(v int) {
	name := fmt.Sprintf("%s-snap%d", st.vols[v], st.nSnaps)
	st.nSnaps++
	r, err := st.snapper.Snapshot(st.ctx, st.vols[v], name)
	if err != nil {
		st.logf("snapshot %s: %v", name, err)
		if !expected(err) {
			st.fail("snapshot %s: %v", name, err)
		}
		return
	}
	held, err := st.readAll(r.ID, v)
	if err != nil {
		st.fail("reading snapshot %s just taken: %v", name, err)
		return
	}
	st.logf("snapshot %s taken", name)
	for s, id := range held {
		if ss := &st.slots[v][s]; !ss.allows(id) {
			st.fail("snapshot %s just taken reads slot %d as write %d; the oracle says %s", name, s, id, ss)
		}
	}
	st.snaps = append(st.snaps, stallSnap{name: name, vol: v, id: r.ID, held: held, when: st.step})
}

// breakLease breaks volume v's lease, as 'lease break': mostly at once
// (--now), else keeping the holder's expiry, which the next taker waits
// out (its waits move the clock on).
func (st *stallTest) breakLease(v int) {
	now := st.rng.Intn(4) != 0
	res, err := st.breaker.Break(st.ctx, st.ids[v].String(), now)
	if err != nil {
		st.fail("breaking the lease of %s: %v", st.vols[v], err)
		return
	}
	st.logf("lease of %s broken (now %v; was %+v)", st.vols[v], now, res.Prev)
	for k, n := range st.nodes {
		if now && res.Changed && res.Prev.Owner == n.name {
			st.unchecked[[2]int{k, v}] = true
		}
	}
}

// stall pauses a node, with a request of one of its clients stuck in
// the store (a write, a flush, or none: only its renewals stop); moves
// the clock past every lease's expiry; lets the other nodes work; then
// resumes the node and lets its late calls run.
func (st *stallTest) stall() {
	k := st.rng.Intn(len(st.nodes))
	n := st.nodes[k]
	kind := st.rng.Intn(3) // 0 write, 1 flush, 2 nothing in flight
	c := st.client(k, st.rng.Intn(len(st.vols)))
	if c.e == nil {
		return
	}
	calls := 1 + st.rng.Intn(8)
	st.logf("pause %s at its store call %d from now (in flight: %s)", n.name, calls, []string{"a write", "a flush", "nothing"}[kind])
	n.store.pauseAfter(calls)
	mark := &stallMark{ch: make(chan struct{})}
	rctx := context.WithValue(st.ctx, stallKey{}, mark)
	done := make(chan error, 1)
	var w stallWrite
	pending := len(c.pending)
	switch kind {
	case 0:
		w = st.issue(c)
		st.logf("stalled write %d to %s slot %d", w.id, st.vols[w.vol], w.slot)
		go func() { done <- c.e.WriteAt(rctx, stallData(w), int64(w.slot)*stallSlot, false) }()
	case 1:
		go func() { done <- c.e.Flush(rctx) }()
	}
	var res error
	finished := kind == 2
	if !finished {
		// The request may also wait for a lock that another call of the
		// paused node holds (a renewal that found the lease lost): it is
		// in flight all the same, so the test goes on after a while. The
		// wait only makes the stall land inside the store more often.
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-mark.ch:
		case res = <-done:
			finished = true // it needed no store call
		case <-t.C:
		}
		t.Stop()
	}
	n.store.pause() // if the request made fewer calls
	st.clock.add(stallTTL + stallDrift + time.Second)
	for key := range st.unchecked {
		delete(st.unchecked, key) // every lease ran out on every clock
	}
	for range 1 + st.rng.Intn(6) {
		switch r := st.rng.Intn(100); {
		case r < 50:
			st.write(st.pick(k))
		case r < 70:
			st.flush(st.pick(k))
		case r < 80:
			st.read(st.pick(k))
		case r < 95:
			st.snapshot(st.rng.Intn(len(st.vols)))
		default:
			st.breakLease(st.rng.Intn(len(st.vols)))
		}
	}
	st.logf("resume %s", n.name)
	n.store.unpause()
	if !finished {
		select {
		case res = <-done:
		case <-st.ctx.Done():
			st.fail("the stalled request of %s never ended", n.name)
			return
		}
	}
	st.logf("stalled request of %s ended: %v", n.name, res)
	if kind == 0 {
		st.ended(w)
	}
	if st.clients[[2]int{k, c.vol}] != c {
		return // reconnected meanwhile
	}
	switch {
	case kind == 2:
	case res != nil:
		st.failed(c, "stalled request", res)
	case kind == 0:
		st.acked(c, w, false)
	case kind == 1:
		st.flushed(c, c.pending[:pending])
	}
}

// check reads every volume and snapshot through a fresh open.
func (st *stallTest) check(when string) {
	for v, id := range st.ids {
		got, err := st.readAll(id, v)
		if err != nil {
			st.fail("%s: reading %s: %v", when, st.vols[v], err)
			continue
		}
		for s, id := range got {
			if ss := &st.slots[v][s]; !ss.allows(id) {
				st.fail("%s: %s slot %d reads write %d; the oracle says %s", when, st.vols[v], s, id, ss)
			}
		}
	}
	for _, sn := range st.snaps {
		got, err := st.readAll(sn.id, sn.vol)
		if err != nil {
			st.fail("%s: reading snapshot %s: %v", when, sn.name, err)
			continue
		}
		for s := range got {
			if got[s] != sn.held[s] {
				st.fail("%s: snapshot %s (taken at step %d) slot %d reads write %d, and read write %d when taken",
					when, sn.name, sn.when, s, got[s], sn.held[s])
			}
		}
	}
}

// TestLateInPlaceWriteNotFlushed: on a store without in-place writes
// (S3: every block is written whole with Put), a holder whose lease was
// broken at once and taken over (here the new holder copied the block
// since) writes a block it owns in place, which its clock still allows;
// the write lands in an object the volume's map no longer references.
// Its next flush must fail, not report the write durable (found by
// TestStallHandoff: an acknowledged and flushed write read back as the
// one before it).
func TestLateInPlaceWriteNotFlushed(t *testing.T) {
	ctx := context.Background()
	base := objstore.NewMem()
	mk := func(name string) *Daemon {
		s := &hookStore{Store: base} // Put only: no RangeWriter
		m := manage.New(s)
		l, err := lease.NewManager(s, lease.Config{Node: name, Addr: name, TTL: time.Hour, MaxDrift: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		m.Leases = l
		d := New(m, t.Logf)
		t.Cleanup(func() { d.Close(ctx) })
		return d
	}
	a, b := mk("a"), mk("b")
	r, err := a.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	ea, relA, err := a.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer relA()
	eb, relB, err := b.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer relB()
	if err := ea.WriteAt(ctx, []byte("first"), 0, true); err != nil {
		t.Fatal(err)
	}
	operator, _ := lease.NewManager(base, lease.Config{Node: "operator", TTL: time.Hour, MaxDrift: time.Minute})
	if _, err := operator.Break(ctx, r.ID.String(), true); err != nil {
		t.Fatal(err)
	}
	// b takes over and copies block 0 in its new epoch.
	if err := eb.WriteAt(ctx, []byte("b"), 4096, true); err != nil {
		t.Fatal(err)
	}
	// a's lease is still valid on its clock: its write to the block it
	// owns goes in place, into the object b no longer uses.
	if err := ea.WriteAt(ctx, []byte("late"), 0, false); err != nil {
		t.Logf("a's late write: %v", err) // refusing it is fine too
		return
	}
	ferr := ea.Flush(ctx)
	v, err := volume.Open(ctx, base, r.ID, volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	got := make([]byte, 5)
	if err := v.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if ferr == nil && string(got[:4]) != "late" {
		t.Fatalf("a's flush after its late write succeeded, but the volume reads %q", got)
	}
	t.Logf("a's flush: %v; the volume reads %q", ferr, got)
}

// stallSnapshot pauses the snapshot taker in the middle of a snapshot
// while the clock moves past its lease and the daemons write, then
// resumes it. A snapshot it still completes must read, at the end, what
// it read when the taker resumed. (What it holds is not checked against
// the oracle: it was taken at some point of the stall.)
func (st *stallTest) stallSnapshot() {
	v := st.rng.Intn(len(st.vols))
	name := fmt.Sprintf("%s-snap%d", st.vols[v], st.nSnaps)
	st.nSnaps++
	calls := 1 + st.rng.Intn(20)
	st.logf("pause the snapshot taker at its store call %d of snapshot %s", calls, name)
	st.snapStore.pauseAfter(calls)
	mark := &stallMark{ch: make(chan struct{})}
	rctx := context.WithValue(st.ctx, stallKey{}, mark)
	type result struct {
		r   *catalog.Record
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := st.snapper.Snapshot(rctx, st.vols[v], name)
		done <- result{r, err}
	}()
	t := time.NewTimer(100 * time.Millisecond)
	select {
	case <-mark.ch:
	case <-t.C:
	}
	t.Stop()
	st.snapStore.pause()
	st.clock.add(stallTTL + stallDrift + time.Second)
	for key := range st.unchecked {
		delete(st.unchecked, key)
	}
	for range 1 + st.rng.Intn(6) {
		switch r := st.rng.Intn(100); {
		case r < 55:
			st.write(st.pick(-1))
		case r < 80:
			st.flush(st.pick(-1))
		case r < 95:
			st.read(st.pick(-1))
		default:
			st.breakLease(st.rng.Intn(len(st.vols)))
		}
	}
	st.logf("resume the snapshot taker")
	st.snapStore.unpause()
	var res result
	select {
	case res = <-done:
	case <-st.ctx.Done():
		st.fail("the stalled snapshot %s never ended", name)
		return
	}
	if res.err != nil {
		st.logf("stalled snapshot %s: %v", name, res.err)
		if !expected(res.err) {
			st.fail("stalled snapshot %s: %v", name, res.err)
		}
		return
	}
	held, err := st.readAll(res.r.ID, v)
	if err != nil {
		st.fail("reading snapshot %s just taken: %v", name, err)
		return
	}
	st.logf("stalled snapshot %s taken", name)
	st.snaps = append(st.snaps, stallSnap{name: name, vol: v, id: res.r.ID, held: held, when: st.step})
}

// TestFollowerOpenRacesFlush: a volume opened (or reopened after a
// handoff) as a follower while its writer on another node flushes finds
// a segment of the head it read already replaced and deleted. That is
// the writer moving on, not corruption: the open reads the head again
// (found by TestStallHandoff: a handoff fenced the handle, and every
// request of its client failed, with "store is corrupt").
func TestFollowerOpenRacesFlush(t *testing.T) {
	ctx := context.Background()
	d, s, ids := newHookDaemon(t, "v")
	id := ids["v"]
	w, err := volume.Open(ctx, s.Store, id, volume.OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	if err := w.WriteAt(ctx, []byte("one"), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := w.Checkpoint(ctx); err != nil { // segments, not the head's delta
		t.Fatal(err)
	}
	// The writer flushes again between the follower's read of the head
	// and its read of the segments.
	var once sync.Once
	s.setHook(func(op objstore.Op, name string) error {
		if op == objstore.OpGet && strings.HasPrefix(name, blockmap.VolumePrefix(id)) && name != blockmap.HeadName(id) {
			once.Do(func() {
				if err := w.WriteAt(ctx, []byte("two"), 1<<16, true); err != nil { // a new block: a new segment
					t.Error(err)
				}
				if err := w.Checkpoint(ctx); err != nil {
					t.Error(err)
				}
			})
		}
		return nil
	})
	e, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatalf("opening while the writer flushes: %v", err)
	}
	defer release()
	if got := readBack(t, e, 1<<16, 3); string(got) != "two" {
		t.Fatalf("the follower reads %q", got)
	}
}

// TestWriterOpenRacesFlush: the open for writing that follows taking
// the lease reads the head and then its segments; another writer that
// flushed in between (a holder that had stalled past its lease, or the
// snapshot taker) replaced and deleted a segment. The open reads the
// head again: the write either goes on or fails saying what happened,
// not that the store is corrupt (found by TestStallHandoff).
func TestWriterOpenRacesFlush(t *testing.T) {
	ctx := context.Background()
	d, s, ids := newHookDaemon(t, "v")
	id := ids["v"]
	e, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	w, err := volume.Open(ctx, s.Store, id, volume.OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteAt(ctx, []byte("one"), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := w.Checkpoint(ctx); err != nil { // segments, not the head's delta
		t.Fatal(err)
	}
	var once sync.Once
	s.setHook(func(op objstore.Op, name string) error {
		if op == objstore.OpGet && strings.HasPrefix(name, blockmap.VolumePrefix(id)) && name != blockmap.HeadName(id) {
			once.Do(func() {
				if err := w.WriteAt(ctx, []byte("two"), 1<<16, true); err != nil {
					t.Error(err)
				}
				if err := w.Checkpoint(ctx); err != nil { // a new segment replaces the one being read
					t.Error(err)
				}
				w.Close(ctx)
			})
		}
		return nil
	})
	if err := e.WriteAt(ctx, []byte("three"), 2<<16, false); err != nil {
		t.Fatalf("writing while another writer flushes: %v", err)
	}
	for off, want := range map[int64]string{0: "one", 1 << 16: "two", 2 << 16: "three"} {
		if got := readBack(t, e, off, len(want)); string(got) != want {
			t.Errorf("at %d: %q, want %q", off, got, want)
		}
	}
}

// startNode starts a daemon called name, with its periodic flush.
func (st *stallTest) startNode(name string) *stallNode {
	s, view := st.newStallStore()
	n := &stallNode{name: name, store: s}
	m := manage.New(view)
	n.leases = st.leaseManager(view, n.name)
	m.Leases = n.leases
	logf := func(format string, args ...any) { st.logf(n.name+": "+format, args...) }
	n.d = New(m, logf)
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		n.d.FlushLoop(st.loops, 10*time.Millisecond, logf)
	}()
	return n
}

// crash kills a daemon (it makes no more store calls; those in flight
// land at the end of the test, late) and starts another with the same
// node id, as a restart does: its clients reconnect to the new one, and
// their unflushed writes are lost. The new daemon waits out the leases
// its predecessor held.
func (st *stallTest) crash() {
	k := st.rng.Intn(len(st.nodes))
	n := st.nodes[k]
	st.logf("crash %s and restart it", n.name)
	n.store.pause()
	for key := range st.clients {
		if key[0] == k {
			delete(st.clients, key) // no final flush: the process is gone
		}
	}
	st.dead = append(st.dead, n)
	st.nodes[k] = st.startNode(n.name)
}
