package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
)

// readOnly is a store whose writes fail as those of a read-only store
// (or of read-only credentials) do.
type readOnly struct {
	objstore.Store
	swaps *int
}

var errRO = fmt.Errorf("%w: test", objstore.ErrReadOnly)

func (readOnly) Put(context.Context, string, []byte) (objstore.Version, error) {
	return 0, errRO
}
func (readOnly) Create(context.Context, string, []byte) (objstore.Version, error) {
	return 0, errRO
}
func (s readOnly) Swap(context.Context, string, []byte, objstore.Version) (objstore.Version, error) {
	*s.swaps++
	return 0, errRO
}
func (readOnly) Delete(context.Context, string) error { return errRO }
func (readOnly) DeleteVersion(context.Context, string, objstore.Version) error {
	return errRO
}

// TestFormat2ReadOnlyReads: a store of format 2 that this process cannot
// write (a read-only store, read-only credentials) is read as it is by
// the commands that only read (volume list, info), as binaries of format
// 2 read it: the upgrade's write fails, and the layout of format 2 is
// that of format 3, trying the upgrade once per process (on RADOS a try
// walks the pool). Writes still fail, with the store's error. Before,
// every read failed with the upgrade's error.
func TestFormat2ReadOnlyReads(t *testing.T) {
	mem := objstore.NewMem()
	want := formatTwo(t, mem)
	ro := readOnly{mem, new(int)}
	if got := listed(t, ro); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	c := New(ro)
	for name := range want {
		if _, err := c.Lookup(ctx, name); err != nil {
			t.Fatalf("lookup %q: %v", name, err)
		}
	}
	if *ro.swaps != 2 {
		t.Fatalf("%d upgrades tried, want one per process (2)", *ro.swaps)
	}
	if _, err := c.Remove(ctx, "base"); !errors.Is(err, objstore.ErrReadOnly) {
		t.Fatalf("remove on a read-only store: %v, want ErrReadOnly", err)
	}
	if b, _, _ := mem.Get(ctx, ObjectName); string(b) != `{"format":2,"records":[]}` {
		t.Fatalf("marker %s", b)
	}
	// Once writable, the next command upgrades.
	checkFormat3(t, mem, want)
}

// TestUpgrade3RepairsPoolsIndex: on a store of several pools, the upgrade
// from format 2 repairs the index of the metadata backend (the catalog's)
// before the marker's swap, and no pool's.
func TestUpgrade3RepairsPoolsIndex(t *testing.T) {
	meta := newIndexed(objstore.NewMem())
	want := formatTwo(t, meta.Store)
	pool := newIndexed(objstore.NewMem())
	s, err := pools.New(meta, []pools.Named{{Name: "a", Store: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := New(s).Upgrade(ctx); err != nil || meta.idx.repairs != 1 || pool.idx.repairs != 0 {
		t.Fatalf("upgrade: %v (%d repairs of the metadata's index, %d of the pool's)", err, meta.idx.repairs, pool.idx.repairs)
	}
	checkFormat3(t, meta, want)
}

// TestUpgrade3ErrorSaysUpgrade: an upgrade from format 2 that cannot swap
// the marker (a read-only store) says that the upgrade failed and what to
// do, keeping the store's error. Before, the bare store error.
func TestUpgrade3ErrorSaysUpgrade(t *testing.T) {
	mem := objstore.NewMem()
	formatTwo(t, mem)
	_, err := New(readOnly{mem, new(int)}).Upgrade(ctx)
	if !errors.Is(err, objstore.ErrReadOnly) || !strings.HasPrefix(err.Error(), "catalog: upgrading to format 4") || !strings.Contains(err.Error(), "archip store upgrade") {
		t.Fatalf("upgrade of a read-only store: %v", err)
	}
}
