package volume

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// NewTestVolume creates and opens a writable volume of size bytes with
// 2^shift-byte blocks (0: default) on s, for tests of this and other
// packages. The volume is closed when the test ends.
func NewTestVolume(t testing.TB, s objstore.Store, size uint64, shift uint8) *Volume {
	t.Helper()
	ctx := context.Background()
	id, err := Create(ctx, s, CreateOptions{Size: size, BlockShift: shift})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close(ctx) })
	return v
}

// SmallShift is the smallest block size, which keeps test volumes small
// while crossing many block boundaries.
const SmallShift = blockmap.MinBlockShift

// LateStore wraps a store with in-place writes (objstore.RangeWriter and
// Syncer) for tests: once armed, its next in-place write of a data
// object times out (objstore.ErrTimeout) and lands only when Land is
// called, as on RADOS with an operation timeout (the OSD applies the
// write when it resumes).
type LateStore struct {
	objstore.Store
	mu     sync.Mutex
	armed  bool
	land   chan struct{} // closed to let the late write land
	landed chan struct{} // closed once it did
}

// NewLateStore wraps s, which must have in-place writes.
func NewLateStore(s objstore.Store) *LateStore {
	return &LateStore{Store: s, land: make(chan struct{}), landed: make(chan struct{})}
}

// Arm makes the next in-place write of a data object late.
func (s *LateStore) Arm() {
	s.mu.Lock()
	s.armed = true
	s.mu.Unlock()
}

// Land lets the late write land and returns once it has.
func (s *LateStore) Land() {
	close(s.land)
	<-s.landed
}

func (s *LateStore) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	rw := s.Store.(objstore.RangeWriter)
	s.mu.Lock()
	late := s.armed && strings.Contains(name, "/d/")
	s.armed = s.armed && !late
	s.mu.Unlock()
	if !late {
		return rw.WriteAt(ctx, name, p, off)
	}
	p = append([]byte(nil), p...)
	go func() {
		<-s.land
		rw.WriteAt(context.Background(), name, p, off)
		close(s.landed)
	}()
	return objstore.ErrTimeout
}

func (s *LateStore) Sync(ctx context.Context, name string) error {
	return s.Store.(objstore.Syncer).Sync(ctx, name)
}
