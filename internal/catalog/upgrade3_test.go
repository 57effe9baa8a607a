package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// index is the list index of a store that keeps one (as RADOS does):
// the names of the catalog's objects, which only writers that know of it
// set.
type index struct {
	mu      sync.Mutex
	keys    map[string]bool
	repairs int
}

// indexed is a store with a list index: it lists the catalog from its
// keys alone, so that an object written without its key (by a binary of
// format 2) is not listed until RepairIndex.
type indexed struct {
	objstore.Store
	idx *index
	// crashRepair, if set, fails RepairIndex after it repaired: a crash
	// between the index's build and the marker's swap.
	crashRepair bool
}

func newIndexed(s objstore.Store) *indexed {
	return &indexed{Store: s, idx: &index{keys: map[string]bool{}}}
}

func (s *indexed) set(name string) {
	if strings.HasPrefix(name, "cat/") {
		s.idx.mu.Lock()
		s.idx.keys[name] = true
		s.idx.mu.Unlock()
	}
}

func (s *indexed) unset(ctx context.Context, name string) {
	s.idx.mu.Lock()
	delete(s.idx.keys, name)
	s.idx.mu.Unlock()
	if _, err := s.Store.Stat(ctx, name); err == nil {
		s.set(name)
	}
}

func (s *indexed) Put(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.set(name)
	return s.Store.Put(ctx, name, b)
}

func (s *indexed) Create(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.set(name)
	return s.Store.Create(ctx, name, b)
}

func (s *indexed) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (objstore.Version, error) {
	s.set(name)
	return s.Store.Swap(ctx, name, b, old)
}

func (s *indexed) Delete(ctx context.Context, name string) error {
	err := s.Store.Delete(ctx, name)
	s.unset(ctx, name)
	return err
}

func (s *indexed) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	err := s.Store.DeleteVersion(ctx, name, old)
	s.unset(ctx, name)
	return err
}

func (s *indexed) ListNamesAfter(ctx context.Context, prefix, after string, fn func(string) error) error {
	s.idx.mu.Lock()
	var names []string
	for k := range s.idx.keys {
		if strings.HasPrefix(k, prefix) && k > after {
			names = append(names, k)
		}
	}
	s.idx.mu.Unlock()
	sort.Strings(names)
	for _, n := range names {
		if err := fn(n); err != nil {
			return err
		}
	}
	return nil
}

func (s *indexed) RepairIndex(ctx context.Context) error {
	var names []string
	if err := objstore.ListNames(ctx, s.Store, "cat/", func(n string) error { names = append(names, n); return nil }); err != nil {
		return err
	}
	for _, n := range names {
		s.set(n)
	}
	s.idx.mu.Lock()
	s.idx.repairs++
	s.idx.mu.Unlock()
	if s.crashRepair {
		return errCrash
	}
	return nil
}

// formatTwo loads testdata/format2.json: a store written by this package
// at format 2 (every object of it: marker, records, hints), as a binary
// of format 2 leaves it on a store with an index: without its keys.
func formatTwo(t *testing.T, s objstore.Store) map[string]blockmap.ID {
	t.Helper()
	b, err := os.ReadFile("testdata/format2.json")
	if err != nil {
		t.Fatal(err)
	}
	var objs map[string]string
	if err := json.Unmarshal(b, &objs); err != nil {
		t.Fatal(err)
	}
	want := map[string]blockmap.ID{}
	for name, content := range objs {
		if _, err := s.Put(ctx, name, []byte(content)); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(name, NamePrefix) {
			var r Record
			json.Unmarshal([]byte(content), &r)
			want[r.Name] = r.ID
		}
	}
	return want
}

// listed returns what List finds (which upgrades the store first).
func listed(t *testing.T, s objstore.Store) map[string]blockmap.ID {
	t.Helper()
	p, err := New(s).List(ctx, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]blockmap.ID{}
	for _, r := range p.Records {
		got[r.Name] = r.ID
	}
	return got
}

