package volume

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// openCounting counts the handles opened on a Mem store.
type openCounting struct {
	*objstore.Mem
	opens atomic.Int64
}

func (s *openCounting) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	s.opens.Add(1)
	return s.Mem.OpenHandle(ctx, name, create, writable)
}

// TestHandleCacheHoldsCloneAndBases: a clone's writer keeps open both the
// objects it writes and the snapshot's objects their first writes read
// from, so that once every block was written once, writes in place open
// nothing. (With room for 256 handles, a clone of 256 blocks or more,
// 1 GiB of 4 MiB blocks, evicted one handle per write: each write then
// listed and opened its object again.)
func TestHandleCacheHoldsCloneAndBases(t *testing.T) {
	const blocks = 300
	s := &openCounting{Mem: objstore.NewMem()}
	id := newClone(t, s, blocks)
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	if v.handles == nil {
		t.Fatal("the store's handles are not used")
	}
	if v.handles.max < 2*blocks {
		t.Skipf("RLIMIT_NOFILE %d leaves room for %d handles a volume", fdLimit(), v.handles.max)
	}
	p := pattern(4096, 9)
	for pass := range 2 {
		s.opens.Store(0)
		for b := range int64(blocks) {
			if err := v.WriteAt(ctx, p, b*bs+100, false); err != nil {
				t.Fatal(err)
			}
		}
		if n := s.opens.Load(); pass == 1 && n != 0 {
			t.Errorf("writes in place into the %d blocks of a clone written once opened %d handles, want none", blocks, n)
		}
	}
}

// fdLimited fails opens with EMFILE while limit handles are open on it,
// as the file store does past RLIMIT_NOFILE, and, with wholeToo, writes
// of whole objects too (which need a descriptor on the file store).
type fdLimited struct {
	*objstore.Mem
	limit    atomic.Int64
	open     atomic.Int64
	wholeToo bool
}

type countedHandle struct {
	objstore.Handle
	s    *fdLimited
	once sync.Once
}

func (h *countedHandle) Close() error {
	h.once.Do(func() { h.s.open.Add(-1) })
	return h.Handle.Close()
}

func (s *fdLimited) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	if s.open.Add(1) > s.limit.Load() {
		s.open.Add(-1)
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EMFILE}
	}
	h, err := s.Mem.OpenHandle(ctx, name, create, writable)
	if err != nil {
		s.open.Add(-1)
		return nil, err
	}
	return &countedHandle{Handle: h, s: s}, nil
}

// TestHandleCacheShedsOnEMFILE: two clones served by one process whose
// descriptors run out before their caches fill (20 busy clones of 1,024
// handles each, or a container's limit of 4,096) still write every
// block: an open that fails with EMFILE closes the idle handles the
// process's volumes keep and is tried again, instead of failing the
// guest's write with an I/O error.
func TestHandleCacheShedsOnEMFILE(t *testing.T) {
	const blocks = 60
	s := &fdLimited{Mem: objstore.NewMem()}
	s.limit.Store(1 << 30)
	ids := []blockmap.ID{newClone(t, s, blocks), newClone(t, s, blocks)}
	s.limit.Store(s.open.Load() + 50)
	vs, p := writeEachBlock(t, s, ids, blocks)
	for _, v := range vs {
		for b := range int64(blocks) {
			wantBytes(t, v, b*bs+100, p, "a written block")
		}
	}
}

// TestHandleBudget: a volume keeps at most a quarter of the process's
// descriptors open (ulimit -n 1024: 256; a container's 4,096: 1,024).
func TestHandleBudget(t *testing.T) {
	for _, c := range []struct {
		limit uint64
		want  int
	}{{0, openHandles}, {1 << 20, openHandles}, {4096, 1024}, {1024, 256}, {20, 16}} {
		if got := handleBudget(openHandles, c.limit); got != c.want {
			t.Errorf("handleBudget(%d, %d) = %d, want %d", openHandles, c.limit, got, c.want)
		}
	}
}

