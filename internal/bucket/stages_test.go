package bucket_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/objstore"
)

// write is one write an operation made: its name, its data, and the
// writes that had returned (were durable) when it started.
type write struct {
	name   string
	data   []byte
	before map[int]bool
}

// stageStore runs the writes of one operation as stages: each write
// waits, before it goes to the store, until every write of its stage has
// started, so that an operation that makes them one after another never
// ends (the test fails after a minute instead). stage names the stage of
// a write from its name, and want[i] is the number of writes of stage i.
// With this, which writes had returned when another started is decided by
// the code under test, not by the scheduler.
type stageStore struct {
	objstore.Store
	t     *testing.T
	stage func(name string) int
	want  []int

	mu      sync.Mutex
	cond    *sync.Cond
	on      bool
	started []int
	done    map[int]bool
	writes  []write
}

func newStageStore(t *testing.T, s objstore.Store) *stageStore {
	st := &stageStore{Store: s, t: t}
	st.cond = sync.NewCond(&st.mu)
	return st
}

// watch starts recording the writes of stages want, named by stage.
func (s *stageStore) watch(stage func(string) int, want ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.on, s.stage, s.want = true, stage, want
	s.started, s.done, s.writes = make([]int, len(want)), map[int]bool{}, nil
}

// stop stops recording and returns the writes.
func (s *stageStore) stop() []write {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.on = false
	return s.writes
}

func (s *stageStore) write(name string, data []byte, fn func() error) error {
	s.mu.Lock()
	if !s.on {
		s.mu.Unlock()
		return fn()
	}
	i := len(s.writes)
	before := map[int]bool{}
	for j := range s.done {
		before[j] = true
	}
	s.writes = append(s.writes, write{name: name, data: slices.Clone(data), before: before})
	st := s.stage(name)
	if st < 0 || st >= len(s.want) {
		s.mu.Unlock()
		return fmt.Errorf("stageStore: unexpected write %s", name)
	}
	s.started[st]++
	s.cond.Broadcast()
	deadline := time.AfterFunc(time.Minute, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	start := time.Now()
	for s.started[st] < s.want[st] && time.Since(start) < time.Minute {
		s.cond.Wait()
	}
	deadline.Stop()
	if s.started[st] < s.want[st] {
		s.mu.Unlock()
		return fmt.Errorf("stageStore: write %s waited in vain for the other %d writes of its stage %d: the writes are made one after another",
			name, s.want[st]-s.started[st], st)
	}
	s.mu.Unlock()
	err := fn()
	s.mu.Lock()
	if err == nil {
		s.done[i] = true
	}
	s.mu.Unlock()
	return err
}

func (s *stageStore) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	var v objstore.Version
	err := s.write(name, data, func() (err error) { v, err = s.Store.Put(ctx, name, data); return err })
	return v, err
}

func (s *stageStore) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	var v objstore.Version
	err := s.write(name, data, func() (err error) { v, err = s.Store.Create(ctx, name, data); return err })
	return v, err
}

func (s *stageStore) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	var v objstore.Version
	err := s.write(name, data, func() (err error) { v, err = s.Store.Swap(ctx, name, data, old); return err })
	return v, err
}

func (s *stageStore) Delete(ctx context.Context, name string) error {
	return s.write(name, nil, func() error { return s.Store.Delete(ctx, name) })
}

func (s *stageStore) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	return s.write(name, nil, func() error { return s.Store.DeleteVersion(ctx, name, old) })
}

// kindStage returns a stage function: the stage of each kind of object.
func kindStage(stages map[blockmap.ObjectKind]int) func(string) int {
	return func(name string) int {
		if st, ok := stages[blockmap.ParseName(name).Kind]; ok {
			return st
		}
		return -1
	}
}

// stages is the length of the longest chain of writes each made after
// the one before had returned: the durable writes an operation waits for
// one after another.
func stages(ws []write) int {
	depth := make([]int, len(ws))
	longest := 0
	for i, w := range ws {
		depth[i] = 1
		for j := range w.before {
			depth[i] = max(depth[i], depth[j]+1)
		}
		longest = max(longest, depth[i])
	}
	return longest
}