func checkFormat3(t *testing.T, s objstore.Store, want map[string]blockmap.ID) {
	t.Helper()
	if got := listed(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	b, _, err := s.Get(ctx, ObjectName)
	if err != nil || string(b) != `{"format":4,"records":[]}` {
		t.Fatalf("marker %s %v, want format 4", b, err)
	}
	check(t, s, want)
}

// decodeFormat2 is the rule by which binaries of format 2 read the
// catalog object (decodeCatalog as it was at format 2), kept to prove
// what they say of a store at format 3.
func decodeFormat2(b []byte) (*marker, error) {
	var d marker
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	switch d.Format {
	case 1:
		if d.Upgrading != nil {
			return nil, fmt.Errorf("%w: format 1 with records being upgraded", ErrCorrupt)
		}
	case 2:
		if len(d.Records) > 0 {
			return nil, fmt.Errorf("%w: format 2 with records in the catalog object", ErrCorrupt)
		}
	default:
		return nil, fmt.Errorf("%w: format %d; this program reads formats 1 and 2 (a newer archip wrote it: use that)", ErrCorrupt, d.Format)
	}
	return &d, nil
}

// TestFormat2UpgradedWithIndex: a store of format 2 whose records have no
// keys in the store's index (a binary of format 2 wrote them) is brought
// to the current format (4) on first use, its index built first, so that a listing
// names every record; binaries of format 2 then refuse it.
func TestFormat2UpgradedWithIndex(t *testing.T) {
	s := newIndexed(objstore.NewMem())
	want := formatTwo(t, s.Store)
	if got := listed(t, s); len(got) != len(want) {
		t.Fatalf("listed %v after the first use, want %v", got, want)
	}
	checkFormat3(t, s, want)
	if s.idx.repairs != 1 {
		t.Fatalf("%d index repairs, want 1", s.idx.repairs)
	}
	rep, err := New(s).Upgrade(ctx)
	if err != nil || rep.From != Format || rep.To != Format || s.idx.repairs != 1 {
		t.Fatalf("second upgrade: %+v %v (%d repairs)", rep, err, s.idx.repairs)
	}
	b, _, _ := s.Get(ctx, ObjectName)
	_, err = decodeFormat2(b)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "format 4; this program reads formats 1 and 2 (a newer archip wrote it: use that)") {
		t.Fatalf("a binary of format 2 reads the upgraded store with %v", err)
	}
}

func TestFormat2UpgradeReport(t *testing.T) {
	s := newIndexed(objstore.NewMem())
	want := formatTwo(t, s.Store)
	rep, err := New(s).Upgrade(ctx)
	if err != nil || rep.From != 2 || rep.To != Format || rep.Upgraded != 0 {
		t.Fatalf("%+v %v", rep, err)
	}
	checkFormat3(t, s, want)
}

// TestFormat2UpgradedWithoutIndex: on a store without an index the
// upgrade is the marker's swap.
func TestFormat2UpgradedWithoutIndex(t *testing.T) {
	s := objstore.NewMem()
	want := formatTwo(t, s)
	if _, err := New(s).Lookup(ctx, "base"); err != nil {
		t.Fatal(err)
	}
	checkFormat3(t, s, want)
}

// TestFormat1UpgradedTo3WithIndex: format 1 goes to 3 through 2, its
// index built before the marker says 3.
func TestFormat1UpgradedTo3WithIndex(t *testing.T) {
	s := newIndexed(objstore.NewMem())
	recs := oldRecords()
	formatOne(t, s.Store, recs)
	rep, err := New(s).Upgrade(ctx)
	if err != nil || rep.From != 1 || rep.To != Format || rep.Upgraded != len(recs) || s.idx.repairs != 1 {
		t.Fatalf("%+v %v (%d repairs)", rep, err, s.idx.repairs)
	}
	want := map[string]blockmap.ID{}
	for _, r := range recs {
		want[r.Name] = r.ID
	}
	checkFormat3(t, s, want)
}

