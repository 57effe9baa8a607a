package volume

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// fenceMem is one client of a memory store that can fence
// (objstore.Fencer): once fenced, its writes fail with objstore.ErrFenced.
// It counts the Stats of map heads.
type fenceMem struct {
	*objstore.Mem
	id        string
	fenced    *sync.Map
	headStats atomic.Int64
}

func (m *fenceMem) FenceID(context.Context) (string, error) { return m.id, nil }
func (m *fenceMem) Fence(_ context.Context, id string) error {
	m.fenced.Store(id, true)
	return nil
}

func (m *fenceMem) refused() error {
	if _, ok := m.fenced.Load(m.id); ok {
		return fmt.Errorf("%w (%s)", objstore.ErrFenced, m.id)
	}
	return nil
}

func (m *fenceMem) Stat(ctx context.Context, name string) (objstore.Info, error) {
	if strings.HasSuffix(name, "/head") {
		m.headStats.Add(1)
	}
	return m.Mem.Stat(ctx, name)
}

func (m *fenceMem) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := m.refused(); err != nil {
		return err
	}
	return m.Mem.WriteAt(ctx, name, p, off)
}

func (m *fenceMem) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	if err := m.refused(); err != nil {
		return 0, err
	}
	return m.Mem.Swap(ctx, name, data, old)
}

func (m *fenceMem) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if err := m.refused(); err != nil {
		return 0, err
	}
	return m.Mem.Create(ctx, name, data)
}

func (m *fenceMem) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	h, err := m.Mem.OpenHandle(ctx, name, create, writable)
	if err != nil {
		return nil, err
	}
	return fenceHandle{h, m}, nil
}

type fenceHandle struct {
	objstore.Handle
	m *fenceMem
}

func (h fenceHandle) WriteAt(p []byte, off int64) error {
	if err := h.m.refused(); err != nil {
		return err
	}
	return h.Handle.WriteAt(p, off)
}

// TestFencedFlushReadsNoHead: a writer whose store fences it at a takeover
// flushes and FUA-writes in place without reading the head; once a taker
// fenced it, its writes fail with ErrFenced and change nothing the taker
// reads.
func TestFencedFlushReadsNoHead(t *testing.T) {
	for _, fua := range []bool{false, true} {
		t.Run(fmt.Sprintf("fua=%v", fua), func(t *testing.T) {
			ctx := context.Background()
			mem, fenced := objstore.NewMem(), &sync.Map{}
			sa, sb := &fenceMem{Mem: mem, id: "a", fenced: fenced}, &fenceMem{Mem: mem, id: "b", fenced: fenced}
			id, err := Create(ctx, sa, CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
			if err != nil {
				t.Fatal(err)
			}
			a, err := Open(ctx, sa, id, OpenOptions{Writable: true, Fenced: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.WriteAt(ctx, []byte("first"), 0, true); err != nil {
				t.Fatal(err)
			}
			before := sa.headStats.Load()
			if err := a.WriteAt(ctx, []byte("again"), 0, fua); err != nil {
				t.Fatal(err)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if n := sa.headStats.Load() - before; n != 0 {
				t.Fatalf("an in-place write and flush of a fenced writer read the head %d times", n)
			}
			// b takes over: fences a, then opens in a new epoch.
			if err := sb.Fence(ctx, "a"); err != nil {
				t.Fatal(err)
			}
			b, err := Open(ctx, sb, id, OpenOptions{Writable: true, NewEpoch: true, Fenced: true})
			if err != nil {
				t.Fatal(err)
			}
			err = a.WriteAt(ctx, []byte("late!"), 0, fua)
			if err == nil && !fua {
				err = a.Flush(ctx)
			}
			if !errors.Is(err, ErrFenced) || !errors.Is(err, objstore.ErrFenced) {
				t.Fatalf("a's write after b fenced it: %v, want ErrFenced", err)
			}
			if err := a.Flush(ctx); !errors.Is(err, ErrFenced) {
				t.Fatalf("a's next flush: %v, want ErrFenced", err)
			}
			got := make([]byte, 5)
			if err := b.ReadAt(ctx, got, 0); err != nil || string(got) != "again" {
				t.Fatalf("b reads %q, %v", got, err)
			}
		})
	}
}

// TestUnfencedFlushReadsHead: without Fenced (or on a store that cannot
// fence) the in-place flush still checks the head.
func TestUnfencedFlushReadsHead(t *testing.T) {
	ctx := context.Background()
	s := &fenceMem{Mem: objstore.NewMem(), id: "a", fenced: &sync.Map{}}
	id, err := Create(ctx, s, CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	a, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WriteAt(ctx, []byte("first"), 0, true); err != nil {
		t.Fatal(err)
	}
	before := s.headStats.Load()
	if err := a.WriteAt(ctx, []byte("again"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.headStats.Load() - before; n != 1 {
		t.Fatalf("an in-place flush of a writer not fenced read the head %d times, want 1", n)
	}
}
