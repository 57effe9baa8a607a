package gc_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// onWrite calls fn once, before the first write that match accepts: a
// process that stalls there.
type onWrite struct {
	objstore.Store
	match func(op, name string) bool
	fn    func()
	once  sync.Once
}

func (s *onWrite) at(op, name string) {
	if s.match(op, name) {
		s.once.Do(s.fn)
	}
}

func (s *onWrite) Put(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.at("put", name)
	return s.Store.Put(ctx, name, b)
}

func (s *onWrite) Create(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.at("create", name)
	return s.Store.Create(ctx, name, b)
}

func (s *onWrite) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (objstore.Version, error) {
	s.at("swap", name)
	return s.Store.Swap(ctx, name, b, old)
}

// checkNamed fails unless name, if it exists, names a volume whose head
// and map are there.
func checkNamed(t *testing.T, m *manage.Manager, name string) bool {
	t.Helper()
	r, err := m.Lookup(ctx, name)
	if err != nil {
		return false
	}
	h, _, err := volume.ReadHead(ctx, m.Store, r.ID)
	if err != nil {
		t.Fatalf("%q names %s, and its volume is gone: %v", name, r.ID, err)
	}
	if _, err := volume.LoadMap(ctx, m.Store, h); err != nil {
		t.Fatalf("%q: %v", name, err)
	}
	return true
}

// TestCreateStalledPastGrace: a create that stalls between writing the
// volume's head and creating its record, for longer than the grace
// period, while a collection runs (which deletes the head: young no
// more, and no record names it), must not leave a name that names
// nothing: it fails, and the name is not there.
func TestCreateStalledPastGrace(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	late := &onWrite{Store: mem,
		match: func(op, name string) bool { return op == "create" && name == "cat/name/late" },
		fn: func() {
			clk.advance(2 * time.Hour)
			if _, err := gc.Run(ctx, mem, gc.Options{Now: clk.now}); err != nil {
				t.Error(err)
			}
		}}
	ml := manage.New(late)
	ml.Now = clk.now
	_, err := ml.CreateVolume(ctx, "late", 4*bs, 16)
	if err != nil && !errors.Is(err, gc.ErrHoldLost) {
		t.Fatal(err)
	}
	named := checkNamed(t, m, "late")
	if err == nil && !named {
		t.Fatal("the create succeeded, and the name is not there")
	}
	if err != nil && named {
		t.Fatalf("the create failed (%v), and the name is there", err)
	}
}

// TestRenameStalledPastHold: a rename that stalls while it creates the
// new record, past its hold on collections, while a collection that
// took the hold for dead lists the records before the new one exists
// and reads the old one after the rename deleted it, must not lose the
// volume: the rename finds its hold lost and undoes itself.
func TestRenameStalledPastHold(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	if _, err := m.CreateVolume(ctx, "a", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Hour)
	gst := newStall(mem, func(op, name string) bool { return op == "get" && strings.HasPrefix(name, "cat/name/a") })
	var res chan result
	late := &onWrite{Store: mem,
		match: func(op, name string) bool { return op == "create" && name == "cat/name/b" },
		fn: func() {
			clk.advance(pastLock)
			res = runAsync(gst, clk)
			<-gst.hit // listed the records, reading a's
		}}
	ml := manage.New(late)
	ml.Now = clk.now
	err := ml.Rename(ctx, "a", "b")
	close(gst.release)
	if r := <-res; r.err != nil {
		t.Fatal(r.err)
	}
	if err != nil && !errors.Is(err, gc.ErrHoldLost) {
		t.Fatal(err)
	}
	a, b := checkNamed(t, m, "a"), checkNamed(t, m, "b")
	if a == b || b != (err == nil) {
		t.Fatalf("rename: %v; then a is named: %v, b: %v", err, a, b)
	}
}

// TestCloneStalledPastGrace: a clone that stalls past its hold and past
// the grace period, while a collection deletes its new head and its
// hints (older than the grace period, and no record yet), removes the
// record it then creates: its hints cannot find it any more.
func TestCloneStalledPastGrace(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	if _, err := m.CreateVolume(ctx, "a", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Snapshot(ctx, "a", "a@1"); err != nil {
		t.Fatal(err)
	}
	late := &onWrite{Store: mem,
		match: func(op, name string) bool { return op == "create" && name == "cat/name/c" },
		fn: func() {
			clk.advance(2 * time.Hour)
			if _, err := gc.Run(ctx, mem, gc.Options{Now: clk.now}); err != nil {
				t.Error(err)
			}
		}}
	ml := manage.New(late)
	ml.Now = clk.now
	if _, err := ml.Clone(ctx, "a@1", "c", 0); !errors.Is(err, gc.ErrHoldLost) {
		t.Fatalf("clone: %v", err)
	}
	if checkNamed(t, m, "c") {
		t.Fatal("the clone failed, and its name is there")
	}
}

var errDied = errors.New("test: process died")

// stallThenDie runs stall once after the first write that stallAfter
// accepts, and fails every write after the first that dieAfter accepts:
// a process that stalled there, then died there.
type stallThenDie struct {
	objstore.Store
	stallAfter, dieAfter func(name string) bool
	stall                func()
	once                 sync.Once
	mu                   sync.Mutex
	dead                 bool
}

func (s *stallThenDie) write(name string, w func() error) error {
	s.mu.Lock()
	dead := s.dead
	s.mu.Unlock()
	if dead {
		return errDied
	}
	err := w()
	if s.stallAfter(name) {
		s.once.Do(s.stall)
	}
	if err == nil && s.dieAfter(name) {
		s.mu.Lock()
		s.dead = true
		s.mu.Unlock()
	}
	return err
}

func (s *stallThenDie) Put(ctx context.Context, name string, b []byte) (v objstore.Version, err error) {
	err = s.write(name, func() error { v, err = s.Store.Put(ctx, name, b); return err })
	return v, err
}

func (s *stallThenDie) Create(ctx context.Context, name string, b []byte) (v objstore.Version, err error) {
	err = s.write(name, func() error { v, err = s.Store.Create(ctx, name, b); return err })
	return v, err
}

func (s *stallThenDie) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (v objstore.Version, err error) {
	err = s.write(name, func() error { v, err = s.Store.Swap(ctx, name, b, old); return err })
	return v, err
}

func (s *stallThenDie) Delete(ctx context.Context, name string) error {
	return s.write(name, func() error { return s.Store.Delete(ctx, name) })
}

func (s *stallThenDie) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	return s.write(name, func() error { return s.Store.DeleteVersion(ctx, name, old) })
}

// TestCreateStalledThenDied: a create that stalls past its hold and the
// grace period after writing the head (a collection deletes it), and
// dies right after it would create the record (before it can find out
// and remove it), leaves no name naming the deleted head: it checks its
// hold before it creates the record.
func TestCreateStalledThenDied(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	late := &stallThenDie{Store: mem,
		stallAfter: func(name string) bool { return strings.HasPrefix(name, "vol/") && strings.HasSuffix(name, "/head") },
		dieAfter:   func(name string) bool { return name == "cat/name/late" },
		stall: func() {
			clk.advance(2 * time.Hour)
			if _, err := gc.Run(ctx, mem, gc.Options{Now: clk.now}); err != nil {
				t.Error(err)
			}
		}}
	ml := manage.New(late)
	ml.Now = clk.now
	if _, err := ml.CreateVolume(ctx, "late", 4*bs, 16); err == nil {
		t.Fatal("the create succeeded")
	}
	checkNamed(t, m, "late")
}
