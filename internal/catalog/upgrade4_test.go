package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
)

// formatThreeFile makes a file store at dir as binaries of format 3 leave
// it: the objects of testdata/format3.json (a store written at format 3:
// the marker, records, hints) and no list index (idx/, which they do not
// keep), and returns the records.
func formatThreeFile(t *testing.T, dir string) map[string]blockmap.ID {
	t.Helper()
	f, err := objstore.OpenFile(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("testdata/format3.json")
	if err != nil {
		t.Fatal(err)
	}
	var objs map[string]string
	if err := json.Unmarshal(b, &objs); err != nil {
		t.Fatal(err)
	}
	want := map[string]blockmap.ID{}
	for name, content := range objs {
		if _, err := f.Put(ctx, name, []byte(content)); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(name, NamePrefix) {
			var r Record
			json.Unmarshal([]byte(content), &r)
			want[r.Name] = r.ID
		}
	}
	if err := os.RemoveAll(filepath.Join(dir, "idx")); err != nil {
		t.Fatal(err)
	}
	return want
}

// decodeFormat3 is the rule by which binaries of format 3 read the
// catalog object (decodeCatalog as it was at format 3), kept to prove
// what they say of a store at format 4.
func decodeFormat3(b []byte) (*marker, error) {
	var d marker
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	switch d.Format {
	case 1, 2, 3:
	default:
		return nil, fmt.Errorf("%w: format %d; this program reads formats 1 to %d (a newer archip wrote it: use that)", ErrCorrupt, d.Format, 3)
	}
	return &d, nil
}

// orderedNames lists the catalog's names from the file store's ordered
// listing, and whether its index is complete (its marker, idx/indexed:
// the listing reads the index).
func orderedNames(t *testing.T, f *objstore.File) ([]string, bool) {
	t.Helper()
	var got []string
	err := f.ListNamesAfter(ctx, NamePrefix, "", func(n string) error { got = append(got, n); return nil })
	if err != nil {
		t.Fatal(err)
	}
	_, err = os.Stat(filepath.Join(f.Root(), "idx", "indexed"))
	return got, err == nil
}

// TestFormat3FileUpgraded: a file store of format 3 (written by binaries
// that do not keep its index) is brought to format 4 on first use, its
// index repaired first, so that the ordered listing reads the index and
// names every record; binaries of format 3 then refuse the store.
// (Before: format 3 was this package's, and the file store had no index.)
func TestFormat3FileUpgraded(t *testing.T) {
	dir := t.TempDir()
	want := formatThreeFile(t, dir)
	f, err := objstore.OpenFile(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if names, indexed := orderedNames(t, f); len(names) != len(want) || indexed {
		t.Fatalf("before the upgrade: %v listed, index complete %v", names, indexed)
	}
	if got := listed(t, f); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	b, _, err := f.Get(ctx, ObjectName)
	if err != nil || string(b) != `{"format":4,"records":[]}` {
		t.Fatalf("marker %s %v, want format 4", b, err)
	}
	names, indexed := orderedNames(t, f)
	if len(names) != len(want) || !indexed {
		t.Fatalf("after the upgrade, the listing is %v (index complete %v), want %d names", names, indexed, len(want))
	}
	check(t, f, want)
	_, err = decodeFormat3(b)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "format 4; this program reads formats 1 to 3 (a newer archip wrote it: use that)") {
		t.Fatalf("a binary of format 3 reads the upgraded store with %v", err)
	}
	rep, err := New(f).Upgrade(ctx)
	if err != nil || rep.From != Format || rep.To != Format {
		t.Fatalf("second upgrade: %+v %v", rep, err)
	}
}

// TestFormat3UpgradeRepairsFileIndexOnly: the step from format 3 repairs
// the file store's index, through pools and wrappers, and no other
// store's (RADOS's index is unchanged since format 3).
func TestFormat3UpgradeRepairsFileIndexOnly(t *testing.T) {
	dir := t.TempDir()
	want := formatThreeFile(t, dir)
	f, err := objstore.OpenFile(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	pool := newIndexed(objstore.NewMem())
	s, err := pools.New(objstore.NewFaulty(f), []pools.Named{{Name: "a", Store: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rep, err := New(s).Upgrade(ctx)
	if err != nil || rep.From != 3 || rep.To != Format || pool.idx.repairs != 0 {
		t.Fatalf("upgrade: %+v %v (%d repairs of the pool's index)", rep, err, pool.idx.repairs)
	}
	if names, indexed := orderedNames(t, f); len(names) != len(want) || !indexed {
		t.Fatalf("the index lists %v, want %d names", names, len(want))
	}
	other := newIndexed(objstore.NewMem())
	other.Put(ctx, ObjectName, []byte(`{"format":3,"records":[]}`))
	if rep, err := New(other).Upgrade(ctx); err != nil || rep.From != 3 || other.idx.repairs != 0 {
		t.Fatalf("upgrade of a store with another index: %+v %v (%d repairs)", rep, err, other.idx.repairs)
	}
}
