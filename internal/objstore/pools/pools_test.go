package pools

import (
	"context"
	"errors"
	"hash/fnv"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/s3"
	"github.com/archipelago-go/archip/internal/objstore/storetest"
)

var ctx = context.Background()

// newTest builds a router on stores the test made, with a routing rule of
// its own (the suite's names are no blocks).
func newTest(meta objstore.Store, data func(string) bool, pools ...objstore.Store) objstore.Store {
	var named []Named
	for i, p := range pools {
		named = append(named, Named{Name: string(rune('a' + i)), Store: p})
	}
	s, err := New(meta, named)
	if err != nil {
		panic(err)
	}
	r, _ := Of(s)
	r.isData = data
	r.mayHoldData = func(string) bool { return true }
	return s
}

func allData(string) bool { return true }

// mixed sends about half the names to the pools, by a hash of the name's
// first component, so that prefixes span both.
func mixed(name string) bool {
	h := fnv.New32a()
	first, _, _ := strings.Cut(name, "/")
	h.Write([]byte(first + name))
	return h.Sum32()%2 == 0
}

// TestConformance runs the objstore suite on routers: everything to the
// metadata backend (the suite's names are no blocks), everything to one
// pool, and names split between the metadata backend and two pools.
func TestConformance(t *testing.T) {
	mem := func() objstore.Store { return objstore.NewMem() }
	file := func(t *testing.T) objstore.Store {
		s, err := objstore.OpenFile(t.TempDir(), true)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Run("mem+mem/metadata", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) objstore.Store { return newTest(mem(), isData, mem()) })
	})
	t.Run("mem+mem/data", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) objstore.Store { return newTest(mem(), allData, mem()) })
	})
	t.Run("mem+mem+mem/mixed", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) objstore.Store { return newTest(mem(), mixed, mem(), mem()) })
	})
	t.Run("file+file/mixed", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) objstore.Store { return newTest(file(t), mixed, file(t)) })
	})
	t.Run("file+file+file/data", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) objstore.Store { return newTest(file(t), allData, file(t), file(t)) })
	})
}

// bare hides every optional capability of a store (as S3 has none).
type bare struct{ objstore.Store }

// noCAS is a store that says it cannot compare-and-swap.
type noCAS struct{ objstore.Store }

func (noCAS) CheckCAS() error {
	return errors.Join(objstore.ErrUnsupport, errors.New("test: no conditional writes"))
}

func has[T any](s objstore.Store) bool { _, ok := s.(T); return ok }

// TestCapabilities: the router has a capability only where every part a
// name of it may reach has it.
func TestCapabilities(t *testing.T) {
	m := func() objstore.Store { return objstore.NewMem() }
	for _, tc := range []struct {
		name                     string
		s                        objstore.Store
		rw, sync, cp, lend, hand bool
	}{
		{"mem+mem", newTest(m(), isData, m()), true, true, true, false, false},
		{"mem+bare", newTest(m(), isData, bare{m()}), false, false, false, false, false},
		{"bare+mem", newTest(bare{m()}, isData, m()), false, false, false, false, false},
		{"mem+mem+bare", newTest(m(), isData, m(), bare{m()}), false, false, false, false, false},
		// A wrapped part has a wrapper's methods, whatever it wraps.
		{"mem+observed bare", newTest(m(), isData, observe(bare{m()})), false, false, false, false, false},
		{"observed mem+mem", newTest(observe(m()), isData, m()), true, true, true, false, false},
	} {
		got := []bool{has[objstore.RangeWriter](tc.s), has[objstore.Syncer](tc.s), has[objstore.Copier](tc.s),
			has[objstore.Lender](tc.s), has[objstore.HandleOpener](tc.s)}
		want := []bool{tc.rw, tc.sync, tc.cp, tc.lend, tc.hand}
		for i, what := range []string{"RangeWriter", "Syncer", "Copier", "Lender", "HandleOpener"} {
			if got[i] != want[i] {
				t.Errorf("%s: %s = %v, want %v", tc.name, what, got[i], want[i])
			}
		}
		if has[objstore.Fencer](tc.s) {
			t.Errorf("%s: a router claims Fencer", tc.name)
		}
		if _, ok := Of(tc.s); !ok {
			t.Errorf("%s: Of finds no router", tc.name)
		}
	}
	// A router behind a wrapper (the daemon's metrics) is still found,
	// and so are its parts.
	if w := observe(newTest(m(), isData, m(), m())); true {
		if _, ok := Of(w); !ok {
			t.Error("Of finds no router behind a wrapper")
		}
		if n := len(objstore.Parts(w)); n != 3 {
			t.Errorf("Parts of a wrapped router: %d parts, want 3", n)
		}
	}
	if f := newTest(m(), isData, bare{m()}).(objstore.FreshStater).FreshStat(); f {
		t.Error("FreshStat with a pool that does not claim it")
	}
}

