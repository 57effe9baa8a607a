package catalog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// readOnlyWrapper is readOnly that passes the wrapped store's
// capabilities on (the file store's ordered listing).
type readOnlyWrapper struct{ readOnly }

func (r readOnlyWrapper) Capabilities() objstore.Caps { return objstore.CapabilitiesOf(r.Store) }
func (r readOnlyWrapper) Unwrap() objstore.Store      { return r.Store }

// RepairIndex fails as the file store's repair does on a read-only
// store (it writes keys).
func (readOnlyWrapper) RepairIndex(context.Context) error { return errRO }
func (readOnlyWrapper) ForwardsIndex()                    {}

// TestFormat3OnNewFileStoreReadOnly: a file store made by a binary that
// keeps its index, whose catalog was then written by binaries of format
// 3 (which keep none: the store's first catalog write was theirs), is
// read as it is by a process that cannot upgrade it, and its listing
// names every record: the index is not taken for complete before a
// binary that keeps it wrote the catalog. (Before: a new store was marked
// indexed at its creation, and the listing read an index without keys.)
func TestFormat3OnNewFileStoreReadOnly(t *testing.T) {
	dir := t.TempDir()
	want := formatThreeFile(t, dir)
	// As if this binary had made the store before them: its index has
	// what it had then (nothing), and its marker if a new store has one.
	f, err := objstore.OpenFile(filepath.Join(t.TempDir(), "new"), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.Root(), "idx")); err == nil {
		if err := os.Rename(filepath.Join(f.Root(), "idx"), filepath.Join(dir, "idx")); err != nil {
			t.Fatal(err)
		}
	}
	g, err := objstore.OpenFile(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := listed(t, readOnlyWrapper{readOnly{g, new(int)}}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	// A process that can write upgrades it, and lists from the index.
	if got := listed(t, g); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("upgraded, listed %v, want %v", got, want)
	}
	if names, indexed := orderedNames(t, g); len(names) != len(want) || !indexed {
		t.Fatalf("upgraded, the index lists %v (complete %v), want %d names", names, indexed, len(want))
	}
}
