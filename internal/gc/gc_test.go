package gc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

var ctx = context.Background()

const bs = 1 << 16

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// setup returns a manager on a mem store whose objects and GC share a
// fake clock.
func setup(s *objstore.Mem) (*manage.Manager, *clock) {
	clk := &clock{t: time.Unix(1_000_000, 0)}
	s.Now = clk.now
	m := manage.New(s)
	m.Now = clk.now
	return m, clk
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(255) + 1)
	}
	return b
}

// referenced computes, independently of package gc, every object the
// catalog's maps reference.
func referenced(t *testing.T, m *manage.Manager) map[string]bool {
	t.Helper()
	var records []catalog.Record
	if err := m.Catalog.All(ctx, func(r catalog.Record) error { records = append(records, r); return nil }); err != nil {
		t.Fatal(err)
	}
	refs := map[string]bool{"catalog": true}
	for _, r := range records {
		for _, o := range catalog.Objects(r) {
			refs[o] = true
		}
		h, _, err := volume.ReadHead(ctx, m.Store, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		es, err := volume.LoadMap(ctx, m.Store, h)
		if err != nil {
			t.Fatal(err)
		}
		refs[blockmap.HeadName(r.ID)] = true
		if _, err := m.Store.Stat(ctx, lease.Name(r.ID.String())); err == nil {
			refs[lease.Name(r.ID.String())] = true // a volume's lease lives as long as it does
		}
		for _, s := range h.Segments {
			refs[s.Name()] = true
		}
		for _, l := range h.Logs {
			if name := blockmap.LogName(r.ID, l.Epoch, l.Seq); exists(m.Store, name) {
				refs[name] = true // (not written yet: absent)
			}
		}
		for _, e := range es {
			if e.Kind() != blockmap.Zero {
				refs[e.ObjectName()] = true
			}
			if e.Kind() == blockmap.Partial {
				refs[e.Base().ObjectName()] = true
			}
		}
	}
	// A removed volume's child hint stays while a hint below it does.
	var links [][2]blockmap.ID
	m.Store.List(ctx, catalog.ChildPrefix, func(in objstore.Info) error {
		if id, parent, ok := catalog.ParseHint(in.Name); ok && !parent.IsZero() {
			links = append(links, [2]blockmap.ID{parent, id})
		}
		return nil
	})
	for more := true; more; {
		more = false
		for _, l := range links {
			name := catalog.ChildPrefix + l[0].String() + "/" + l[1].String()
			if refs[name] {
				continue
			}
			for _, below := range links {
				if below[0] == l[1] && refs[catalog.ChildPrefix+below[0].String()+"/"+below[1].String()] {
					refs[name], more = true, true
					break
				}
			}
		}
	}
	return refs
}

func exists(s objstore.Store, name string) bool {
	_, err := s.Stat(ctx, name)
	return err == nil
}

// checkClean fails unless the store holds exactly the referenced objects.
func checkClean(t *testing.T, m *manage.Manager) {
	t.Helper()
	refs := referenced(t, m)
	seen := map[string]bool{}
	m.Store.List(ctx, "", func(in objstore.Info) error {
		seen[in.Name] = true
		if !refs[in.Name] && !strings.HasPrefix(in.Name, "gc/") {
			t.Errorf("unreferenced object left: %s", in.Name)
		}
		return nil
	})
	for name := range refs {
		if !seen[name] {
			t.Errorf("referenced object missing: %s", name)
		}
	}
}

// count counts the objects, not the collections' own records (gc/).
func count(s objstore.Store) int {
	n := 0
	s.List(ctx, "", func(in objstore.Info) error {
		if !strings.HasPrefix(in.Name, "gc/") {
			n++
		}
		return nil
	})
	return n
}

func TestCollectsExactlyTheGarbage(t *testing.T) {
	s := objstore.NewMem()
	m, clk := setup(s)
	rng := rand.New(rand.NewPCG(1, 2))
	imgA := randBytes(rng, 8*bs)
	if _, _, err := m.Import(ctx, bytes.NewReader(imgA), -1, "A", image.Options{BlockShift: 16}); err != nil {
		t.Fatal(err)
	}
	m.Clone(ctx, "A", "vm1", 0)
	manage.WriteT(t, m, "vm1", 100, randBytes(rng, 3*bs))
	m.Snapshot(ctx, "vm1", "vm1@s")
	manage.WriteT(t, m, "vm1", 50, randBytes(rng, 2*bs))
	m.Clone(ctx, "vm1@s", "c2", 0)
	manage.WriteT(t, m, "c2", 5*bs, randBytes(rng, bs))
	m.Import(ctx, bytes.NewReader(randBytes(rng, 4*bs)), -1, "B", image.Options{BlockShift: 16})
	m.Remove(ctx, "B")
	m.Remove(ctx, "vm1@s") // c2 still needs its blocks
	m.CreateVolume(ctx, "vm3", 4*bs, 16)
	manage.WriteT(t, m, "vm3", 0, randBytes(rng, 4*bs))
	m.Remove(ctx, "vm3")
	want := map[string][]byte{}
	for _, n := range []string{"A", "vm1", "c2", "c3"} {
		if n == "c3" {
			// Another clone whose removal leaves the blocks vm1 wrote before
			// its snapshot referenced by nothing: private garbage.
			m.Snapshot(ctx, "vm1", "vm1@t")
			manage.WriteT(t, m, "vm1", 0, randBytes(rng, 8*bs))
			m.Clone(ctx, "vm1@t", "c3", 0)
			m.Remove(ctx, "vm1@t")
			m.Remove(ctx, "c3")
			continue
		}
		want[n] = manage.ReadT(t, m, n, 0, -1)
	}
	want["vm1"] = manage.ReadT(t, m, "vm1", 0, -1)

	clk.advance(2 * time.Hour)
	before := count(s)
	dry, err := m.GC(ctx, gc.Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if count(s) != before || dry.Deleted.Objects == 0 {
		t.Fatalf("dry run: %d objects before, %d after, report %+v", before, count(s), dry.Deleted)
	}
	rep, err := m.GC(ctx, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted != dry.Deleted || rep.Failed != 0 {
		t.Fatalf("run deleted %+v, dry run said %+v", rep.Deleted, dry.Deleted)
	}
	if rep.Deleted.Content == 0 || rep.Deleted.Private == 0 || rep.Deleted.Heads != 0 {
		t.Fatalf("unexpected deletions %+v", rep.Deleted)
	}
	checkClean(t, m)
	for n, w := range want {
		if !bytes.Equal(manage.ReadT(t, m, n, 0, -1), w) {
			t.Fatalf("%s changed across the collection", n)
		}
	}
	again, _ := m.GC(ctx, gc.Options{})
	if again.Deleted.Objects != 0 {
		t.Fatalf("a second collection deleted %+v", again.Deleted)
	}
}

// TestCrashLeftovers: a writer that crashed in the middle of
// copy-on-write, and an import that crashed before naming its image,
// leave objects that a collection removes once they are old enough.
func TestCrashLeftovers(t *testing.T) {
	mem := objstore.NewCrashable()
	m, clk := setup(mem)
	rng := rand.New(rand.NewPCG(3, 4))
	m.Import(ctx, bytes.NewReader(randBytes(rng, 4*bs)), -1, "img", image.Options{BlockShift: 16})
	m.Clone(ctx, "img", "vm", 0)
	want := manage.ReadT(t, m, "vm", 0, -1)
	v, _, _ := m.Open(ctx, "vm", true)
	v.WriteAt(ctx, []byte("copy-on-write, never flushed"), bs+10, false)
	image.Import(ctx, mem, bytes.NewReader(randBytes(rng, 2*bs)), -1, image.Options{BlockShift: 16}) // no catalog record
	mem.Put(ctx, lease.Name(blockmap.NewID().String()), []byte(`{"term":1}`))                        // a removal interrupted before dropping the lease

	crashed := mem.Crash(rand.New(rand.NewPCG(5, 6)))
	m2, _ := setup(crashed)
	m2.Now, crashed.Now = clk.now, clk.now
	if got := manage.ReadT(t, m2, "vm", 0, -1); !bytes.Equal(got, want) {
		t.Fatal("after the crash the clone does not read its image")
	}
	if rep, _ := m2.GC(ctx, gc.Options{}); rep.Deleted.Objects != 0 {
		t.Fatalf("young leftovers deleted: %+v", rep.Deleted)
	}
	clk.advance(2 * time.Hour)
	rep, err := m2.GC(ctx, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted.Heads != 1 || rep.Deleted.Objects < 3 {
		t.Fatalf("leftovers not collected: %+v", rep.Deleted)
	}
	checkClean(t, m2)
	if !bytes.Equal(manage.ReadT(t, m2, "vm", 0, -1), want) {
		t.Fatal("the clone changed")
	}
}

// TestSweepFailureThenRetry: deletions that fail leave the store
// consistent, and the next collection finishes the work.
func TestSweepFailureThenRetry(t *testing.T) {
	mem := objstore.NewMem()
	f := objstore.NewFaulty(mem)
	m, clk := setup(mem)
	m.Store, m.Catalog = f, manage.New(f).Catalog
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 3; i++ {
		name := fmt.Sprint("img", i)
		m.Import(ctx, bytes.NewReader(randBytes(rng, 4*bs)), -1, name, image.Options{BlockShift: 16})
		m.Remove(ctx, name)
	}
	clk.advance(2 * time.Hour)
	f.Add(objstore.Rule{Op: objstore.OpDelete, Prefix: "blk/", Skip: 2, Err: errors.New("disk on fire")})
	rep, err := m.GC(ctx, gc.Options{})
	if err != nil || rep.Failed == 0 {
		t.Fatalf("collection with failing deletes: %+v, %v", rep, err)
	}
	f.Reset()
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	checkClean(t, m)
}

func TestExclusion(t *testing.T) {
	s := objstore.NewMem()
	m, clk := setup(s)
	h, err := gc.AcquireHold(ctx, s, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 1200*time.Millisecond)
	_, err = m.GC(short, gc.Options{})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("collection while an operation holds it off: %v", err)
	}
	h.Release()
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatalf("collection after the hold was released: %v", err)
	}

	// A collection in progress (its lock) makes operations wait; a lock
	// whose collector died expires.
	lock := fmt.Sprintf(`{"owner":"x","expires":%q}`, clk.now().Add(time.Minute).Format(time.RFC3339Nano))
	s.Put(ctx, "gc/lock", []byte(lock))
	short, cancel = context.WithTimeout(ctx, 1200*time.Millisecond)
	_, err = gc.AcquireHold(short, s, clk.now)
	cancel()
	if err == nil {
		t.Fatal("an operation started while a collection held the lock")
	}
	if _, err := m.GC(ctx, gc.Options{}); !errors.Is(err, gc.ErrBusy) {
		t.Fatalf("second collection: %v", err)
	}
	clk.advance(10 * time.Minute)
	h, err = gc.AcquireHold(ctx, s, clk.now)
	if err != nil {
		t.Fatalf("operation after the dead collector's lock expired: %v", err)
	}
	h.Release()
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatalf("collection taking over an expired lock: %v", err)
	}
}

// TestConcurrent runs writers, snapshot-and-clone, importers and
// repeated collections at once, in rounds of an injected clock: the grace
// period is one round and writers flush within a round, the assumption
// the collector relies on. In every round one collector or one importer
// (of data that partly deduplicates onto garbage) stalls at a random call
// past its lock's or hold's TTL, while the clock moves on and another
// collection runs. Operations whose hold a collection took for dead
// (gc.ErrHoldLost) have their results removed; every other result is
// kept. At the end every volume reads as its oracle, nothing referenced is
// missing and nothing unreferenced is left.
func TestConcurrent(t *testing.T) {
	s := objstore.NewMem()
	m, clk := setup(s)
	const round = gc.MinGrace
	var mu sync.Mutex
	oracle := map[string][]byte{}
	set := func(name string, b []byte) { mu.Lock(); oracle[name] = b; mu.Unlock() }
	var lost []string // results of operations whose hold was lost
	drop := func(names ...string) {
		mu.Lock()
		lost = append(lost, names...)
		mu.Unlock()
	}
	// held runs an operation that takes a hold: nil if it succeeded, or
	// false (and its result dropped) if it lost its hold.
	held := func(err error, names ...string) (bool, error) {
		if errors.Is(err, gc.ErrHoldLost) {
			drop(names...)
			return false, nil
		}
		return err == nil, err
	}
	collect := func(m *manage.Manager) error {
		_, err := m.GC(ctx, gc.Options{Grace: round})
		if errors.Is(err, gc.ErrBusy) || errors.Is(err, gc.ErrLockLost) {
			return nil
		}
		return err
	}
	// Garbage that stalled importers, and imports during a collector's
	// stall, deduplicate onto: made anew in every round.
	garbage := randBytes(rand.New(rand.NewPCG(5, 5)), 4*bs)
	m.Import(ctx, bytes.NewReader(garbage), -1, "g", image.Options{BlockShift: 16})
	m.Remove(ctx, "g")
	clk.advance(round + time.Second)

	for w := 0; w < 3; w++ {
		m.CreateVolume(ctx, fmt.Sprint("w", w), 8*bs, 16)
		set(fmt.Sprint("w", w), make([]byte, 8*bs))
	}
	stalls := 0
	for r := 0; r < 8; r++ {
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		ready := make(chan struct{})
		wg.Add(1)
		go func() { // first, a collector or an importer that stalls past its TTL
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 3))
			late := rng.IntN(2) == 0
			at := 1 + rng.IntN(40)
			calls := 0
			st := newStall(s, func(op, name string) bool {
				switch {
				case late && r%2 == 0: // marked, about to sweep
					return op == "list" && name == ""
				case late: // deduplicated, about to write the map
					return op == "create" && strings.HasSuffix(name, "/head")
				}
				// A deletion stalled after the collector's last check is the
				// window the package doc names: the stall is placed elsewhere.
				if op == "delete" {
					return false
				}
				calls++
				return calls == at
			})
			sm := managerOn(m, st)
			done := make(chan error, 1)
			name := fmt.Sprint("x", r)
			// Half old garbage (deduplicated onto), half new.
			data := append(append([]byte(nil), garbage[:2*bs]...), randBytes(rng, 2*bs)...)
			if r%2 == 0 {
				go func() { done <- collect(sm) }()
			} else {
				go func() {
					_, _, err := sm.Import(ctx, bytes.NewReader(data), -1, name, image.Options{BlockShift: 16})
					done <- err
				}()
			}
			finish := func(err error) {
				if ok, err := held(err, name); ok && r%2 == 1 {
					set(name, data)
				} else if err != nil {
					errs <- err
				}
			}
			select {
			case err := <-done: // finished before the chosen call
				close(ready)
				finish(err)
				return
			case <-st.hit:
			}
			mu.Lock()
			stalls++
			mu.Unlock()
			clk.advance(pastLock)
			if r%2 == 0 {
				// Another host imports onto what the stalled collector may
				// have marked garbage.
				_, _, err := m.Import(ctx, bytes.NewReader(data), -1, name, image.Options{BlockShift: 16})
				if ok, err := held(err, name); ok {
					set(name, data)
				} else if err != nil {
					errs <- err
				}
			}
			if err := collect(m); err != nil {
				errs <- err
			}
			close(ready) // the rest of the round runs while it wakes up
			close(st.release)
			finish(<-done)
		}()
		<-ready
		for w := 0; w < 3; w++ {
			wg.Add(1)
			go func() { // a writer: its own volume, flushing as it goes
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(r), uint64(w)))
				name := fmt.Sprint("w", w)
				v, _, err := m.Open(ctx, name, true)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				data := append([]byte(nil), oracle[name]...)
				mu.Unlock()
				for i := 0; i < 10; i++ {
					off := rng.IntN(len(data) - 100)
					p := randBytes(rng, 1+rng.IntN(min(len(data)-off, 2*bs)))
					if err := v.WriteAt(ctx, p, int64(off), rng.IntN(3) == 0); err != nil {
						errs <- err
					}
					copy(data[off:], p)
				}
				if err := v.Close(ctx); err != nil {
					errs <- err
				}
				set(name, data)
			}()
		}
		wg.Add(2)
		go func() { // snapshot and clone a volume of its own
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 99))
			name := fmt.Sprint("s", r)
			if _, err := m.CreateVolume(ctx, name, 4*bs, 16); err != nil {
				errs <- err
				return
			}
			data := randBytes(rng, 4*bs)
			v, _, _ := m.Open(ctx, name, true)
			v.WriteAt(ctx, data, 0, false)
			v.Close(ctx)
			if r%2 == 1 {
				defer m.Remove(ctx, name) // the snapshot and clone stay valid
			} else {
				set(name, data)
			}
			_, err := m.Snapshot(ctx, name, name+"@1")
			if ok, err := held(err, name+"@1"); !ok {
				if err != nil {
					errs <- err
				}
				return
			}
			set(name+"@1", data)
			_, err = m.Clone(ctx, name+"@1", name+"c", 0)
			if ok, err := held(err, name+"c"); ok {
				set(name+"c", data)
			} else if err != nil {
				errs <- err
			}
		}()
		go func() { // import, sometimes the same data again, and clone it
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r/2), 7))
			data := randBytes(rng, 3*bs)
			name := fmt.Sprint("i", r)
			_, _, err := m.Import(ctx, bytes.NewReader(data), -1, name, image.Options{BlockShift: 16})
			if ok, err := held(err, name); !ok {
				if err != nil {
					errs <- err
				}
				return
			}
			_, err = m.Clone(ctx, name, name+"c", 0)
			if ok, err := held(err, name+"c"); ok {
				set(name+"c", data)
			} else if err != nil {
				errs <- err
			}
			if r%3 == 2 {
				m.Remove(ctx, name)
			} else {
				set(name, data)
			}
		}()
		gcDone := make(chan struct{})
		go func() { // collections, over and over, during the round
			defer close(gcDone)
			for i := 0; i < 3; i++ {
				if err := collect(m); err != nil {
					errs <- err
				}
			}
		}()
		wg.Wait()
		<-gcDone
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", r, err)
		}
		// Garbage for the next round's stalled collector or importer.
		garbage = randBytes(rand.New(rand.NewPCG(uint64(r), 5)), 4*bs)
		name := fmt.Sprint("g", r)
		m.Import(ctx, bytes.NewReader(garbage), -1, name, image.Options{BlockShift: 16})
		m.Remove(ctx, name)
		clk.advance(round + time.Second)
	}
	t.Logf("%d stalls past the TTL; %d results dropped after a lost hold: %v", stalls, len(lost), lost)
	if stalls == 0 {
		t.Fatal("no stall happened: the test tests nothing")
	}
	for _, name := range lost {
		mu.Lock()
		delete(oracle, name)
		mu.Unlock()
		m.Remove(ctx, name)
	}
	clk.advance(2 * round)
	if _, err := m.GC(ctx, gc.Options{Grace: round}); err != nil {
		t.Fatal(err)
	}
	for name, want := range oracle {
		if got := manage.ReadT(t, m, name, 0, -1); !bytes.Equal(got, want) {
			t.Fatalf("%s differs from its oracle", name)
		}
	}
	checkClean(t, m)
	holds(t, s, 0) // none left behind, also by stalled operations
}

