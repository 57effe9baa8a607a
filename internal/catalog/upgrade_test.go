package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// formatOne writes a format 1 catalog of recs, as main before format 2.
func formatOne(t *testing.T, s objstore.Store, recs []Record) {
	t.Helper()
	b, _ := json.MarshalIndent(marker{Format: 1, Records: recs}, "", " ")
	if _, err := s.Put(ctx, ObjectName, b); err != nil {
		t.Fatal(err)
	}
}

func oldRecords() []Record {
	a := Record{Name: "a", ID: blockmap.NewID(), Kind: KindVolume, Created: time.Unix(1e9, 0).UTC()}
	snap := Record{Name: "a@1", ID: blockmap.NewID(), Kind: KindSnapshot, Origin: a.ID}
	clone := Record{Name: "c", ID: blockmap.NewID(), Kind: KindVolume, Parent: snap.ID}
	img := Record{Name: "img", ID: blockmap.NewID(), Kind: KindImage}
	return []Record{a, snap, clone, img}
}

func checkUpgraded(t *testing.T, s objstore.Store, recs []Record) {
	t.Helper()
	want := map[string]blockmap.ID{}
	for _, r := range recs {
		want[r.Name] = r.ID
	}
	check(t, s, want)
	c := New(s)
	for _, r := range recs {
		got, _ := c.Lookup(ctx, r.Name)
		if *got != r {
			t.Fatalf("%q upgraded to %+v, want %+v", r.Name, got, r)
		}
		if !r.Parent.IsZero() || !r.Origin.IsZero() {
			p := r.Parent
			if p.IsZero() {
				p = r.Origin
			}
			kids, err := c.Children(ctx, p)
			if err != nil || len(kids) != 1 || kids[0].Name != r.Name {
				t.Fatalf("children of %s: %v %v", p, kids, err)
			}
		}
	}
	b, _, _ := s.Get(ctx, ObjectName)
	if string(b) != `{"format":4,"records":[]}` {
		t.Fatalf("catalog object after the upgrade: %s", b)
	}
}

