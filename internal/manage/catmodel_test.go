package manage

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

var errKilled = errors.New("test: process killed")

// procStore is one process's view of the shared store: once killed,
// every call fails (a write already past the check may still land, as a
// request in flight does). before, if set, runs before every write.
type procStore struct {
	objstore.Store
	killed atomic.Bool
	before func()
}

func (p *procStore) gate(write bool) error {
	if write && p.before != nil {
		p.before()
	}
	if p.killed.Load() {
		return errKilled
	}
	return nil
}

func (p *procStore) ReadAt(ctx context.Context, name string, b []byte, off int64) error {
	if err := p.gate(false); err != nil {
		return err
	}
	return p.Store.ReadAt(ctx, name, b, off)
}
func (p *procStore) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if err := p.gate(false); err != nil {
		return nil, 0, err
	}
	return p.Store.Get(ctx, name)
}
func (p *procStore) Stat(ctx context.Context, name string) (objstore.Info, error) {
	if err := p.gate(false); err != nil {
		return objstore.Info{}, err
	}
	return p.Store.Stat(ctx, name)
}
func (p *procStore) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	if err := p.gate(false); err != nil {
		return err
	}
	return p.Store.List(ctx, prefix, fn)
}
func (p *procStore) Put(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	if err := p.gate(true); err != nil {
		return 0, err
	}
	return p.Store.Put(ctx, name, b)
}
func (p *procStore) Create(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	if err := p.gate(true); err != nil {
		return 0, err
	}
	return p.Store.Create(ctx, name, b)
}
func (p *procStore) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (objstore.Version, error) {
	if err := p.gate(true); err != nil {
		return 0, err
	}
	return p.Store.Swap(ctx, name, b, old)
}
func (p *procStore) Delete(ctx context.Context, name string) error {
	if err := p.gate(true); err != nil {
		return err
	}
	return p.Store.Delete(ctx, name)
}
func (p *procStore) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	if err := p.gate(true); err != nil {
		return err
	}
	return p.Store.DeleteVersion(ctx, name, old)
}