// TestRouting: blocks go to the default pool, everything else (heads,
// catalog, leases, unknown names) to the metadata backend; blocks are
// found in every pool, in lookup order.
func TestRouting(t *testing.T) {
	meta, def, other := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	s := newTest(meta, isData, def, other)
	id := blockmap.NewID()
	blk := blockmap.ContentName([32]byte{1})
	priv := blockmap.PrivateEntry(id, 1, 2).ObjectName()
	for _, n := range []string{blk, priv, blockmap.HeadName(id), "cat/name/x", "lease/x", "gc/lock", "other"} {
		if _, err := s.Create(ctx, n, []byte(n)); err != nil {
			t.Fatal(err)
		}
		want := objstore.Store(meta)
		if n == blk || n == priv {
			want = def
		}
		if _, err := want.Stat(ctx, n); err != nil {
			t.Errorf("%s is not where it should be: %v", n, err)
		}
	}
	// A block held by the other pool only is found there, and is not
	// created again in the default pool.
	old := blockmap.ContentName([32]byte{2})
	other.Put(ctx, old, []byte("old"))
	if b, _, err := s.Get(ctx, old); err != nil || string(b) != "old" {
		t.Fatalf("Get of a block of the second pool: %q %v", b, err)
	}
	if _, err := s.Create(ctx, old, []byte("old")); !errors.Is(err, objstore.ErrExists) {
		t.Fatalf("Create of a block the second pool holds: %v", err)
	}
	if _, err := def.Stat(ctx, old); !objstore.IsNotExist(err) {
		t.Fatalf("the default pool got a copy: %v", err)
	}
	// Two copies: listed once per copy, each part lists its own, Delete
	// removes both.
	def.Put(ctx, old, []byte("old"))
	var names []string
	s.List(ctx, "blk/", func(in objstore.Info) error { names = append(names, in.Name); return nil })
	sort.Strings(names)
	if want := []string{blk, old, old}; strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("List(blk/) = %v, want %v", names, want)
	}
	var listed []string
	objstore.ListNames(ctx, s, "blk/", func(n string) error { listed = append(listed, n); return nil })
	sort.Strings(listed)
	if want := []string{blk, old}; strings.Join(listed, " ") != strings.Join(want, " ") {
		t.Fatalf("ListNames(blk/) = %v, want %v (each name once)", listed, want)
	}
	parts := objstore.Parts(s)
	if len(parts) != 3 {
		t.Fatalf("%d parts", len(parts))
	}
	var inMeta []string
	objstore.ListNames(ctx, parts[0], "", func(n string) error { inMeta = append(inMeta, n); return nil })
	if len(inMeta) != 5 {
		t.Fatalf("the metadata part lists %v", inMeta)
	}
	if err := parts[2].Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := def.Stat(ctx, old); err != nil {
		t.Fatalf("a part's Delete removed another pool's copy: %v", err)
	}
	other.Put(ctx, old, []byte("old"))
	if err := s.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	for _, p := range []objstore.Store{def, other} {
		if _, err := p.Stat(ctx, old); !objstore.IsNotExist(err) {
			t.Fatalf("Delete left a copy: %v", err)
		}
	}
	if err := s.Delete(ctx, old); !objstore.IsNotExist(err) {
		t.Fatalf("Delete of a block no pool holds: %v", err)
	}
}

