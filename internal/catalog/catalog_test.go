package catalog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

var ctx = context.Background()

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "vm-1", "disk_0.img", "vol@daily", "A9"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-x", ".x", "a b", "a/b", "ä", "x\n", string(make([]byte, 129))} {
		if err := ValidName(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("ValidName(%q) = %v", bad, err)
		}
	}
}

func vol(name string) Record { return Record{Name: name, ID: blockmap.NewID(), Kind: KindVolume} }

func mustLookup(t *testing.T, c *Catalog, name string, id blockmap.ID) {
	t.Helper()
	r, err := c.Lookup(ctx, name)
	if err != nil || r.ID != id {
		t.Fatalf("Lookup(%q) = %v %v, want ID %s", name, r, err, id)
	}
}

func mustAbsent(t *testing.T, c *Catalog, name string) {
	t.Helper()
	if r, err := c.Lookup(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup(%q) = %v %v, want ErrNotFound", name, r, err)
	}
}

// names lists every object under prefix.
func names(t *testing.T, s objstore.Store, prefix string) []string {
	t.Helper()
	var out []string
	if err := s.List(ctx, prefix, func(in objstore.Info) error { out = append(out, in.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestCreateLookupRemove(t *testing.T) {
	s := objstore.NewMem()
	c := New(s)
	mustAbsent(t, c, "a")
	if len(names(t, s, "")) != 0 {
		t.Fatal("a lookup on an empty store wrote")
	}
	a, snap := vol("a"), Record{Name: "a@1", ID: blockmap.NewID(), Kind: KindSnapshot}
	snap.Origin = a.ID
	clone := vol("c")
	clone.Parent = snap.ID
	for _, r := range []Record{a, snap, clone} {
		if err := c.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Create(ctx, vol("a")); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	if err := c.Create(ctx, vol("bad name")); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
	mustLookup(t, c, "a", a.ID)
	if r, err := c.ByID(ctx, snap.ID); err != nil || r.Name != "a@1" {
		t.Fatalf("ByID = %v %v", r, err)
	}
	kids, err := c.Children(ctx, a.ID)
	if err != nil || len(kids) != 1 || kids[0].Name != "a@1" {
		t.Fatalf("Children(a) = %v %v", kids, err)
	}
	kids, _ = c.Children(ctx, snap.ID)
	if len(kids) != 1 || kids[0].Name != "c" {
		t.Fatalf("Children(a@1) = %v", kids)
	}
	if b, _, _ := s.Get(ctx, ObjectName); string(b) != `{"format":4,"records":[]}` {
		t.Fatalf("marker = %s", b)
	}
	r, err := c.Remove(ctx, "c")
	if err != nil || r.ID != clone.ID {
		t.Fatalf("Remove = %v %v", r, err)
	}
	mustAbsent(t, c, "c")
	if _, err := c.Remove(ctx, "c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove: %v", err)
	}
	if kids, _ := c.Children(ctx, snap.ID); len(kids) != 0 {
		t.Fatalf("children after remove: %v", kids)
	}
	// Its ID hint goes; its child hint stays for the garbage collector,
	// which keeps it while something made from it remains.
	for _, n := range names(t, s, "cat/") {
		if strings.Contains(n, clone.ID.String()) && n != childHint(snap.ID, clone.ID) {
			t.Errorf("%s left after the remove", n)
		}
	}
	if r, err := c.RemoveID(ctx, snap.ID); err != nil || r.Name != "a@1" {
		t.Fatalf("RemoveID = %v %v", r, err)
	}
	if _, err := c.RemoveID(ctx, snap.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second RemoveID: %v", err)
	}
}

func TestRename(t *testing.T) {
	s := objstore.NewMem()
	c := New(s)
	a, b := vol("a"), vol("b")
	c.Create(ctx, a)
	c.Create(ctx, b)
	snap := Record{Name: "s", ID: blockmap.NewID(), Kind: KindSnapshot, Origin: a.ID}
	c.Create(ctx, snap)
	if err := c.Rename(ctx, "a", "b"); !errors.Is(err, ErrExists) {
		t.Fatalf("rename onto an existing name: %v", err)
	}
	mustLookup(t, c, "a", a.ID)
	if err := c.Rename(ctx, "a", "a"); !errors.Is(err, ErrExists) {
		t.Fatalf("rename onto itself: %v", err)
	}
	if err := c.Rename(ctx, "zz", "y"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rename of a missing name: %v", err)
	}
	if err := c.Rename(ctx, "a", "c"); err != nil {
		t.Fatal(err)
	}
	mustAbsent(t, c, "a")
	mustLookup(t, c, "c", a.ID)
	if r, err := c.ByID(ctx, a.ID); err != nil || r.Name != "c" {
		t.Fatalf("ByID after rename = %v %v", r, err)
	}
	if r, _ := c.ByID(ctx, snap.ID); r.Origin != a.ID {
		t.Fatal("lineage changed")
	}
	want := []string{"cat/name/b", "cat/name/c", "cat/name/s"}
	if got := names(t, s, NamePrefix); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("records %v, want %v", got, want)
	}
	if b, _, _ := s.Get(ctx, "cat/name/c"); strings.Contains(string(b), "renam") || strings.Contains(string(b), "token") {
		t.Fatalf("rename state left in the record: %s", b)
	}
	// A name freed by a rename can be taken again.
	if err := c.Create(ctx, vol("a")); err != nil {
		t.Fatal(err)
	}
}

func TestList(t *testing.T) {
	c := New(objstore.NewMem())
	var all []string
	for i := 0; i < 25; i++ {
		n := fmt.Sprintf("vm-%02d", i)
		if i%5 == 0 {
			n = fmt.Sprintf("db-%02d", i)
		}
		all = append(all, n)
		if err := c.Create(ctx, vol(n)); err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(all)
	var got []string
	after := ""
	pages := 0
	for {
		p, err := c.List(ctx, ListOptions{After: after, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, r := range p.Records {
			got = append(got, r.Name)
		}
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	if fmt.Sprint(got) != fmt.Sprint(all) || pages != 4 {
		t.Fatalf("paged listing (%d pages) = %v, want %v", pages, got, all)
	}
	p, err := c.List(ctx, ListOptions{Prefix: "db-"})
	if err != nil || len(p.Records) != 5 || p.Next != "" || p.Records[0].Name != "db-00" {
		t.Fatalf("prefix listing = %v %v", p, err)
	}
	p, _ = c.List(ctx, ListOptions{Prefix: "vm-", After: "vm-18", Limit: 3})
	if len(p.Records) != 3 || p.Records[0].Name != "vm-19" || p.Next != "vm-22" {
		t.Fatalf("prefix after = %+v", p)
	}
	p, _ = c.List(ctx, ListOptions{Prefix: "vm-", After: "vm-22", Limit: 3})
	if len(p.Records) != 2 || p.Next != "" {
		t.Fatalf("last page = %+v", p)
	}
}

// counting counts store calls, to show costs that do not grow with the
// number of records.
type counting struct {
	objstore.Store
	n atomic.Int64
}

func (s *counting) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	s.n.Add(1)
	return s.Store.Get(ctx, name)
}
func (s *counting) Put(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.n.Add(1)
	return s.Store.Put(ctx, name, b)
}
func (s *counting) Create(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.n.Add(1)
	return s.Store.Create(ctx, name, b)
}
func (s *counting) Swap(ctx context.Context, name string, b []byte, v objstore.Version) (objstore.Version, error) {
	s.n.Add(1)
	return s.Store.Swap(ctx, name, b, v)
}
func (s *counting) Delete(ctx context.Context, name string) error {
	s.n.Add(1)
	return s.Store.Delete(ctx, name)
}
func (s *counting) DeleteVersion(ctx context.Context, name string, v objstore.Version) error {
	s.n.Add(1)
	return s.Store.DeleteVersion(ctx, name, v)
}
func (s *counting) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	s.n.Add(1000) // a listing is what must not happen per name
	return s.Store.List(ctx, prefix, fn)
}

// TestCostFlat: every single-name operation makes the same store calls
// with 10 records as with 2000 (the cost does not grow with N).
func TestCostFlat(t *testing.T) {
	cost := func(n int) []int64 {
		s := &counting{Store: objstore.NewMem()}
		c := New(s)
		for i := 0; i < n; i++ {
			if err := c.Create(ctx, vol(fmt.Sprintf("v%05d", i))); err != nil {
				t.Fatal(err)
			}
		}
		var out []int64
		step := func(f func() error) {
			s.n.Store(0)
			if err := f(); err != nil {
				t.Fatal(err)
			}
			out = append(out, s.n.Load())
		}
		r := vol("x")
		step(func() error { return c.Create(ctx, r) })
		step(func() error { _, err := c.Lookup(ctx, "x"); return err })
		step(func() error { _, err := c.ByID(ctx, r.ID); return err })
		step(func() error { return c.Rename(ctx, "x", "y") })
		step(func() error { _, err := c.Remove(ctx, "y"); return err })
		step(func() error { _, err := c.Lookup(ctx, "v00003"); return err })
		return out
	}
	small, big := cost(10), cost(2000)
	if fmt.Sprint(small) != fmt.Sprint(big) {
		t.Fatalf("store calls of create, lookup, byid, rename, remove, lookup: %v with 10 records, %v with 2000", small, big)
	}
	for _, n := range small {
		if n >= 1000 {
			t.Fatalf("a single-name operation listed the store: %v", small)
		}
	}
}

// namesOnly is a store whose List is expensive (it counts the Infos it
// makes) and that lists names cheaply (objstore.NameLister).
type namesOnly struct {
	objstore.Store
	infos, names atomic.Int64
}

func (s *namesOnly) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	return s.Store.List(ctx, prefix, func(in objstore.Info) error {
		s.infos.Add(1)
		return fn(in)
	})
}

func (s *namesOnly) ListNames(ctx context.Context, prefix string, fn func(string) error) error {
	return s.Store.List(ctx, prefix, func(in objstore.Info) error {
		s.names.Add(1)
		return fn(in.Name)
	})
}

// TestListNamesOnly: a listing, a walk and a scan list the record names
// without their Info where the store can (the file store reads each
// object's directory for an Info, RADOS stats each object: at 10^5
// records, seconds before the first page).
func TestListNamesOnly(t *testing.T) {
	s := &namesOnly{Store: objstore.NewMem()}
	c := New(s)
	for i := range 30 {
		if err := c.Create(ctx, Record{Name: fmt.Sprintf("vm-%02d", i), ID: blockmap.NewID(), Kind: KindVolume}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := c.List(ctx, ListOptions{Limit: 5})
	if err != nil || len(p.Records) != 5 || p.Records[0].Name != "vm-00" || p.Next != "vm-04" {
		t.Fatalf("first page: %+v, %v", p, err)
	}
	n := 0
	if err := c.Scan(ctx, func(Record) error { n++; return nil }); err != nil || n != 30 {
		t.Fatalf("scan: %d records, %v", n, err)
	}
	if s.infos.Load() != 0 || s.names.Load() != 60 {
		t.Fatalf("listing and scan made %d Infos and %d names, want 0 and 60", s.infos.Load(), s.names.Load())
	}
}

// gate holds Gets of records until want of them are in flight at once
// (or, so that a sequential reader fails instead of hanging, until one
// has waited 10 s), and records the most in flight.
type gate struct {
	objstore.Store
	want           int
	mu             sync.Mutex
	inflight, most int
	enough         chan struct{}
	closed, gaveUp bool
}

func (g *gate) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if strings.HasPrefix(name, NamePrefix) {
		g.mu.Lock()
		g.inflight++
		g.most = max(g.most, g.inflight)
		if g.most == g.want && !g.closed {
			close(g.enough)
			g.closed = true
		}
		wait := g.most < g.want && !g.gaveUp
		g.mu.Unlock()
		if wait {
			select {
			case <-g.enough:
			case <-time.After(10 * time.Second):
				g.mu.Lock()
				g.gaveUp = true
				g.mu.Unlock()
			}
		}
		defer func() { g.mu.Lock(); g.inflight--; g.mu.Unlock() }()
	}
	return g.Store.Get(ctx, name)
}

// TestWalkReadsInParallel: a page's records are read several at a time
// (one round trip each: on RADOS, a first page of 1000 read one by one
// took most of a second), and come in name order.
func TestWalkReadsInParallel(t *testing.T) {
	mem := objstore.NewMem()
	c := New(mem)
	for i := range 40 {
		if err := c.Create(ctx, Record{Name: fmt.Sprintf("vm-%02d", i), ID: blockmap.NewID(), Kind: KindVolume}); err != nil {
			t.Fatal(err)
		}
	}
	g := &gate{Store: mem, want: 4, enough: make(chan struct{})}
	p, err := New(g).List(ctx, ListOptions{Limit: 30})
	if err != nil || len(p.Records) != 30 || p.Next != "vm-29" {
		t.Fatalf("page: %d records, next %q, %v", len(p.Records), p.Next, err)
	}
	for i, r := range p.Records {
		if r.Name != fmt.Sprintf("vm-%02d", i) {
			t.Fatalf("record %d is %q", i, r.Name)
		}
	}
	if g.most < g.want {
		t.Fatalf("at most %d records read at once, want %d", g.most, g.want)
	}
}

// TestWalkFirstPageSoon: a walk by pages of 1000 passes the first
// FirstPage records on before it reads more (volume list prints them
// while the rest are read), then whole pages.
func TestWalkFirstPageSoon(t *testing.T) {
	c := New(objstore.NewMem())
	for i := range 1250 {
		if err := c.Create(ctx, Record{Name: fmt.Sprintf("vm-%04d", i), ID: blockmap.NewID(), Kind: KindVolume}); err != nil {
			t.Fatal(err)
		}
	}
	var sizes []int
	next, err := c.Walk(ctx, ListOptions{}, 1000, func(recs []Record) error {
		sizes = append(sizes, len(recs))
		return nil
	})
	if err != nil || next != "" || fmt.Sprint(sizes) != fmt.Sprint([]int{FirstPage, 1000, 150}) {
		t.Fatalf("pages %v, next %q, %v", sizes, next, err)
	}
	p, err := c.List(ctx, ListOptions{After: "vm-0009", Limit: 500})
	if err != nil || len(p.Records) != 500 || p.Records[0].Name != "vm-0010" || p.Next != "vm-0509" {
		t.Fatalf("List: %d records from %v, next %q, %v", len(p.Records), p.Records[0].Name, p.Next, err)
	}
}