// TestHandleCacheFileStoreLowNOFILE: the same on the file store, in a
// child process whose RLIMIT_NOFILE is lowered, once two clones are
// open, to 100 descriptors more than it has open: their writers reach
// the limit (EMFILE from the store's listing, open or create) and shed.
func TestHandleCacheFileStoreLowNOFILE(t *testing.T) {
	if os.Getenv("ARCHIP_NOFILE_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHandleCacheFileStoreLowNOFILE$", "-test.count=1")
		cmd.Env = append(os.Environ(), "ARCHIP_NOFILE_CHILD=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	const blocks = 60
	s, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	var vs []*Volume
	for range 2 {
		v, err := Open(ctx, s, newClone(t, s, blocks), OpenOptions{Writable: true})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close(ctx)
		vs = append(vs, v)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	lim := uint64(len(fds) + 100)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: lim, Max: lim}); err != nil {
		t.Fatal(err)
	}
	p := pattern(4096, 9)
	for b := range int64(blocks) {
		for i, v := range vs {
			if err := v.WriteAt(ctx, p, b*bs+100, false); err != nil {
				t.Fatalf("clone %d, block %d: %v", i, b, err)
			}
		}
	}
	for i, v := range vs {
		if err := v.Flush(ctx); err != nil {
			t.Fatalf("clone %d: flush: %v", i, err)
		}
		for b := range int64(blocks) {
			wantBytes(t, v, b*bs+100, p, "a written block")
		}
	}
}

func (s *fdLimited) full(name string) error {
	if s.wholeToo && s.open.Load() >= s.limit.Load() {
		return &fs.PathError{Op: "open", Path: name, Err: syscall.EMFILE}
	}
	return nil
}

func (s *fdLimited) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if err := s.full(name); err != nil {
		return 0, err
	}
	return s.Mem.Put(ctx, name, data)
}

func (s *fdLimited) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if err := s.full(name); err != nil {
		return 0, err
	}
	return s.Mem.Create(ctx, name, data)
}

func (s *fdLimited) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	if err := s.full(name); err != nil {
		return 0, err
	}
	return s.Mem.Swap(ctx, name, data, old)
}

// TestHandleCachesLeaveDescriptorsForFlush: the volumes of a process keep
// at most half its descriptors open between them, so that what needs a
// descriptor outside the caches (a flush's map and head writes, the NBD
// server's accepts) still gets one: four clones over a store whose
// writes of whole objects fail with EMFILE once 80 handles are open,
// each writing every block, then flushing.
func TestHandleCachesLeaveDescriptorsForFlush(t *testing.T) {
	const blocks, limit = 60, 80
	defer setProcessHandles(limit / 2)()
	s := &fdLimited{Mem: objstore.NewMem(), wholeToo: true}
	s.limit.Store(1 << 30)
	var ids []blockmap.ID
	for range 4 {
		ids = append(ids, newClone(t, s, blocks))
	}
	s.limit.Store(s.open.Load() + limit)
	writeEachBlock(t, s, ids, blocks)
}

func setProcessHandles(n int64) func() {
	old := processHandles.Load()
	processHandles.Store(n)
	return func() { processHandles.Store(old) }
}

// writeEachBlock opens the clones ids writable (closed at the test's
// end), writes 4 KiB into each of their first blocks, in turn across the
// clones, and flushes each; it returns them and the bytes written.
func writeEachBlock(t *testing.T, s objstore.Store, ids []blockmap.ID, blocks int64) ([]*Volume, []byte) {
	t.Helper()
	var vs []*Volume
	for _, id := range ids {
		v, err := Open(ctx, s, id, OpenOptions{Writable: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close(ctx) })
		vs = append(vs, v)
	}
	p := pattern(4096, 9)
	for b := range blocks {
		for i, v := range vs {
			if err := v.WriteAt(ctx, p, b*bs+100, false); err != nil {
				t.Fatalf("clone %d, block %d: %v", i, b, err)
			}
		}
	}
	for i, v := range vs {
		if err := v.Flush(ctx); err != nil {
			t.Fatalf("clone %d: flush: %v", i, err)
		}
	}
	return vs, p
}