// replacer deletes a volume's segment and rewrites the volume (as a
// writer's flush does) just before the collector reads that segment.
type replacer struct {
	objstore.Store
	once   sync.Once
	target string
	fn     func()
}

func (r *replacer) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if name == r.target {
		r.once.Do(r.fn)
	}
	return r.Store.Get(ctx, name)
}

// TestSegmentReplacedWhileMarking: a writer that replaces (and deletes)
// a segment while the collector marks does not make the collection fail
// or lose the new segment's blocks.
func TestSegmentReplacedWhileMarking(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	m.CreateVolume(ctx, "v", 4*bs, 16)
	rng := rand.New(rand.NewPCG(21, 22))
	manage.WriteT(t, m, "v", 0, randBytes(rng, bs))
	checkpoint := func() {
		v, _, err := m.Open(ctx, "v", true)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		v.Close(ctx)
	}
	checkpoint()
	r, _ := m.Lookup(ctx, "v")
	h, _, _ := volume.ReadHead(ctx, mem, r.ID)
	var want []byte
	rs := &replacer{Store: mem, target: h.Segments[0].Name(), fn: func() {
		// A new block changes the map: a new segment, the old one deleted.
		manage.WriteT(t, m, "v", 2*bs, randBytes(rng, bs))
		checkpoint()
		if _, _, err := mem.Get(ctx, h.Segments[0].Name()); !objstore.IsNotExist(err) {
			t.Errorf("the test's writer did not replace the segment: %v", err)
		}
		want = manage.ReadT(t, m, "v", 0, -1)
	}}
	clk.advance(2 * time.Hour)
	if _, err := gc.Run(ctx, rs, gc.Options{Now: clk.now}); err != nil {
		t.Fatalf("collection racing a writer's flush: %v", err)
	}
	if got := manage.ReadT(t, m, "v", 0, -1); !bytes.Equal(got, want) {
		t.Fatal("the volume lost data written during the mark")
	}
}