// TestCopyAcrossPools: a copy from a block of another pool lands in the
// default pool.
func TestCopyAcrossPools(t *testing.T) {
	def, other := objstore.NewMem(), objstore.NewMem()
	s := newTest(objstore.NewMem(), isData, def, other)
	src := blockmap.ContentName([32]byte{3})
	dst := blockmap.PrivateEntry(blockmap.NewID(), 1, 1).ObjectName()
	other.Put(ctx, src, []byte("shared"))
	if err := s.(objstore.Copier).Copy(ctx, src, dst); err != nil {
		t.Fatal(err)
	}
	if b, _, err := def.Get(ctx, dst); err != nil || string(b) != "shared" {
		t.Fatalf("the copy: %q %v", b, err)
	}
	if err := s.(objstore.Copier).Copy(ctx, src, dst); !errors.Is(err, objstore.ErrExists) {
		t.Fatalf("a copy over an existing block: %v", err)
	}
}

func memOpener() Opener {
	stores := map[string]objstore.Store{}
	return func(ctx context.Context, raw string, opts objstore.OpenOptions) (objstore.Store, error) {
		if s, ok := stores[raw]; ok {
			return s, nil
		}
		var s objstore.Store = objstore.NewMem()
		if strings.HasPrefix(raw, "nocas://") {
			s = noCAS{s}
		}
		stores[raw] = s
		return s, nil
	}
}

// TestMetadataNeedsCAS: a backend without compare-and-swap is refused as
// metadata, with what to do, and accepted as a data pool.
func TestMetadataNeedsCAS(t *testing.T) {
	c := Config{Metadata: "nocas://m", Pools: []Pool{{"p", "mem://p"}}}
	_, err := Open(ctx, c, memOpener(), objstore.OpenOptions{})
	if !errors.Is(err, objstore.ErrUnsupport) || !strings.Contains(err.Error(), "file:// or rados://") {
		t.Fatalf("metadata without compare-and-swap: %v", err)
	}
	c = Config{Metadata: "mem://m", Pools: []Pool{{"p", "nocas://p"}}}
	s, err := Open(ctx, c, memOpener(), objstore.OpenOptions{})
	if err != nil {
		t.Fatalf("a data pool without compare-and-swap: %v", err)
	}
	s.Close()
}

// TestS3WithoutConditionalWrites: the same with a real S3 server whose
// conditional writes are off.
func TestS3WithoutConditionalWrites(t *testing.T) {
	srv := s3.TestServer(t, "versitygw")
	srv.NoConditional = true
	plain := s3.OpenTestStore(t, srv)
	if err := objstore.CheckCAS(plain); !errors.Is(err, objstore.ErrUnsupport) {
		t.Fatalf("CheckCAS of S3 without conditional writes: %v", err)
	}
	openReal := func(ctx context.Context, raw string, opts objstore.OpenOptions) (objstore.Store, error) {
		if raw == "s3://" {
			return plainNoClose{plain}, nil
		}
		return objstore.OpenFile(filepath.Join(t.TempDir(), "m"), true)
	}
	_, err := Open(ctx, Config{Metadata: "s3://", Pools: []Pool{{"p", "file://"}}}, openReal, objstore.OpenOptions{})
	if !errors.Is(err, objstore.ErrUnsupport) || !strings.Contains(err.Error(), "conditional writes") {
		t.Fatalf("S3 without conditional writes as metadata: %v", err)
	}
	s, err := Open(ctx, Config{Metadata: "file://", Pools: []Pool{{"p", "s3://"}}}, openReal, objstore.OpenOptions{})
	if err != nil {
		t.Fatalf("S3 without conditional writes as a data pool: %v", err)
	}
	defer s.Close()
	blk := blockmap.ContentName([32]byte{9})
	if _, err := s.Create(ctx, blk, []byte("block")); err != nil {
		t.Fatalf("a block created on the S3 pool: %v", err)
	}
	if _, err := s.Create(ctx, "cat/name/x", []byte("record")); err != nil {
		t.Fatalf("metadata created on the file backend: %v", err)
	}
	if b, _, err := plain.Get(ctx, blk); err != nil || string(b) != "block" {
		t.Fatalf("the block on S3: %q %v", b, err)
	}
}