// TestUpgrade3Concurrent: upgraders of one store of format 2 at once, and
// writers of format 3 among them; every name is listed afterwards.
func TestUpgrade3Concurrent(t *testing.T) {
	for _, from := range []int{1, 2} {
		t.Run(fmt.Sprint(from), func(t *testing.T) {
			mem := objstore.NewMem()
			idx := &index{keys: map[string]bool{}}
			want := map[string]blockmap.ID{}
			if from == 2 {
				want = formatTwo(t, mem)
			} else {
				recs := oldRecords()
				formatOne(t, mem, recs)
				for _, r := range recs {
					want[r.Name] = r.ID
				}
			}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := New(&indexed{Store: mem, idx: idx})
					if i%2 == 0 {
						rep, err := c.Upgrade(ctx)
						if err != nil || rep.To != Format {
							t.Errorf("upgrade: %+v %v", rep, err)
						}
						return
					}
					r := Record{Name: fmt.Sprint("new", i), ID: blockmap.NewID(), Kind: KindVolume}
					if err := c.Create(ctx, r); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					want[r.Name] = r.ID
					mu.Unlock()
				}()
			}
			wg.Wait()
			checkFormat3(t, &indexed{Store: mem, idx: idx}, want)
		})
	}
}

// TestUpgrade3Crashes: an upgrade crashed after each of its writes, or
// between the index's build and the marker's swap, leaves a store that
// the next use brings to the current format (4) with every name listed.
func TestUpgrade3Crashes(t *testing.T) {
	for _, from := range []int{1, 2} {
		for _, applied := range []bool{false, true} {
			for k := 0; ; k++ {
				mem := objstore.NewMem()
				want := map[string]blockmap.ID{}
				if from == 2 {
					want = formatTwo(t, mem)
				} else {
					recs := oldRecords()
					formatOne(t, mem, recs)
					for _, r := range recs {
						want[r.Name] = r.ID
					}
				}
				cs := &crashAfter{Store: mem, applyLast: applied}
				cs.left.Store(int64(k))
				s := &indexed{Store: cs, idx: &index{keys: map[string]bool{}}}
				_, err := New(s).Upgrade(ctx)
				if err != nil && !errors.Is(err, errCrash) {
					t.Fatal(err)
				}
				b, _, _ := mem.Get(ctx, ObjectName)
				if d, _ := decodeCatalog(b); d.Format == Format && s.idx.repairs == 0 {
					t.Fatalf("from %d, k=%d: format %d before the index was built", from, k, Format)
				}
				checkFormat3(t, &indexed{Store: mem, idx: s.idx}, want)
				if err == nil {
					break
				}
			}
		}
	}
	// Crashed after the index's build, before the swap.
	mem := objstore.NewMem()
	want := formatTwo(t, mem)
	s := newIndexed(mem)
	s.crashRepair = true
	if _, err := New(s).Upgrade(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("upgrade crashed in the repair: %v", err)
	}
	if b, _, _ := mem.Get(ctx, ObjectName); string(b) != `{"format":2,"records":[]}` {
		t.Fatalf("marker after a crash in the repair: %s", b)
	}
	s.crashRepair = false
	checkFormat3(t, s, want)
}

// TestUpgrade3FindsWrappedIndex: the index is repaired through wrappers
// (metrics, fault injection), as the store of a command comes.
func TestUpgrade3FindsWrappedIndex(t *testing.T) {
	s := newIndexed(objstore.NewMem())
	want := formatTwo(t, s.Store)
	w := objstore.NewFaulty(objstore.Observe(s, func(objstore.Op) objstore.Probe { return nil }))
	if _, err := New(w).Upgrade(ctx); err != nil || s.idx.repairs != 1 {
		t.Fatalf("upgrade: %v (%d repairs)", err, s.idx.repairs)
	}
	checkFormat3(t, s, want)
}