// TestPartialBlockKept: a partial block (a clone's first small write to
// a block) keeps both its own object and its base, also when nothing
// else references the base any more.
func TestPartialBlockKept(t *testing.T) {
	s := objstore.NewMem()
	m, clk := setup(s)
	rng := rand.New(rand.NewPCG(5, 6))
	m.CreateVolume(ctx, "vm", 4*bs, 16)
	manage.WriteT(t, m, "vm", 0, randBytes(rng, 4*bs))
	if _, err := m.Snapshot(ctx, "vm", "vm@s"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Clone(ctx, "vm@s", "c", 0); err != nil {
		t.Fatal(err)
	}
	manage.WriteT(t, m, "c", bs+100, []byte("a few bytes"))
	// The volume drops the block; the snapshot goes: the clone's partial
	// block is the only reference to the old private object.
	v, _, err := m.Open(ctx, "vm", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Trim(ctx, bs, bs); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, "vm@s"); err != nil {
		t.Fatal(err)
	}
	want := manage.ReadT(t, m, "c", 0, -1)
	r, err := m.Lookup(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	h, _, _ := volume.ReadHead(ctx, s, r.ID)
	es, _ := volume.LoadMap(ctx, s, h)
	if es[1].Kind() != blockmap.Partial {
		t.Fatalf("the clone's block 1 is %v, want a partial block", es[1])
	}
	clk.advance(2 * time.Hour)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{es[1].ObjectName(), es[1].Base().ObjectName()} {
		if _, err := s.Stat(ctx, name); err != nil {
			t.Errorf("%s of the partial block: %v", name, err)
		}
	}
	if !bytes.Equal(manage.ReadT(t, m, "c", 0, -1), want) {
		t.Fatal("the clone changed across the collection")
	}
	checkClean(t, m)
}

// TestRemovedLinkKeptWhileBelowRemains: volume info walks from a volume
// down to what was made from it through the child hints, also through a
// removed snapshot to the clones made from it. So a collection keeps the
// removed snapshot's hint while a clone of it remains, and deletes both
// hints once the clone is removed too.
func TestRemovedLinkKeptWhileBelowRemains(t *testing.T) {
	s := objstore.NewMem()
	m, clk := setup(s)
	if _, err := m.CreateVolume(ctx, "v", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	manage.WriteT(t, m, "v", 0, bytes.Repeat([]byte{1}, 4*bs))
	if _, err := m.Snapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Clone(ctx, "s", "c", 0); err != nil {
		t.Fatal(err)
	}
	v, _ := m.Lookup(ctx, "v")
	sr, _ := m.Lookup(ctx, "s")
	if err := m.Remove(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	hints := func() int {
		n := 0
		s.List(ctx, catalog.ChildPrefix, func(objstore.Info) error { n++; return nil })
		return n
	}
	clk.advance(2 * time.Hour)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	ids, err := m.Catalog.ChildIDs(ctx, v.ID)
	if err != nil || len(ids) != 1 || ids[0] != sr.ID {
		t.Fatalf("children of v after removing s, with s's clone left: %v, %v; want s", ids, err)
	}
	checkClean(t, m)
	if err := m.Remove(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Hour)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	if n := hints(); n != 0 {
		t.Fatalf("%d child hints left once nothing made from v remains", n)
	}
	checkClean(t, m)
}

// TestWriteLogKept: a collection keeps the write log a head names (it
// holds flushed writes that are in no block yet) and deletes one no head
// names (left by a writer that crashed after its checkpoint's head swap,
// before deleting it).
func TestWriteLogKept(t *testing.T) {
	s := objstore.NewMem()
	m, clk := setup(s)
	rng := rand.New(rand.NewPCG(7, 8))
	m.CreateVolume(ctx, "vm", 4*bs, 16)
	manage.WriteT(t, m, "vm", 0, randBytes(rng, 4*bs))
	if _, err := m.Snapshot(ctx, "vm", "vm@s"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Clone(ctx, "vm@s", "c", 0); err != nil {
		t.Fatal(err)
	}
	r, err := m.Lookup(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	v, err := volume.Open(ctx, s, r.ID, volume.OpenOptions{Writable: true, Log: true})
	if err != nil {
		t.Fatal(err)
	}
	p := randBytes(rng, 4096)
	if err := v.WriteAt(ctx, p, bs+100, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	logs := v.Head().Logs
	if len(logs) != 1 {
		t.Fatalf("head logs %v", logs)
	}
	named := blockmap.LogName(r.ID, logs[0].Epoch, logs[0].Seq)
	orphan := blockmap.LogName(r.ID, logs[0].Epoch, logs[0].Seq+12345)
	if _, err := s.Put(ctx, orphan, []byte("a log no head names")); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Hour)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	if !exists(s, named) {
		t.Fatalf("the write log the head names was deleted")
	}
	if exists(s, orphan) {
		t.Errorf("a write log no head names was kept")
	}
	w, err := volume.Open(ctx, s, r.ID, volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p))
	if err := w.ReadAt(ctx, got, bs+100); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, p) {
		t.Fatal("the flushed write is lost across the collection")
	}
	checkClean(t, m)
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(s, named) {
		t.Errorf("Close left the checkpointed log")
	}
	checkClean(t, m)
}

// segOnly is a store without in-place writes whose Stat is fresh (S3):
// write logs are stored as segments.
type segOnly struct{ objstore.Store }

func (segOnly) FreshStat() bool { return true }

// TestWriteLogSegmentsKept (issue 13): on a store without in-place
// writes, the collector keeps the segments of a log a head names and
// deletes those of a log no head names.
func TestWriteLogSegmentsKept(t *testing.T) {
	mem := objstore.NewMem()
	_, clk := setup(mem)
	s := segOnly{mem}
	m := manage.New(s)
	m.Now = clk.now
	rng := rand.New(rand.NewPCG(7, 9))
	m.CreateVolume(ctx, "vm", 4*bs, 16)
	r, err := m.Lookup(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	v, err := volume.Open(ctx, s, r.ID, volume.OpenOptions{Writable: true, Log: true})
	if err != nil {
		t.Fatal(err)
	}
	p := randBytes(rng, 4096)
	for i := range 2 {
		if err := v.WriteAt(ctx, p, int64(i*bs+100), false); err != nil {
			t.Fatal(err)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	logs := v.Head().Logs
	if len(logs) != 1 {
		t.Fatalf("head logs %v", logs)
	}
	var named []string
	s.List(ctx, blockmap.LogName(r.ID, logs[0].Epoch, logs[0].Seq)+"/", func(in objstore.Info) error {
		named = append(named, in.Name)
		return nil
	})
	if len(named) != 2 {
		t.Fatalf("segments of the named log: %v, want 2", named)
	}
	orphan := blockmap.LogSegmentName(r.ID, logs[0].Epoch, logs[0].Seq+12345, 0)
	if _, err := s.Put(ctx, orphan, []byte("a segment of a log no head names")); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Hour)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range named {
		if !exists(mem, name) {
			t.Fatalf("segment %s of the log the head names was deleted", name)
		}
	}
	if exists(mem, orphan) {
		t.Errorf("a segment of a log no head names was kept")
	}
	w, err := volume.Open(ctx, s, r.ID, volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p))
	if err := w.ReadAt(ctx, got, bs+100); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, p) {
		t.Fatal("the flushed write is lost across the collection")
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// keepLogs is segOnly whose deletes of write log segments and indexes do
// nothing: what a writer frees stays behind for the collector, as after a
// crash between its head swap and its deletes.
type keepLogs struct{ segOnly }

func (k keepLogs) Delete(ctx context.Context, name string) error {
	switch blockmap.ParseName(name).Kind {
	case blockmap.LogObject, blockmap.IndexObject:
		return nil
	}
	return k.segOnly.Delete(ctx, name)
}

// TestWriteLogIndexKept (issue 13): the collector keeps the write log
// index a head names and every segment it references, of logs the head no
// longer names too, and deletes an index no head names and the segments
// no index references (dropping the index's marks fails it: the
// referenced segments are deleted and the volume reads other bytes).
func TestWriteLogIndexKept(t *testing.T) {
	mem := objstore.NewMem()
	_, clk := setup(mem)
	s := keepLogs{segOnly{mem}}
	m := manage.New(s)
	m.Now = clk.now
	rng := rand.New(rand.NewPCG(7, 10))
	m.CreateVolume(ctx, "vm", 4*bs, 16)
	r, err := m.Lookup(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	open := func() *volume.Volume {
		v, err := volume.Open(ctx, s, r.ID, volume.OpenOptions{Writable: true, Log: true})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	write := func(v *volume.Volume, p []byte, off int64) {
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	p1, p2, p3 := randBytes(rng, 4096), randBytes(rng, 4096), randBytes(rng, 4096)
	v := open()
	l1 := v.Head().Logs[0]
	write(v, p1, bs+100) // segment A
	write(v, p2, 100)    // segment B
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h1, _, err := volume.ReadHead(ctx, s, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if h1.Index.IsZero() || len(h1.Logs) != 0 {
		t.Fatalf("closed head: index %+v, logs %v", h1.Index, h1.Logs)
	}
	segA := blockmap.LogSegmentName(r.ID, l1.Epoch, l1.Seq, 0)
	var segB string
	mem.List(ctx, blockmap.LogName(r.ID, l1.Epoch, l1.Seq)+"/", func(in objstore.Info) error {
		if in.Name != segA {
			segB = in.Name
		}
		return nil
	})
	v = open()
	write(v, p3, bs+100) // segment C: A holds nothing live now
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h2, _, err := volume.ReadHead(ctx, s, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	idx1 := blockmap.IndexName(r.ID, h1.Index.Epoch, h1.Index.Seq)
	idx2 := blockmap.IndexName(r.ID, h2.Index.Epoch, h2.Index.Seq)
	for _, name := range []string{segA, segB, idx1, idx2} {
		if !exists(mem, name) {
			t.Fatalf("%s missing before the collection", name)
		}
	}
	clk.advance(2 * time.Hour)
	gm := manage.New(segOnly{mem}) // (the collector's deletes happen)
	gm.Now = clk.now
	if _, err := gm.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	if !exists(mem, segB) || !exists(mem, idx2) {
		t.Fatalf("the collector deleted what the index references (segment %v, index %v)", exists(mem, segB), exists(mem, idx2))
	}
	if exists(mem, segA) || exists(mem, idx1) {
		t.Errorf("the collector kept what no index references (segment %v, index %v)", exists(mem, segA), exists(mem, idx1))
	}
	w, err := volume.Open(ctx, s, r.ID, volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p   []byte
		off int64
	}{{p2, 100}, {p3, bs + 100}} {
		got := make([]byte, len(c.p))
		if err := w.ReadAt(ctx, got, c.off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, c.p) {
			t.Fatalf("the indexed write at %d is lost across the collection", c.off)
		}
	}
}
