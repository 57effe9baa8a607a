package manage_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// rendezvousStore makes the first Create of an object whose name ends in
// headSuffix and the first write of an object under hintPrefix wait for
// each other (up to wait): run one after the other, the first waits the
// timeout out.
type rendezvousStore struct {
	objstore.Store
	t                      *testing.T
	headSuffix, hintPrefix string
	head, hint             chan struct{}
	headOnce, hintOnce     sync.Once
}

const rendezvousWait = 10 * time.Second

func (s *rendezvousStore) Capabilities() objstore.Caps { return objstore.CapabilitiesOf(s.Store) }
func (s *rendezvousStore) Unwrap() objstore.Store      { return s.Store }

func (s *rendezvousStore) meet(name string) {
	if strings.HasPrefix(name, s.hintPrefix) {
		s.hintOnce.Do(func() {
			close(s.hint)
			select {
			case <-s.head:
			case <-time.After(rendezvousWait):
				s.t.Errorf("the catalog hint %s was written without waiting for the new head", name)
			}
		})
	}
}

func (s *rendezvousStore) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	s.meet(name)
	return s.Store.Put(ctx, name, data)
}

func (s *rendezvousStore) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	s.meet(name)
	if strings.HasPrefix(name, "vol/") && strings.HasSuffix(name, s.headSuffix) {
		s.headOnce.Do(func() {
			close(s.head)
			select {
			case <-s.hint:
			case <-time.After(rendezvousWait):
				s.t.Errorf("the new head %s was created without waiting for the catalog's hints", name)
			}
		})
	}
	return s.Store.Create(ctx, name, data)
}

// TestCreateCloneHintsMeanwhile: as TestSnapshotHintsMeanwhile, for a
// create (its ID hint) and a clone (its ID and lineage hints).
func TestCreateCloneHintsMeanwhile(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewMem()
	m := manage.New(mem)
	if _, err := m.CreateVolume(ctx, "v", 1<<30, 0); err != nil {
		t.Fatal(err)
	}
	snap, err := m.Snapshot(ctx, "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	meet := func() *manage.Manager {
		return manage.New(&rendezvousStore{Store: mem, t: t, headSuffix: "/head", hintPrefix: catalog.IDPrefix,
			head: make(chan struct{}), hint: make(chan struct{})})
	}
	if _, err := meet().CreateVolume(ctx, "w", 1<<30, 0); err != nil {
		t.Fatal(err)
	}
	c, err := meet().Clone(ctx, "s", "c", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"w", "c"} {
		r, err := m.Lookup(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := m.Catalog.ByID(ctx, r.ID); err != nil || got.Name != name {
			t.Fatalf("ByID(%s) = %+v, %v", r.ID, got, err)
		}
	}
	kids, err := m.Catalog.Children(ctx, snap.ID)
	if err != nil || len(kids) != 1 || kids[0].ID != c.ID {
		t.Fatalf("Children = %+v, %v", kids, err)
	}
}

// TestSnapshotHintsMeanwhile: a snapshot is a chain of durable writes
// (issue 12: 9-17 ms at 10^6 records on the file store, one fsync or
// more per write). The catalog's hints for the snapshot (its ID hint and
// its lineage hint) need only its ID, not its head: they are written
// while the volume is snapshotted, not after, one round of writes fewer
// on the critical path. The record stays last: it is the commit point.
func TestSnapshotHintsMeanwhile(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewMem()
	m := manage.New(mem)
	if _, err := m.CreateVolume(ctx, "v", 1<<30, 0); err != nil {
		t.Fatal(err)
	}
	rs := &rendezvousStore{Store: mem, t: t, headSuffix: "/head", hintPrefix: catalog.IDPrefix,
		head: make(chan struct{}), hint: make(chan struct{})}
	m = manage.New(rs)
	rec, err := m.Snapshot(ctx, "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Catalog.ByID(ctx, rec.ID)
	if err != nil || got.Name != "s" {
		t.Fatalf("ByID(%s) = %+v, %v", rec.ID, got, err)
	}
	v, _ := m.Lookup(ctx, "v")
	kids, err := m.Catalog.Children(ctx, v.ID)
	if err != nil || len(kids) != 1 || kids[0].Name != "s" {
		t.Fatalf("Children = %+v, %v", kids, err)
	}
}

// writeCounter counts the writes to a store, by operation and name.
type writeCounter struct {
	objstore.Store
	mu     sync.Mutex
	writes []string
}

func (s *writeCounter) Capabilities() objstore.Caps { return objstore.CapabilitiesOf(s.Store) }
func (s *writeCounter) Unwrap() objstore.Store      { return s.Store }

func (s *writeCounter) note(op, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes = append(s.writes, op+" "+name)
}

func (s *writeCounter) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.writes
	s.writes = nil
	return w
}

func (s *writeCounter) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	s.note("put", name)
	return s.Store.Put(ctx, name, data)
}

func (s *writeCounter) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	s.note("create", name)
	return s.Store.Create(ctx, name, data)
}

func (s *writeCounter) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	s.note("swap", name)
	return s.Store.Swap(ctx, name, data, old)
}

func (s *writeCounter) Delete(ctx context.Context, name string) error {
	s.note("delete", name)
	return s.Store.Delete(ctx, name)
}

func (s *writeCounter) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	s.note("delete", name)
	return s.Store.DeleteVersion(ctx, name, old)
}

// TestSnapshotWrites counts the durable writes of a snapshot of a volume
// nobody has open (issue 12): each is an fsync or more on the file
// store. Ten are needed: the gc hold (create, delete), the lease (take,
// release), the volume's head (a new epoch at open, then the one after
// the snapshot), the snapshot's head, the catalog's two hints and the
// record. The open for the snapshot writes nothing else: no write log,
// which it would create, name in the head and drop again at close
// without ever appending to it.
func TestSnapshotWrites(t *testing.T) {
	ctx := context.Background()
	for _, store := range []string{"mem", "file"} {
		t.Run(store, func(t *testing.T) {
			var s objstore.Store = objstore.NewMem()
			if store == "file" {
				f, err := objstore.OpenFile(t.TempDir(), true)
				if err != nil {
					t.Fatal(err)
				}
				s = f
			}
			wc := &writeCounter{Store: s}
			m := manage.New(wc)
			if _, err := m.CreateVolume(ctx, "v", 1<<30, 0); err != nil {
				t.Fatal(err)
			}
			v, _, err := m.Open(ctx, "v", true)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.WriteAt(ctx, []byte("data"), 0, false); err != nil {
				t.Fatal(err)
			}
			if err := v.Close(ctx); err != nil {
				t.Fatal(err)
			}
			for i, snap := range []string{"s1", "s2"} {
				wc.take()
				if _, err := m.Snapshot(ctx, "v", snap); err != nil {
					t.Fatal(err)
				}
				if w := wc.take(); len(w) != 10 {
					t.Errorf("snapshot %d made %d writes, want 10: %q", i+1, len(w), w)
				}
			}
		})
	}
}
