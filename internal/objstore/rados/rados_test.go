//go:build ceph

package rados

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/storetest"
)

var ctx = context.Background()

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return OpenTestStore(t) })
}

func TestMapErr(t *testing.T) {
	for _, c := range []struct {
		errno syscall.Errno
		want  error
	}{
		{syscall.ENOENT, objstore.ErrNotFound},
		{syscall.EEXIST, objstore.ErrExists},
		{syscall.ERANGE, objstore.ErrConflict},
		{syscall.ECANCELED, objstore.ErrConflict},
		{syscall.EOVERFLOW, objstore.ErrConflict},
		{syscall.ENOSPC, objstore.ErrNoSpace},
		{syscall.EDQUOT, objstore.ErrNoSpace},
		{syscall.EROFS, objstore.ErrReadOnly},
		{syscall.ETIMEDOUT, objstore.ErrTimeout},
		{syscall.ESHUTDOWN, objstore.ErrFenced},
	} {
		if err := mapErr(errnoError(-int(c.errno))); !errors.Is(err, c.want) {
			t.Errorf("errno %d (%v): %v, want %v", int(c.errno), c.errno, err, c.want)
		}
	}
	if err := mapErr(errnoError(-int(syscall.EIO))); err == nil || errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("EIO: %v", err)
	}
	if mapErr(nil) != nil {
		t.Error("mapErr(nil) != nil")
	}
}

func TestBadURL(t *testing.T) {
	for _, raw := range []string{"rados://", "rados://p?bogus=1"} {
		u, _ := url.Parse(raw)
		if _, err := Open(context.Background(), u); err == nil {
			t.Errorf("Open(%q) succeeded", raw)
		}
	}
}

// TestFullPool: on a pool over its quota, writes fail with ErrNoSpace
// instead of waiting for space (librados's default), and deletes, which
// free it, go through.
func TestFullPool(t *testing.T) {
	base := OpenTestStore(t)
	pool := fmt.Sprintf("archip-full-%d", os.Getpid())
	mon := func(cmd map[string]any) {
		t.Helper()
		b, _ := json.Marshal(cmd)
		if _, info, err := base.conn.MonCommand(b); err != nil {
			t.Fatalf("%v: %v (%s)", cmd, err, info)
		}
	}
	if err := base.conn.MakePool(pool); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mon(map[string]any{"prefix": "osd pool delete", "pool": pool, "pool2": pool, "yes_i_really_really_mean_it": true})
	})
	mon(map[string]any{"prefix": "osd pool set-quota", "pool": pool, "field": "max_objects", "val": "3"})
	u, _ := url.Parse("rados://" + pool + "?conf=" + url.QueryEscape(os.Getenv("ARCHIP_TEST_CEPH_CONF")))
	s, err := Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	closeStore := true
	defer func() {
		if closeStore {
			s.Close()
		}
	}()

	// The monitor marks the pool full when the OSD next reports its
	// usage (seconds); until then writes still land.
	deadline := time.Now().Add(2 * time.Minute)
	var full error
	for i := 0; full == nil; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the pool over its quota was never reported full")
		}
		done := make(chan error, 1)
		go func() { _, err := s.Put(ctx, fmt.Sprintf("o%d", i), []byte("data")); done <- err }()
		var err error
		select {
		case err = <-done:
		case <-time.After(time.Minute):
			closeStore = false // it would wait for the held write
			t.Fatalf("write %d held for a minute on a pool over quota", i)
		}
		switch {
		case errors.Is(err, objstore.ErrNoSpace):
			full = err
		case err != nil:
			t.Fatalf("write %d on a pool over quota: %v (want ErrNoSpace)", i, err)
		default:
			time.Sleep(500 * time.Millisecond)
		}
	}
	t.Logf("full: %v", full)
	// An in-place write returns once sent; Sync reports its failure.
	// (Sync is bounded here: a write held by the full pool would hang it.)
	syncWithin := func(name string) error {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		err := s.Sync(sctx, name)
		if errors.Is(err, context.DeadlineExceeded) {
			closeStore = false
			t.Fatalf("in-place write to %s held for a minute on a full pool", name)
		}
		return err
	}
	if err := s.WriteAt(ctx, "o1", []byte("more"), 4); err != nil && !errors.Is(err, objstore.ErrNoSpace) {
		t.Fatalf("in-place write on a full pool: %v, want nil (sent) or ErrNoSpace", err)
	}
	if err := syncWithin("o1"); !errors.Is(err, objstore.ErrNoSpace) {
		t.Fatalf("Sync of an in-place write on a full pool: %v, want ErrNoSpace", err)
	}
	// Merged: writes queued behind one in flight go as one operation,
	// which fails as fast (full-try holds for it too).
	real := s.merger.submit
	gate := make(chan struct{})
	var once sync.Once
	s.merger.submit = func(name string, ext []extent, done func(error)) error {
		once.Do(func() { <-gate })
		return real(name, ext, done)
	}
	errs := make(chan error, 3)
	for i := range 3 {
		go func() { errs <- s.WriteAt(ctx, "o0", []byte("more"), int64(4+4*i)) }()
		waitFor(t, "queued", func() bool { return i == 0 || s.merger.waiting("o0") == i })
	}
	close(gate)
	for i := range 3 {
		select {
		case err := <-errs:
			if err != nil && !errors.Is(err, objstore.ErrNoSpace) {
				t.Fatalf("merged in-place write on a full pool: %v, want nil (sent) or ErrNoSpace", err)
			}
		case <-time.After(time.Minute):
			closeStore = false
			t.Fatalf("merged write %d held for a minute on a full pool", i)
		}
	}
	if err := syncWithin("o0"); !errors.Is(err, objstore.ErrNoSpace) {
		t.Fatalf("Sync of merged in-place writes on a full pool: %v, want ErrNoSpace", err)
	}
	if b, _, err := s.Get(ctx, "o0"); err != nil || string(b) != "data" {
		t.Fatalf("o0 after refused writes: %q, %v", b, err)
	}
	if err := s.Delete(ctx, "o0"); err != nil {
		t.Fatalf("delete on a full pool: %v", err)
	}
}