// twoBlocks returns two blocks of random data.
func twoBlocks(seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	p := make([]byte, 2*bs)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

// An UploadPart waits for two durable stages, one after the other: its
// blocks and its map's segment together, then its map's head and its
// record together (before: blocks, segment, head, record, one after
// another). A PutObject for three: its blocks and segment, its head, its
// record, which makes the object visible and so comes last.
func TestUploadPartStages(t *testing.T) {
	ss := newStageStore(t, objstore.NewMem())
	b := &bucket.Store{S: ss, BlockShift: 16, MinPart: bs}
	if err := b.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	id, err := b.CreateUpload(ctx, "bkt", "key", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ss.watch(kindStage(map[blockmap.ObjectKind]int{blockmap.ContentObject: 0, blockmap.SegmentObject: 0,
		blockmap.HeadObject: 1, blockmap.PartRecord: 1}), 3, 2)
	if _, err := b.UploadPart(ctx, "bkt", id, 1, bytes.NewReader(twoBlocks(1)), 2*bs, nil); err != nil {
		t.Fatal(err)
	}
	if n := stages(ss.stop()); n != 2 {
		t.Errorf("UploadPart: %d durable stages one after another, want 2", n)
	}

	ss.watch(kindStage(map[blockmap.ObjectKind]int{blockmap.ContentObject: 0, blockmap.SegmentObject: 0,
		blockmap.HeadObject: 1, blockmap.ObjectRecord: 2}), 3, 1, 1)
	if _, err := b.PutObject(ctx, "bkt", "obj", bytes.NewReader(twoBlocks(2)), 2*bs, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	ws := ss.stop()
	if n := stages(ws); n != 3 {
		t.Errorf("PutObject: %d durable stages one after another, want 3", n)
	}
	for i, w := range ws {
		if blockmap.ParseName(w.name).Kind == blockmap.ObjectRecord && len(w.before) != len(ws)-1 {
			t.Errorf("PutObject wrote its record %s before %d other writes had returned", ws[i].name, len(ws)-1-len(w.before))
		}
	}
}

// crashImages calls fn with every store a crash during ws could leave:
// base with each set of ws's writes that holds, with each write, every
// write that had returned when it started.
func crashImages(t *testing.T, base *objstore.Mem, ws []write, fn func(img *objstore.Mem, all bool)) {
	t.Helper()
	if len(ws) > 12 {
		t.Fatalf("%d writes: too many to try every crash", len(ws))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	images := 0
	for set := 0; set < 1<<len(ws); set++ {
		closed := true
		for i, w := range ws {
			for j := range w.before {
				if set&(1<<i) != 0 && set&(1<<j) == 0 {
					closed = false
				}
			}
		}
		if !closed {
			continue
		}
		img := base.Crash(rng)
		for i, w := range ws {
			if set&(1<<i) == 0 {
				continue
			}
			if w.data == nil {
				t.Fatalf("write %s is a delete: not expected", w.name)
			}
			if _, err := img.Put(ctx, w.name, w.data); err != nil {
				t.Fatal(err)
			}
		}
		images++
		fn(img, set == 1<<len(ws)-1)
	}
	t.Logf("%d writes, %d crash images", len(ws), images)
}

// collect runs a collection that takes every unreferenced object for
// garbage (its clock a day ahead).
func collect(t *testing.T, s objstore.Store) {
	t.Helper()
	later := func() time.Time { return time.Now().Add(24 * time.Hour) }
	if _, err := gc.Run(ctx, s, gc.Options{Now: later}); err != nil {
		t.Fatalf("collection after the crash: %v", err)
	}
}

// A crash at any point of an UploadPart leaves an upload that a
// collection handles, and whose completion refuses the part (ErrBadPart)
// or, if the UploadPart had finished, makes the object of the parts'
// bytes; once the part is uploaded again, the upload completes. Never an
// object over a map that is missing.
func TestUploadPartCrash(t *testing.T) {
	m := objstore.NewCrashable()
	ss := newStageStore(t, m)
	b := &bucket.Store{S: ss, BlockShift: 16, MinPart: bs}
	if err := b.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	id, err := b.CreateUpload(ctx, "bkt", "key", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := twoBlocks(1), twoBlocks(2)
	part1, err := b.UploadPart(ctx, "bkt", id, 1, bytes.NewReader(p1), 2*bs, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := m.Crash(rand.New(rand.NewPCG(3, 4)))
	ss.watch(kindStage(map[blockmap.ObjectKind]int{blockmap.ContentObject: 0, blockmap.SegmentObject: 0,
		blockmap.HeadObject: 1, blockmap.PartRecord: 1}), 3, 2)
	part2, err := b.UploadPart(ctx, "bkt", id, 2, bytes.NewReader(p2), 2*bs, nil)
	if err != nil {
		t.Fatal(err)
	}
	ws := ss.stop()
	list := []bucket.CompletePart{{Number: 1, ETag: part1.ETag}, {Number: 2, ETag: part2.ETag}}
	want := append(slices.Clone(p1), p2...)
	crashImages(t, base, ws, func(img *objstore.Mem, all bool) {
		collect(t, img)
		bi := &bucket.Store{S: img, BlockShift: 16, MinPart: bs}
		if _, err := bi.ListParts(ctx, "bkt", id); err != nil {
			t.Fatalf("ListParts after the crash: %v", err)
		}
		obj, err := bi.CompleteUpload(ctx, "bkt", id, list)
		switch {
		case all && err != nil:
			t.Fatalf("complete after the whole UploadPart: %v", err)
		case !all && !errors.Is(err, bucket.ErrBadPart):
			t.Fatalf("complete after a crash within UploadPart: %v, want ErrBadPart", err)
		case !all:
			if _, err := bi.UploadPart(ctx, "bkt", id, 2, bytes.NewReader(p2), 2*bs, nil); err != nil {
				t.Fatal(err)
			}
			if obj, err = bi.CompleteUpload(ctx, "bkt", id, list); err != nil {
				t.Fatalf("complete after the part is uploaded again: %v", err)
			}
		}
		collect(t, img)
		checkObject(t, bi, obj.Key, want)
	})
}

// A crash at any point of a PutObject leaves no object or the whole
// object, and a store that a collection handles.
func TestPutObjectCrash(t *testing.T) {
	m := objstore.NewCrashable()
	ss := newStageStore(t, m)
	b := &bucket.Store{S: ss, BlockShift: 16}
	if err := b.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	base := m.Crash(rand.New(rand.NewPCG(3, 4)))
	ss.watch(kindStage(map[blockmap.ObjectKind]int{blockmap.ContentObject: 0, blockmap.SegmentObject: 0,
		blockmap.HeadObject: 1, blockmap.ObjectRecord: 2}), 3, 1, 1)
	data := twoBlocks(5)
	if _, err := b.PutObject(ctx, "bkt", "obj", bytes.NewReader(data), 2*bs, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	crashImages(t, base, ss.stop(), func(img *objstore.Mem, all bool) {
		collect(t, img)
		bi := &bucket.Store{S: img, BlockShift: 16}
		if _, err := bi.GetObject(ctx, "bkt", "obj"); !all && !errors.Is(err, bucket.ErrNoKey) {
			t.Fatalf("object after a crash within PutObject: %v, want ErrNoKey", err)
		}
		if all {
			checkObject(t, bi, "obj", data)
		}
	})
}

// checkObject checks that key of bucket bkt reads as want.
func checkObject(t *testing.T, b *bucket.Store, key string, want []byte) {
	t.Helper()
	obj, err := b.GetObject(ctx, "bkt", key)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := b.Read(ctx, obj, 0, obj.Size, &got); err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("%s reads %d bytes, not the %d uploaded", key, got.Len(), len(want))
	}
}
