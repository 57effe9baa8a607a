package manage_test

// Catalog benchmarks at scale (issue 12): a store filled with N volume
// records, then create, lookup, snapshot, clone, rename and remove of one
// name each, and the first page (100, 1000) of a listing, through package
// manage as the CLI runs them. Driven by bench/catalog.sh:
//
//	ARCHIP_BENCH_STORE=file:///DIR ARCHIP_BENCH_N=100000 \
//	  go test -run '^$' -bench 'Catalog' -benchtime 100x ./internal/manage
//
// The fill is generated directly (see fill) and kept in the store: a
// later run on the same store with the same N reuses it. Without
// ARCHIP_BENCH_STORE the benchmarks use a memory store of ARCHIP_BENCH_N
// (default 1000) records.

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/all"
)

// benchFilled records, in the store, how many records were filled.
const benchFilled = "bench/catalog-filled"

// headsFilled: the fill writes the heads of the first names only (those
// the listing benchmarks read); every other filled record has its ID hint
// but no head, which no measured operation reads.
const headsFilled = 2000

func benchName(i int) string { return fmt.Sprintf("v%08d", i) }

var bench struct {
	once sync.Once
	m    *manage.Manager
	n    int
	err  error
}

// benchManager opens (and fills, once) the benchmark store.
func benchManager(b *testing.B) (*manage.Manager, int) {
	bench.once.Do(func() {
		ctx := context.Background()
		n := 1000
		if v := os.Getenv("ARCHIP_BENCH_N"); v != "" {
			if n, bench.err = strconv.Atoi(v); bench.err != nil {
				return
			}
		}
		url := os.Getenv("ARCHIP_BENCH_STORE")
		if url == "" {
			url = "mem://catbench"
		}
		s, err := all.Registry().Open(ctx, url, objstore.OpenOptions{Create: true})
		if err != nil {
			bench.err = err
			return
		}
		bench.m, bench.n = manage.New(s), n
		bench.err = ensureFilled(ctx, bench.m, n)
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return bench.m, bench.n
}

func ensureFilled(ctx context.Context, m *manage.Manager, n int) error {
	if b, _, err := m.Store.Get(ctx, benchFilled); err == nil {
		if string(b) == strconv.Itoa(n) {
			return nil
		}
		return fmt.Errorf("the benchmark store holds a fill of %s records, not %d: use another store", b, n)
	}
	// The normal path first: it writes the catalog's format marker.
	if _, err := m.CreateVolume(ctx, "bench-seed", 1<<30, 0); err != nil {
		return err
	}
	if _, err := m.Catalog.Remove(ctx, "bench-seed"); err != nil {
		return err
	}
	start := time.Now()
	if err := fill(ctx, m.Store, n); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "catbench: filled %d records in %v\n", n, time.Since(start).Round(time.Millisecond))
	// The normal code must read what the fill wrote.
	for range 200 {
		i := rand.IntN(n)
		r, err := m.Lookup(ctx, benchName(i))
		if err != nil {
			return fmt.Errorf("fill check: %w", err)
		}
		if byID, err := m.Catalog.ByID(ctx, r.ID); err != nil || byID.Name != r.Name {
			return fmt.Errorf("fill check: by ID %s: %v %v", r.ID, byID, err)
		}
	}
	page, _, err := m.ListPage(ctx, catalog.ListOptions{Limit: 10})
	if err != nil || len(page) != min(10, n) || page[0].Name != benchName(0) || page[0].Error != "" {
		return fmt.Errorf("fill check: first page %+v: %v", page, err)
	}
	_, err = m.Store.Put(ctx, benchFilled, []byte(strconv.Itoa(n)))
	return err
}

// fillObject is one object of the fill.
type fillObject struct {
	name string
	data []byte
}

// fillObjects returns the objects of filled record i: its record, its ID
// hint and, for the first names, its head.
func fillObjects(i int, created time.Time) []fillObject {
	r := catalog.Record{Name: benchName(i), ID: blockmap.NewID(), Kind: catalog.KindVolume, Created: created}
	rec, _ := json.Marshal(r)
	hint, _ := json.Marshal(struct {
		Name string `json:"name"`
	}{r.Name})
	names := catalog.Objects(r) // record, ID hint
	objs := []fillObject{{names[0], rec}, {names[1], hint}}
	if i < headsFilled {
		h := &blockmap.Head{ID: r.ID, Size: 1 << 30, BlockShift: blockmap.DefaultShift, Epoch: 1}
		objs = append(objs, fillObject{blockmap.HeadName(r.ID), blockmap.EncodeHead(h)})
	}
	return objs
}

// fill writes n records in parallel: on the file store straight into its
// layout (fileLayout), then its list index by a repair; elsewhere through
// the store (Create).
func fill(ctx context.Context, s objstore.Store, n int) error {
	created := time.Now().UTC()
	write := func(o fillObject) error {
		_, err := s.Create(ctx, o.name, o.data)
		return err
	}
	workers := 64
	var fl *fileLayout
	if f, ok := s.(*objstore.File); ok {
		fl = &fileLayout{root: f.Root(), gen: uint64(time.Now().UnixNano())}
		write = fl.write
		workers = 2 * runtime.GOMAXPROCS(0)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				for _, o := range fillObjects(i, created) {
					if err := write(o); err != nil {
						errs <- fmt.Errorf("fill %s: %w", o.name, err)
						next.Store(int64(n))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if fl != nil {
		syscall.Sync() // one sync for the lot instead of one per object
		// The file store's list index (catalog format 4): the keys of
		// what the fill wrote past it.
		return objstore.RepairIndexes(ctx, s)
	}
	return nil
}

// fileLayout writes objects as objstore.File lays out an object written
// once: obj/<dirs of name>/@<xx>/<last component>/<generation>, xx the
// low byte of the FNV-1a hash of the last component, the generation 16
// hex digits (see objstore.File). Not durable until synced.
type fileLayout struct {
	root string
	gen  uint64
}

func (l *fileLayout) write(o fillObject) error {
	i := len(o.name) - 1
	for i >= 0 && o.name[i] != '/' {
		i--
	}
	parent, last := o.name[:i+1], o.name[i+1:]
	h := fnv.New32a()
	h.Write([]byte(last))
	dir := filepath.Join(l.root, "obj", filepath.FromSlash(parent), fmt.Sprintf("@%02x", h.Sum32()&0xff), last)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, fmt.Sprintf("%016x", l.gen)), o.data, 0o644)
}

// opTimes collects the durations of one operation.
type opTimes map[string][]time.Duration

func (t opTimes) time(op string, fn func() error) error {
	start := time.Now()
	err := fn()
	t[op] = append(t[op], time.Since(start))
	return err
}

// report adds the mean and p99 of each operation, in milliseconds.
func (t opTimes) report(b *testing.B) {
	for op, ds := range t {
		slices.Sort(ds)
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		b.ReportMetric(ms(sum/time.Duration(len(ds))), op+"-ms")
		b.ReportMetric(ms(ds[(len(ds)*99)/100]), op+"-p99-ms")
	}
}

// BenchmarkCatalogOps: per iteration, create a volume, look up a filled
// name chosen at random (lookup) and the volume just created (lookup-hot:
// its objects in the file system's cache), snapshot the volume, clone the snapshot, rename the clone and
// remove it (then, untimed, the snapshot and the volume). ns/op is the
// whole round; each operation's mean and p99 are reported as metrics.
func BenchmarkCatalogOps(b *testing.B) {
	m, n := benchManager(b)
	ctx := context.Background()
	run := strconv.FormatUint(rand.Uint64()%1e9, 36)
	t := opTimes{}
	b.ResetTimer()
	for i := range b.N {
		vol, snap := fmt.Sprintf("zb%s-%d-v", run, i), fmt.Sprintf("zb%s-%d-s", run, i)
		clone, renamed := fmt.Sprintf("zb%s-%d-c", run, i), fmt.Sprintf("zb%s-%d-r", run, i)
		check := func(err error) {
			if err != nil {
				b.Fatal(err)
			}
		}
		check(t.time("create", func() error { _, err := m.CreateVolume(ctx, vol, 1<<30, 0); return err }))
		check(t.time("lookup", func() error { _, err := m.Lookup(ctx, benchName(rand.IntN(n))); return err }))
		check(t.time("lookup-hot", func() error { _, err := m.Lookup(ctx, vol); return err }))
		check(t.time("snapshot", func() error { _, err := m.Snapshot(ctx, vol, snap); return err }))
		check(t.time("clone", func() error { _, err := m.Clone(ctx, snap, clone, 0); return err }))
		check(t.time("rename", func() error { return m.Rename(ctx, clone, renamed) }))
		check(t.time("remove", func() error { return m.Remove(ctx, renamed) }))
		b.StopTimer()
		check(m.Remove(ctx, snap))
		check(m.Remove(ctx, vol))
		b.StartTimer()
	}
	b.StopTimer()
	t.report(b)
}

// BenchmarkCatalogLookupCold: per iteration, look up a filled name chosen
// at random after dropping the kernel's caches (untimed; needs root) and
// running the shell command ARCHIP_BENCH_DROP if set (bench/catalog.sh
// drops a Ceph OSD's caches with it). A random lookup's cost depends on
// how much of the store the kernel (file store) or the OSD (RADOS) caches,
// which at 10^6 records is a matter of the machine's memory and its other
// tenants, not of the catalog: measured cold at every N, as lookup-hot is
// measured cached, the ratio between sizes is the catalog's own. Run apart
// from BenchmarkCatalogOps, whose operations a drop would slow.
func BenchmarkCatalogLookupCold(b *testing.B) {
	m, n := benchManager(b)
	ctx := context.Background()
	t := opTimes{}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		syscall.Sync()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			b.Skipf("dropping the kernel's caches: %v", err)
		}
		if drop := os.Getenv("ARCHIP_BENCH_DROP"); drop != "" {
			if out, err := exec.Command("sh", "-c", drop).CombinedOutput(); err != nil {
				b.Fatalf("ARCHIP_BENCH_DROP: %v: %s", err, out)
			}
		}
		b.StartTimer()
		if err := t.time("lookup-cold", func() error { _, err := m.Lookup(ctx, benchName(rand.IntN(n))); return err }); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	t.report(b)
}

// BenchmarkCatalogList: per iteration, the first page of 100 and the
// first page of 1000 names of the listing, with their geometry (as
// 'archip volume list --limit' reads them).
func BenchmarkCatalogList(b *testing.B) {
	m, n := benchManager(b)
	ctx := context.Background()
	t := opTimes{}
	b.ResetTimer()
	for range b.N {
		for _, limit := range []int{100, 1000} {
			err := t.time("list"+strconv.Itoa(limit), func() error {
				page, _, err := m.ListPage(ctx, catalog.ListOptions{Limit: limit})
				if err == nil && len(page) < min(limit, n) {
					err = fmt.Errorf("first page of %d: %d records", limit, len(page))
				}
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	t.report(b)
}