// plainNoClose keeps the test's S3 store open after the router closes.
type plainNoClose struct{ *s3.Store }

func (plainNoClose) Close() error { return nil }

func TestParseConfig(t *testing.T) {
	good := `# a store
metadata = "file:///var/lib/archip"   # compare-and-swap
default = "cold"
logs = "metadata"

[pools]
fast = "rados://data?conf=/etc/ceph/ceph.conf"
cold = "s3://b/p?endpoint=http://127.0.0.1:9000#x"
`
	c, err := ParseConfig(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metadata != "file:///var/lib/archip" || c.DefaultPool() != "cold" || c.Logs != LogsMetadata || len(c.Pools) != 2 ||
		c.Pools[1] != (Pool{"cold", "s3://b/p?endpoint=http://127.0.0.1:9000#x"}) {
		t.Fatalf("parsed %+v", c)
	}
	bad := `metadata = file:///x
color = "red"
logs = "nowhere"
default = "nope"
[pools]
Bad = "mem://x"
p = "pools:///y"
p = "mem://z"
[other]
`
	_, err = ParseConfig(strings.NewReader(bad))
	if !errors.Is(err, objstore.ErrBadURL) {
		t.Fatalf("bad config: %v", err)
	}
	for _, want := range []string{"line 1", "quoted", `unknown key "color"`, "[other]", "given twice", `"Bad"`, "another", `default pool "nope"`, "metadata: empty URL", `logs = "nowhere"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
}

// TestOpenURL: a pools:// URL names the configuration file.
func TestOpenURL(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "store.toml")
	os.WriteFile(cfg, []byte("metadata = \"mem://m\"\n[pools]\na = \"mem://a\"\nb = \"mem://b\"\n"), 0o644)
	u, _ := url.Parse("pools://" + cfg)
	s, err := OpenURL(ctx, u, memOpener(), objstore.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, _ := Of(s)
	if got := r.PoolNames(); strings.Join(got, ",") != "a,b" {
		t.Fatalf("pools %v", got)
	}
	// By default a writer's logged writes go into blocks of its pool;
	// logs = "metadata" keeps them, and the log's index, in the
	// metadata backend.
	if objstore.KeepsLogIndex(s) {
		t.Fatal("a pools store keeps write log indexes without logs = \"metadata\"")
	}
	os.WriteFile(cfg, []byte("metadata = \"mem://m\"\nlogs = \"metadata\"\n[pools]\na = \"mem://a\"\n"), 0o644)
	ls, err := OpenURL(ctx, u, memOpener(), objstore.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if !objstore.KeepsLogIndex(ls) {
		t.Fatal("logs = \"metadata\": the store keeps no write log index")
	}
	u, _ = url.Parse("pools://" + filepath.Join(dir, "missing.toml"))
	if _, err := OpenURL(ctx, u, memOpener(), objstore.OpenOptions{}); !errors.Is(err, objstore.ErrBadURL) {
		t.Fatalf("a missing configuration: %v", err)
	}
}

// TestPlacement: a placed volume's private blocks go to its pool (also
// for another router on the same backends, as another process), an
// unplaced one's to the default pool, a view's new content blocks to the
// view's pool, and every block is found from any of them.
func TestPlacement(t *testing.T) {
	meta, a, b := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	open := func() (objstore.Store, *Router) {
		s, err := New(meta, []Named{{"a", a}, {"b", b}})
		if err != nil {
			t.Fatal(err)
		}
		r, _ := Of(s)
		return s, r
	}
	s, r := open()
	placed, unplaced := blockmap.NewID(), blockmap.NewID()
	if err := r.Place(ctx, placed, "b"); err != nil {
		t.Fatal(err)
	}
	if err := r.Place(ctx, unplaced, "nope"); !errors.Is(err, ErrNoPool) {
		t.Fatalf("placement in a pool the store lacks: %v", err)
	}
	if _, err := meta.Stat(ctx, PlacementName(placed)); err != nil {
		t.Fatalf("the placement record is not in the metadata backend: %v", err)
	}
	s2, r2 := open() // another process
	for i, tc := range []struct {
		s    objstore.Store
		id   blockmap.ID
		pool objstore.Store
		name string
	}{{s, placed, b, "b"}, {s2, placed, b, "b"}, {s, unplaced, a, "a"}} {
		priv := blockmap.PrivateEntry(tc.id, 1, uint64(i)).ObjectName()
		if _, err := tc.s.Create(ctx, priv, []byte("private")); err != nil {
			t.Fatal(err)
		}
		if _, err := tc.pool.Stat(ctx, priv); err != nil {
			t.Fatalf("a private block of %s is not in pool %s: %v", tc.id, tc.name, err)
		}
		if got, _, err := r2.Placement(ctx, tc.id); err != nil || got != tc.name {
			t.Fatalf("Placement = %q, %v; want %s", got, err, tc.name)
		}
	}
	v, err := r.View("b")
	if err != nil {
		t.Fatal(err)
	}
	blk := blockmap.ContentName([32]byte{5})
	if _, err := v.Create(ctx, blk, []byte("image")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx, blk); err != nil {
		t.Fatalf("a view's content block is not in its pool: %v", err)
	}
	for i := 0; i < 2; i++ { // the second time from the cache of where it was found
		if got, _, err := s.Get(ctx, blk); err != nil || string(got) != "image" {
			t.Fatalf("the block from the default pool's side: %q %v", got, err)
		}
	}
	if _, err := s.Create(ctx, blk, []byte("image")); !errors.Is(err, objstore.ErrExists) {
		t.Fatalf("Create of a block another pool holds: %v", err)
	}
	v.Close()
	if _, _, err := s.Get(ctx, blk); err != nil {
		t.Fatalf("closing a view closed the store: %v", err)
	}
	if err := r.Unplace(ctx, placed); err != nil {
		t.Fatal(err)
	}
	if got, rec, _ := r.Placement(ctx, placed); got != "a" || rec {
		t.Fatalf("placement after Unplace: %q", got)
	}
	if id, ok := ParsePlacementName(PlacementName(placed)); !ok || id != placed {
		t.Fatal("ParsePlacementName does not read PlacementName")
	}
	for _, n := range []string{"place/x", "place/" + placed.String() + "/x", "cat/name/x"} {
		if _, ok := ParsePlacementName(n); ok {
			t.Errorf("ParsePlacementName(%q) ok", n)
		}
	}
}

func observe(s objstore.Store) objstore.Store {
	return objstore.Observe(s, func(objstore.Op) objstore.Probe { return nil })
}

// TestParseConfigLogsUnderPools: logs = "metadata" appended at the end
// of a configuration lands under [pools], where it names a pool "logs";
// the error says the key belongs before the table (before: only that
// pool "logs" had no scheme, and nothing of where logs goes).
func TestParseConfigLogsUnderPools(t *testing.T) {
	for _, k := range []string{"logs", "default"} {
		in := "metadata = \"file:///m\"\n[pools]\na = \"file:///a\"\n" + k + " = \"metadata\"\n"
		_, err := ParseConfig(strings.NewReader(in))
		if err == nil {
			t.Fatalf("%s under [pools] accepted", k)
		}
		if !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "before [pools]") {
			t.Errorf("%s under [pools]: the error does not say it goes before [pools] (line 4):\n%v", k, err)
		}
	}
}