// openTestStoreNS is OpenTestStore that also returns the store's base
// namespace.
func openTestStoreNS(t *testing.T) (*Store, string) {
	t.Helper()
	conf := os.Getenv("ARCHIP_TEST_CEPH_CONF")
	if conf == "" {
		OpenTestStore(t) // skips, or fails under CI=true
	}
	ns := fmt.Sprintf("t%d-%d", os.Getpid(), testNamespaces.Add(1))
	u, _ := url.Parse(fmt.Sprintf("rados://archip?conf=%s&namespace=%s", url.QueryEscape(conf), ns))
	s, err := Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, ns
}

// keysIn lists the keys of one RADOS namespace of the test pool.
func keysIn(t *testing.T, s *Store, ns string) []string {
	t.Helper()
	io, err := s.conn.OpenIOContext("archip")
	if err != nil {
		t.Fatal(err)
	}
	defer io.Destroy()
	io.SetNamespace(ns)
	it, err := io.Iter()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var keys []string
	for it.Next() {
		if !strings.Contains(it.Value(), "#") { // the index's objects
			keys = append(keys, it.Value())
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	return keys
}

// TestCatalogNamespaces: objects under cat/ live in a RADOS namespace per
// directory, so that listing a directory lists that namespace alone; every
// other object stays in the base namespace, and every prefix lists right.
func TestCatalogNamespaces(t *testing.T) {
	s, base := openTestStoreNS(t)
	names := []string{
		"cat/name/a", "cat/name/ab", "cat/name/b", "cat/id/1", "cat/x/a", "cat/x/sub/d", "cat/xy/c",
		"cat/child/P/1", "cat/child/P/2", "cat/child/PQ/1", "cat/child/Q/1", "cat/top",
		"catalog", "cat", "cats/z", "blk/00ff",
	}
	for _, n := range names {
		if _, err := s.Put(ctx, n, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	if got := fmt.Sprint(keysIn(t, s, base)); got != "[blk/00ff cat catalog cats/z]" {
		t.Errorf("base namespace %q holds %s, want only the objects outside cat/", base, got)
	}
	if got := fmt.Sprint(keysIn(t, s, base+"/cat/child/P/")); got != "[cat/child/P/1 cat/child/P/2]" {
		t.Errorf("namespace of cat/child/P/ holds %s", got)
	}
	if got := fmt.Sprint(keysIn(t, s, base+"/cat/name/")); got != "[cat/name/a cat/name/ab cat/name/b]" {
		t.Errorf("namespace of cat/name/ holds %s", got)
	}

	list := func(prefix string) []string {
		t.Helper()
		var got []string
		err := s.List(ctx, prefix, func(in objstore.Info) error {
			if in.Size != int64(len(in.Name)) {
				t.Errorf("List(%q): %s has size %d, want %d", prefix, in.Name, in.Size, len(in.Name))
			}
			got = append(got, in.Name)
			return nil
		})
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		sort.Strings(got)
		return got
	}
	all := append([]string(nil), names...)
	sort.Strings(all)
	under := func(p string) []string {
		var w []string
		for _, n := range all {
			if strings.HasPrefix(n, p) {
				w = append(w, n)
			}
		}
		return w
	}
	// The index of a fresh store is built (an empty walk) on first use.
	if err := s.ensureIndex(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		prefix string
		walks  int64 // walks of the pool the listing may make
	}{
		{"cat/child/P/", 0}, {"cat/name/", 0}, {"cat/name/a", 0}, {"cat/id/", 0}, {"cat/x/sub/", 0},
		{"cat/child/P", 0}, {"cat/child/", 0}, {"cat/x/", 0}, {"cat/x", 0}, {"cat/", 0}, {"cat/t", 0},
		{"cat", 1}, {"ca", 1}, {"", 1}, {"cats/", 1}, {"blk/", 1}, {"cat/nothing/", 0}, {"cat/name/zz", 0},
	} {
		before := s.walks.Load()
		if got, want := list(c.prefix), under(c.prefix); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("List(%q) = %v, want %v", c.prefix, got, want)
		}
		if n := s.walks.Load() - before; n > c.walks {
			t.Errorf("List(%q) walked the pool %d times, want at most %d", c.prefix, n, c.walks)
		}
		// In byte order, from any name on.
		for _, after := range append([]string{""}, all...) {
			var got []string
			err := s.ListNamesAfter(ctx, c.prefix, after, func(n string) error {
				got = append(got, n)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, n := range under(c.prefix) {
				if n > after {
					want = append(want, n)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("ListNamesAfter(%q, %q) = %v, want %v", c.prefix, after, got, want)
			}
		}
	}
	if n := s.fullWalks.Load(); n != 1 {
		t.Errorf("%d walks of every namespace, want 1 (the index's build)", n)
	}

	// The data path and copies reach catalog objects too.
	if err := s.WriteAt(ctx, "cat/w/o", []byte("xyz"), 2); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 5)
	if err := s.ReadAt(ctx, "cat/w/o", p, 0); err != nil || string(p) != "\x00\x00xyz" {
		t.Fatalf("ReadAt cat/w/o = %q, %v", p, err)
	}
	for _, c := range [][2]string{{"cat/w/o", "cat/w/o2"}, {"cat/w/o", "cat/v/o"}, {"blk/00ff", "cat/v/b"}, {"cat/w/o", "blk/o"}} {
		if err := s.Copy(ctx, c[0], c[1]); err != nil {
			t.Fatalf("Copy %s %s: %v", c[0], c[1], err)
		}
		a, _, _ := s.Get(ctx, c[0])
		b, _, err := s.Get(ctx, c[1])
		if err != nil || string(a) != string(b) {
			t.Errorf("Copy %s %s: got %q, %v; want %q", c[0], c[1], b, err, a)
		}
		if err := s.Copy(ctx, c[0], c[1]); !errors.Is(err, objstore.ErrExists) {
			t.Errorf("Copy onto %s: %v, want ErrExists", c[1], err)
		}
	}
	if err := s.Copy(ctx, "cat/w/none", "cat/v/none"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Copy of a missing catalog object: %v, want ErrNotFound", err)
	}
}

// catStore is a Store whose every name is under cat/, for running the
// conformance suite through the catalog's namespaces.
type catStore struct{ s *Store }

const catDir = "cat/conf/"

func (c catStore) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	return c.s.ReadAt(ctx, catDir+name, p, off)
}
func (c catStore) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	return c.s.Get(ctx, catDir+name)
}
func (c catStore) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	return c.s.Put(ctx, catDir+name, data)
}
func (c catStore) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	return c.s.Create(ctx, catDir+name, data)
}
func (c catStore) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	return c.s.Swap(ctx, catDir+name, data, old)
}
func (c catStore) Delete(ctx context.Context, name string) error {
	return c.s.Delete(ctx, catDir+name)
}
func (c catStore) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	return c.s.DeleteVersion(ctx, catDir+name, old)
}
func (c catStore) ListNames(ctx context.Context, prefix string, fn func(string) error) error {
	return c.s.ListNames(ctx, catDir+prefix, func(name string) error {
		return fn(strings.TrimPrefix(name, catDir))
	})
}
func (c catStore) ListNamesAfter(ctx context.Context, prefix, after string, fn func(string) error) error {
	return c.s.ListNamesAfter(ctx, catDir+prefix, catDir+after, func(name string) error {
		return fn(strings.TrimPrefix(name, catDir))
	})
}
func (c catStore) Stat(ctx context.Context, name string) (objstore.Info, error) {
	in, err := c.s.Stat(ctx, catDir+name)
	in.Name = strings.TrimPrefix(in.Name, catDir)
	return in, err
}
func (c catStore) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	return c.s.List(ctx, catDir+prefix, func(in objstore.Info) error {
		in.Name = strings.TrimPrefix(in.Name, catDir)
		return fn(in)
	})
}
func (c catStore) FreshStat() bool { return true }
func (c catStore) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	return c.s.WriteAt(ctx, catDir+name, p, off)
}
func (c catStore) Copy(ctx context.Context, src, dst string) error {
	return c.s.Copy(ctx, catDir+src, catDir+dst)
}
func (c catStore) ReadLend(ctx context.Context, name string, off int64, n int, fn func([][]byte) error) error {
	return c.s.ReadLend(ctx, catDir+name, off, n, fn)
}
func (c catStore) Close() error { return c.s.Close() }