// testManager is a Manager on s as the process called node.
func testManager(t testing.TB, s objstore.Store, node string, now func() time.Time) *Manager {
	leases, err := lease.NewManager(s, lease.Config{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	m := &Manager{Store: s, Catalog: catalog.New(s), Now: now, Leases: leases}
	m.Catalog.Hold = m.holdRename
	return m
}

// modelOp is one operation of the model test and what it answered.
type modelOp struct {
	kind       string // create, rename, remove
	x, y       string
	start, end int64       // logical times: before the call, after the answer
	outcome    int         // opOK, opNone (refused: changed nothing), opUnknown
	id         blockmap.ID // create, remove: the ID it answered
}

const (
	opOK = iota
	opNone
	opUnknown
)

// catalogState is the catalog as the names a store holds: valid names by
// listing, and the raw record objects.
func catalogState(t *testing.T, s objstore.Store, label string) map[string]blockmap.ID {
	t.Helper()
	c := catalog.New(s)
	p, err := c.List(ctx, catalog.ListOptions{})
	if err != nil {
		t.Fatalf("%s: list: %v", label, err)
	}
	got := map[string]blockmap.ID{}
	byID := map[blockmap.ID]string{}
	for _, r := range p.Records {
		if other, dup := byID[r.ID]; dup {
			t.Fatalf("%s: %s named twice, %q and %q", label, r.ID, other, r.Name)
		}
		byID[r.ID] = r.Name
		got[r.Name] = r.ID
		if l, err := c.Lookup(ctx, r.Name); err != nil || l.ID != r.ID {
			t.Fatalf("%s: listed %q (%s), lookup: %v %v", label, r.Name, r.ID, l, err)
		}
		if b, err := c.ByID(ctx, r.ID); err != nil || b.Name != r.Name {
			t.Fatalf("%s: listed %q (%s), by ID: %v %v", label, r.Name, r.ID, b, err)
		}
	}
	return got
}

func rawNames(t *testing.T, s objstore.Store, prefix string) []string {
	t.Helper()
	var out []string
	if err := s.List(ctx, prefix, func(in objstore.Info) error { out = append(out, strings.TrimPrefix(in.Name, prefix)); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// repairAndCollect checks a store left by crashes and kills: it reads as
// one name per ID; the next command on each name (a rename onto itself,
// which settles the name and then refuses) changes no valid name and
// leaves no half of a rename; a collection at a clock past the grace
// period then leaves a head for every record and only heads that have
// one. It returns the valid names.
func repairAndCollect(t *testing.T, s objstore.Store, label string) map[string]blockmap.ID {
	t.Helper()
	before := catalogState(t, s, label)
	m := testManager(t, s, "repair", time.Now)
	for _, n := range rawNames(t, s, catalog.NamePrefix) {
		if err := m.Rename(ctx, n, n); !errors.Is(err, catalog.ErrExists) && !errors.Is(err, catalog.ErrNotFound) {
			t.Fatalf("%s: settling %q: %v", label, n, err)
		}
	}
	after := catalogState(t, s, label+" (settled)")
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("%s: settling changed the names:\nbefore %v\nafter  %v", label, before, after)
	}
	raw := rawNames(t, s, catalog.NamePrefix)
	if len(raw) != len(after) {
		t.Fatalf("%s: %d record objects for %d names after settling: %v", label, len(raw), len(after), raw)
	}
	for _, n := range raw {
		b, _, err := s.Get(ctx, catalog.NamePrefix+n)
		if err != nil || strings.Contains(string(b), "renam") {
			t.Fatalf("%s: record %q left as %s (%v)", label, n, b, err)
		}
	}
	// Past the expiry of a lock the test's collector (two grace periods
	// ahead) left in a crash image.
	later := func() time.Time { return time.Now().Add(4 * gc.DefaultGrace) }
	if _, err := m.GC(ctx, gc.Options{Now: later}); err != nil {
		t.Fatalf("%s: gc: %v", label, err)
	}
	ids := map[blockmap.ID]string{}
	for n, id := range after {
		ids[id] = n
		h, _, err := volume.ReadHead(ctx, s, id)
		if err != nil {
			t.Fatalf("%s: %q: its volume is gone after gc: %v", label, n, err)
		}
		if _, err := volume.LoadMap(ctx, s, h); err != nil {
			t.Fatalf("%s: %q: map: %v", label, n, err)
		}
	}
	for _, o := range rawNames(t, s, "vol/") {
		idStr, tail, _ := strings.Cut(o, "/")
		id, err := blockmap.ParseID(idStr)
		if err != nil {
			t.Fatalf("%s: object vol/%s", label, o)
		}
		if _, ok := ids[id]; !ok {
			t.Fatalf("%s: vol/%s left by gc with no record naming %s", label, o, id)
		}
		_ = tail
	}
	for _, h := range rawNames(t, s, catalog.IDPrefix) {
		id, err := blockmap.ParseID(h)
		if _, ok := ids[id]; err != nil || !ok {
			t.Fatalf("%s: hint %s%s left by gc with no record", label, catalog.IDPrefix, h)
		}
	}
	return after
}

// TestCatalogModel: 16 writers in 2 processes (Managers on one crashable
// store, 8 goroutines each) create, rename and remove random names; a
// killer kills a process at random moments (every store call of it
// fails from then on; its operations in flight have unknown outcomes)
// and starts it again. Crash images are taken between writes at random
// and each must read as one name per ID, settle without changing a name
// and collect to no orphan. At the end the names are what the
// operations' answers allow (see checkModel), and the store collects to
// no orphan. ARCHIP_CATMODEL_SEEDS runs more seeds.
func TestCatalogModel(t *testing.T) {
	seeds := 2
	if s := os.Getenv("ARCHIP_CATMODEL_SEEDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		seeds = n
	}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { catalogModel(t, seed, false) })
		t.Run(fmt.Sprint("seed", seed, "-gc"), func(t *testing.T) { catalogModel(t, seed, true) })
	}
}

// catalogModel runs the test; with collect, collections run all along
// with a clock past the grace period and every hold's expiry, as if
// every operation stalled that long wherever it is: operations that
// find their hold lost have unknown outcomes, and no name may end up
// naming a volume a collection deleted. (Without kills and crash images
// then: an operation that stalled past its hold and then died before it
// found out may leave such a name, see package gc.)
func catalogModel(t *testing.T, seed uint64, collect bool) {
	const (
		procs   = 2
		writers = 8
		opsEach = 200
		pool    = 24
		images  = 16
	)
	mem := objstore.NewCrashable()
	var tick atomic.Int64
	var writes atomic.Int64
	// Writes at which crash images are taken.
	rng := rand.New(rand.NewPCG(seed, 99))
	at := map[int64]bool{}
	for len(at) < images {
		at[rng.Int64N(procs*writers*opsEach*4)] = true
	}
	var imu sync.Mutex
	var imgs []*objstore.Mem
	before := func() {
		if n := writes.Add(1); at[n] && !collect {
			img := mem.Crash(rand.New(rand.NewPCG(seed, uint64(n))))
			imu.Lock()
			imgs = append(imgs, img)
			imu.Unlock()
		}
	}
	type incarnation struct {
		s *procStore
		m *Manager
	}
	var cur [procs]atomic.Pointer[incarnation]
	var gens atomic.Int64
	start := func(p int) {
		s := &procStore{Store: mem, before: before}
		cur[p].Store(&incarnation{s, testManager(t, s, fmt.Sprintf("p%d.%d", p, gens.Add(1)), time.Now)})
	}
	for p := range procs {
		start(p)
	}
	var mu sync.Mutex
	var log []modelOp
	var done atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	kills := 0
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		krng := rand.New(rand.NewPCG(seed, 7))
		for {
			next := done.Load() + 50 + krng.Int64N(250)
			for done.Load() < next {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
			if collect {
				continue
			}
			p := krng.IntN(procs)
			cur[p].Load().s.killed.Store(true)
			kills++
			start(p)
		}
	}()
	var collections atomic.Int64
	if collect {
		wg.Add(1)
		go func() {
			defer wg.Done()
			later := func() time.Time { return time.Now().Add(2 * gc.DefaultGrace) }
			for done.Load() < procs*writers*opsEach {
				// Now and then: operations wait for a collection to end
				// (polling every half a second).
				time.Sleep(5 * time.Millisecond)
				if _, err := gc.Run(ctx, mem, gc.Options{Now: later}); err != nil {
					t.Errorf("gc: %v", err)
					return
				}
				collections.Add(1)
			}
		}()
	}
	for g := range procs * writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			p := g % procs
			for range opsEach {
				inc := cur[p].Load()
				op := modelOp{x: fmt.Sprintf("n%02d", rng.IntN(pool)), y: fmt.Sprintf("n%02d", rng.IntN(pool))}
				op.start = tick.Add(1)
				var err error
				switch k := rng.IntN(10); {
				case k < 4:
					op.kind = "create"
					var r *catalog.Record
					if r, err = inc.m.CreateVolume(ctx, op.x, 64<<10, 16); err == nil {
						op.id = r.ID
					}
				case k < 7:
					op.kind = "rename"
					err = inc.m.Rename(ctx, op.x, op.y)
				default:
					op.kind = "remove"
					var r catalog.Record
					if r, err = inc.m.Catalog.Remove(ctx, op.x); err == nil {
						op.id = r.ID
						err = inc.m.removeData(ctx, r)
					}
				}
				op.end = tick.Add(1)
				switch {
				case err == nil:
					op.outcome = opOK
				case errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrExists):
					op.outcome = opNone
				case inc.s.killed.Load() || errors.Is(err, catalog.ErrBusy) || collect && errors.Is(err, gc.ErrHoldLost):
					op.outcome = opUnknown
				default:
					t.Errorf("%s %s %s: %v", op.kind, op.x, op.y, err)
					op.outcome = opUnknown
				}
				mu.Lock()
				log = append(log, op)
				mu.Unlock()
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-killerDone
	if t.Failed() {
		return
	}
	for i, img := range imgs {
		repairAndCollect(t, img, fmt.Sprintf("crash image %d", i))
	}
	final := catalogState(t, mem, "final")
	checkModel(t, log, final)
	repairAndCollect(t, mem, "final")
	var ok, unknown int
	for _, op := range log {
		switch op.outcome {
		case opOK:
			ok++
		case opUnknown:
			unknown++
		}
	}
	t.Logf("%d operations (%d done, %d unknown), %d kills, %d crash images, %d collections, %d names at the end", len(log), ok, unknown, kills, len(imgs), collections.Load(), len(final))
}

// checkModel checks the final names against the operations' answers.
// Every create makes a fresh ID; an operation with an unknown outcome
// may or may not have happened, at any moment between its call and its
// answer. So each ID named at the end must have been made by a create
// that succeeded or may have, never removed by a remove that answered
// it, and must be at a name it can have reached from its create's name
// through renames (each after the previous step could have happened);
// every ID whose create succeeded must be named, unless a remove that
// may have happened met it on its way.
func checkModel(t *testing.T, log []modelOp, final map[string]blockmap.ID) {
	t.Helper()
	created := map[blockmap.ID]modelOp{}
	removed := map[blockmap.ID]bool{}
	var unknownCreates []modelOp
	for _, op := range log {
		switch {
		case op.kind == "create" && op.outcome == opOK:
			created[op.id] = op
		case op.kind == "create" && op.outcome == opUnknown:
			unknownCreates = append(unknownCreates, op)
		case op.kind == "remove" && op.outcome == opOK:
			if removed[op.id] {
				t.Fatalf("%s removed twice", op.id)
			}
			removed[op.id] = true
		}
	}
	// reach returns the earliest time from which an ID made by create
	// can be at each name.
	reach := func(create modelOp) map[string]int64 {
		best := map[string]int64{create.x: create.start}
		for changed := true; changed; {
			changed = false
			for _, op := range log {
				if op.kind != "rename" || op.outcome == opNone {
					continue
				}
				t0, ok := best[op.x]
				if !ok || op.end < t0 {
					continue
				}
				t1 := max(t0, op.start)
				if b, ok := best[op.y]; !ok || t1 < b {
					best[op.y] = t1
					changed = true
				}
			}
		}
		return best
	}
	mayRemove := func(best map[string]int64) bool {
		for _, op := range log {
			if op.kind == "remove" && op.outcome == opUnknown {
				if t0, ok := best[op.x]; ok && op.end >= t0 {
					return true
				}
			}
		}
		return false
	}
	named := map[blockmap.ID]string{}
	unknownNamed := 0
	for n, id := range final {
		named[id] = n
		if removed[id] {
			t.Fatalf("%q names %s, which a remove answered", n, id)
		}
		if c, ok := created[id]; ok {
			if _, ok := reach(c)[n]; !ok {
				t.Fatalf("%q names %s, created as %q: no renames lead there", n, id, c.x)
			}
			continue
		}
		unknownNamed++
		found := false
		for _, c := range unknownCreates {
			if _, ok := reach(c)[n]; ok {
				found = true
				break
			}
		}
		if !found || unknownNamed > len(unknownCreates) {
			t.Fatalf("%q names %s, which no create that may have happened can have put there", n, id)
		}
	}
	for id, c := range created {
		if _, ok := named[id]; ok || removed[id] {
			continue
		}
		if !mayRemove(reach(c)) {
			t.Fatalf("%s, created as %q, is lost: no remove can have removed it", id, c.x)
		}
	}
}