func TestUpgradeOnFirstUse(t *testing.T) {
	s := objstore.NewMem()
	recs := oldRecords()
	formatOne(t, s, recs)
	if _, err := New(s).Lookup(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	checkUpgraded(t, s, recs)
	// What a format 1 binary's decoder says of the store now.
	b, _, _ := s.Get(ctx, ObjectName)
	var d struct{ Format int }
	json.Unmarshal(b, &d)
	if d.Format != Format {
		t.Fatal("marker not at format 4")
	}
	rep, err := New(s).Upgrade(ctx)
	if err != nil || rep.From != Format || rep.Upgraded != 0 {
		t.Fatalf("second upgrade: %+v %v", rep, err)
	}
}

func TestUpgradeEmptyAndFresh(t *testing.T) {
	s := objstore.NewMem()
	rep, err := New(s).Upgrade(ctx)
	if err != nil || rep.From != 0 || rep.To != Format {
		t.Fatalf("upgrade of an empty store: %+v %v", rep, err)
	}
	formatOne(t, objstore.NewMem(), nil)
	s = objstore.NewMem()
	formatOne(t, s, nil)
	if rep, err := New(s).Upgrade(ctx); err != nil || rep.From != 1 {
		t.Fatalf("upgrade of an empty format 1 catalog: %+v %v", rep, err)
	}
	checkUpgraded(t, s, nil)
}

// oldWriter is a format 1 binary that changes the catalog object just
// before the upgrade's first swap of it.
type oldWriter struct {
	objstore.Store
	t    *testing.T
	once bool
	add  Record
}

func (s *oldWriter) Swap(ctx context.Context, name string, b []byte, v objstore.Version) (objstore.Version, error) {
	if name == ObjectName && !s.once {
		s.once = true
		old, _, _ := s.Store.Get(ctx, ObjectName)
		var d marker
		json.Unmarshal(old, &d)
		d.Records = append(d.Records, s.add)
		nb, _ := json.Marshal(d)
		if _, err := s.Store.Put(ctx, ObjectName, nb); err != nil {
			s.t.Fatal(err)
		}
	}
	return s.Store.Swap(ctx, name, b, v)
}

func TestUpgradeRacesOldWriter(t *testing.T) {
	mem := objstore.NewMem()
	recs := oldRecords()
	formatOne(t, mem, recs)
	late := Record{Name: "late", ID: blockmap.NewID(), Kind: KindVolume}
	rep, err := New(&oldWriter{Store: mem, t: t, add: late}).Upgrade(ctx)
	if err != nil || rep.Upgraded != 5 {
		t.Fatalf("%+v %v", rep, err)
	}
	checkUpgraded(t, mem, append(recs, late))
}

// TestUpgradeCrashes crashes the upgrade after each of its writes; the
// store then reads at its format 1 content, and the next use finishes.
func TestUpgradeCrashes(t *testing.T) {
	for _, applied := range []bool{false, true} {
		for k := 0; ; k++ {
			mem := objstore.NewMem()
			recs := oldRecords()
			formatOne(t, mem, recs)
			cs := &crashAfter{Store: mem, applyLast: applied}
			cs.left.Store(int64(k))
			_, err := New(cs).Upgrade(ctx)
			if err != nil && !errors.Is(err, errCrash) {
				t.Fatal(err)
			}
			// A garbage collector's view: the records the catalog
			// object still holds plus the records stored.
			legacy, err2 := New(mem).LegacyRecords(ctx)
			if err2 != nil {
				t.Fatal(err2)
			}
			roots := map[blockmap.ID]bool{}
			for _, r := range legacy {
				roots[r.ID] = true
			}
			New(mem).Scan(ctx, func(r Record) error { roots[r.ID] = true; return nil })
			if len(roots) != len(recs) {
				t.Fatalf("k=%d: %d roots during the upgrade, want %d", k, len(roots), len(recs))
			}
			checkUpgraded(t, mem, recs) // the lookups upgrade
			if err == nil {
				break
			}
		}
	}
}

func TestUnknownFormat(t *testing.T) {
	s := objstore.NewMem()
	s.Put(ctx, ObjectName, []byte(`{"format":5,"records":[]}`))
	if _, err := New(s).Lookup(ctx, "a"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "a newer archip") {
		t.Fatalf("format 5: %v", err)
	}
	for _, b := range []string{"{", `{"format":1,"records":[{"name":"x y","id":"00000000000000000000000000000001","kind":"volume"}]}`,
		`{"format":1,"records":[{"name":"x","id":"00000000000000000000000000000001","kind":"disk"}]}`,
		`{"format":2,"records":[{"name":"x","id":"00000000000000000000000000000001","kind":"volume"}]}`,
		`{"format":3,"records":[{"name":"x","id":"00000000000000000000000000000001","kind":"volume"}]}`,
		`{"format":4,"records":[{"name":"x","id":"00000000000000000000000000000001","kind":"volume"}]}`,
		`{"format":3,"records":[],"upgrading":[]}`, `{"format":4,"records":[],"upgrading":[]}`} {
		s.Put(ctx, ObjectName, []byte(b))
		if _, err := New(s).Upgrade(ctx); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Upgrade(%s) = %v, want ErrCorrupt", b, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"format":1,"records":[{"name":"x","id":"00000000000000000000000000000001","kind":"volume"}]}`))
	f.Add([]byte(`{"format":1,"records":[]}`))
	f.Add([]byte(`{"format":2,"records":[],"upgrading":[{"name":"x","id":"00000000000000000000000000000001","kind":"volume"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeCatalog(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unmarked error %v", err)
			}
			return
		}
		for _, r := range append(d.Records, d.Upgrading...) {
			if ValidName(r.Name) != nil {
				t.Fatalf("accepted bad name %q", r.Name)
			}
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add("x", []byte(`{"name":"x","id":"00000000000000000000000000000001","kind":"volume","created":"2026-01-01T00:00:00Z"}`))
	f.Add("a@1", []byte(`{"name":"a@1","id":"00000000000000000000000000000001","kind":"snapshot","origin":"00000000000000000000000000000002"}`))
	f.Add("a", []byte(`{"name":"a","id":"00000000000000000000000000000001","kind":"volume","renaming_to":"b","moved":true,"rename_token":"ab"}`))
	f.Add("b", []byte(`{"name":"b","id":"00000000000000000000000000000001","kind":"image","renamed_from":"a","pending":true,"rename_token":"ab"}`))
	f.Fuzz(func(t *testing.T, name string, b []byte) {
		s, err := decodeStored(name, b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unmarked error %v", err)
			}
			return
		}
		if ValidName(s.Name) != nil || s.Name != name || s.ID.IsZero() {
			t.Fatalf("accepted %+v", s)
		}
		if (s.RenamingTo != "") == (s.RenamedFrom != "") && (s.RenamingTo != "" || s.Token != "" || s.Moved || s.Pending) {
			t.Fatalf("accepted rename state %+v", s)
		}
		// What it accepts, it writes back the same.
		s2, err := decodeStored(name, encodeStored(s))
		if err != nil || fmt.Sprint(*s2) != fmt.Sprint(*s) {
			t.Fatalf("round trip: %+v %v", s2, err)
		}
	})
}

// lateUpgrader lets another process finish the upgrade and remove a name
// while this one is between reading the frozen records and creating
// them.
type lateUpgrader struct {
	objstore.Store
	gets      int
	meanwhile func()
}

func (s *lateUpgrader) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if name == ObjectName {
		if s.gets++; s.gets == 3 { // after ensure's and Upgrade's reads
			s.meanwhile()
		}
	}
	return s.Store.Get(ctx, name)
}

func TestLateUpgraderRevivesNothing(t *testing.T) {
	mem := objstore.NewMem()
	recs := oldRecords()
	b, _ := json.Marshal(marker{Format: 2, Records: []Record{}, Upgrading: recs})
	mem.Put(ctx, ObjectName, b) // frozen by a first upgrader
	late := &lateUpgrader{Store: mem, meanwhile: func() {
		if _, err := New(mem).Remove(ctx, "img"); err != nil {
			t.Fatal(err)
		}
	}}
	if _, err := New(late).Lookup(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if late.gets < 3 {
		t.Fatal("the late upgrader did not upgrade")
	}
	mustAbsent(t, New(mem), "img")
	checkUpgraded(t, mem, recs[:3])
}