// TestConformanceCatalog runs the conformance suite on names under cat/,
// which live in namespaces of their own.
func TestConformanceCatalog(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return catStore{OpenTestStore(t)} })
}

// TestListStatsConcurrently: a listing stats its objects several at a
// time (one round trip each: one by one, a listing of 10^5 catalog records
// would take minutes), and still calls fn one at a time.
func TestListStatsConcurrently(t *testing.T) {
	s := OpenTestStore(t)
	const n, want = 64, 8
	for i := range n {
		if _, err := s.Put(ctx, fmt.Sprintf("cat/name/v%d", i), []byte("r")); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	inflight, most := 0, 0
	enough := make(chan struct{})
	closed, gaveUp := false, false
	s.statHook = func() {
		mu.Lock()
		inflight++
		most = max(most, inflight)
		if inflight == want && !closed {
			close(enough)
			closed = true
		}
		wait := !gaveUp && most < want
		mu.Unlock()
		if wait {
			select {
			case <-enough:
			case <-time.After(2 * time.Second):
				mu.Lock()
				gaveUp = true
				mu.Unlock()
			}
		}
		mu.Lock()
		inflight--
		mu.Unlock()
	}
	var calls, inFn atomic.Int32
	err := s.List(ctx, "cat/name/", func(objstore.Info) error {
		if inFn.Add(1) != 1 {
			t.Error("fn called concurrently")
		}
		calls.Add(1)
		inFn.Add(-1)
		return nil
	})
	if err != nil || calls.Load() != n {
		t.Fatalf("List: %d calls, %v; want %d", calls.Load(), err, n)
	}
	if most < want {
		t.Errorf("at most %d stats at once, want %d", most, want)
	}
}

// TestFence: a client fenced by another can write nothing more, with
// objstore.ErrFenced, and what it wrote before stays; the fencer is not
// affected.
func TestFence(t *testing.T) {
	ss := OpenTestStores(t, 2)
	a, b := ss[0], ss[1]
	id, err := a.FenceID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bid, err := b.FenceID(ctx)
	if err != nil || bid == id {
		t.Fatalf("two connections' ids %q and %q (%v)", id, bid, err)
	}
	if err := a.WriteAt(ctx, "obj", []byte("before"), 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx, "obj"); err != nil {
		t.Fatal(err)
	}
	if err := b.Fence(ctx, id); err != nil {
		t.Fatal(err)
	}
	// b's operation on the object comes first: a's next one is refused.
	got := make([]byte, 6)
	if err := b.ReadAt(ctx, "obj", got, 0); err != nil || string(got) != "before" {
		t.Fatalf("read %q, %v", got, err)
	}
	// The write returns once sent (or fails at once); its Sync reports
	// the refusal.
	err = a.WriteAt(ctx, "obj", []byte("after!"), 0)
	if err == nil {
		err = a.Sync(ctx, "obj")
	}
	if !errors.Is(err, objstore.ErrFenced) {
		t.Fatalf("fenced client's write: %v, want ErrFenced", err)
	}
	if _, err := a.Put(ctx, "other", []byte("x")); !errors.Is(err, objstore.ErrFenced) {
		t.Fatalf("fenced client's put: %v, want ErrFenced", err)
	}
	if err := b.ReadAt(ctx, "obj", got, 0); err != nil || string(got) != "before" {
		t.Fatalf("after the fenced write, read %q, %v", got, err)
	}
	if _, err := b.Put(ctx, "other", []byte("y")); err != nil {
		t.Fatalf("the fencer's put: %v", err)
	}
}
