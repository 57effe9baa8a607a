// Package storetest is the conformance suite every objstore backend runs:
// a backend's test is a few lines that call Run.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// Run runs the whole suite. open returns an empty store; it is called
// once per subtest (and once to see which optional interfaces the
// backend has), and the suite closes what it opens.
func Run(t *testing.T, open func(t *testing.T) objstore.Store) {
	tests := []struct {
		name  string
		fn    func(t *testing.T, s objstore.Store)
		needs func(objstore.Store) bool // nil: every backend
	}{
		{"BadNames", testBadNames, nil},
		{"PutGet", testPutGet, nil},
		{"CreateExclusive", testCreate, nil},
		{"Swap", testSwap, nil},
		{"Delete", testDelete, nil},
		{"DeleteVersion", testDeleteVersion, nil},
		{"ConcurrentDeleteVersion", testConcurrentDeleteVersion, nil},
		{"ReadAt", testReadAt, nil},
		{"Stat", testStat, nil},
		{"List", testList, nil},
		{"ListNames", testListNames, nil},
		{"ConcurrentSwap", testConcurrentSwap, nil},
		{"ConcurrentCreate", testConcurrentCreate, nil},
		{"CreateDeleteMutex", testCreateDeleteMutex, nil},
		{"RangeWriter", testRangeWriter, has(objstore.CapRangeWrite)},
		{"Handles", testHandles, has(objstore.CapHandles)},
		{"Copier", testCopier, has(objstore.CapCopy)},
		{"Lender", testLender, has(objstore.CapLend)},
		{"OrderedLister", testOrderedLister, has(objstore.CapListOrdered)},
		{"BufferOwnership", testBuffers, nil},
	}
	probe := open(t)
	defer probe.Close()
	for _, tc := range tests {
		if tc.needs != nil && !tc.needs(probe) {
			continue // the backend lacks the capability
		}
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			defer s.Close()
			defer func() {
				if r := recover(); r != nil {
					f, ok := r.(failure)
					if !ok {
						panic(r)
					}
					t.Fatal(f.err)
				}
			}()
			tc.fn(t, s)
		})
	}
}

var ctx = context.Background()

// failure carries an error from must to the recover in Run.
type failure struct{ err error }

// must returns v, or fails the running subtest if err is not nil.
func must[T any](v T, err error) T {
	if err != nil {
		panic(failure{err})
	}
	return v
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func testBadNames(t *testing.T, s objstore.Store) {
	for _, name := range []string{"", "/a", "a/", "a//b", "a/../b", ".", "a b", "a\x00", "ä", string(make([]byte, objstore.MaxNameLen+1))} {
		_, err := s.Put(ctx, name, []byte("x"))
		wantErr(t, err, objstore.ErrBadName, fmt.Sprintf("Put(%q)", name))
		_, _, err = s.Get(ctx, name)
		wantErr(t, err, objstore.ErrBadName, fmt.Sprintf("Get(%q)", name))
		err = s.Delete(ctx, name)
		wantErr(t, err, objstore.ErrBadName, fmt.Sprintf("Delete(%q)", name))
	}
	n := 0
	noErr(t, s.List(ctx, "", func(objstore.Info) error { n++; return nil }))
	if n != 0 {
		t.Fatalf("bad names created %d objects", n)
	}
}

func testPutGet(t *testing.T, s objstore.Store) {
	_, _, err := s.Get(ctx, "a/missing")
	wantErr(t, err, objstore.ErrNotFound, "Get of a missing object")
	v1 := must(s.Put(ctx, "a/b", []byte("one")))
	v2 := must(s.Put(ctx, "a/b", []byte("two!")))
	if v1 == 0 || v2 == 0 || v2 == v1 {
		t.Fatalf("versions %d then %d: want two different nonzero versions", v1, v2)
	}
	v3 := must(s.Put(ctx, "a/b", []byte("two!")))
	if v3 == v2 || v3 == v1 || v3 == 0 {
		t.Fatalf("the same bytes put again: version %d after %d, %d; want a new one", v3, v1, v2)
	}
	b, v, err := s.Get(ctx, "a/b")
	if err != nil || string(b) != "two!" || v != v3 {
		t.Fatalf("Get = %q, %d, %v; want two!, %d", b, v, err, v3)
	}
	must(s.Put(ctx, "empty", nil))
	b, _, err = s.Get(ctx, "empty")
	if err != nil || len(b) != 0 {
		t.Fatalf("empty object: %q, %v", b, err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16)
	must(s.Put(ctx, "big", big))
	if b := must(objstoreGet(s, "big")); !bytes.Equal(b, big) {
		t.Fatal("4 MiB object read back different")
	}
}

func objstoreGet(s objstore.Store, name string) ([]byte, error) {
	b, _, err := s.Get(ctx, name)
	return b, err
}

func testCreate(t *testing.T, s objstore.Store) {
	v := must(s.Create(ctx, "c", []byte("first")))
	_, err := s.Create(ctx, "c", []byte("second"))
	wantErr(t, err, objstore.ErrExists, "second Create")
	b, v2, _ := s.Get(ctx, "c")
	if string(b) != "first" || v2 != v {
		t.Fatalf("after failed Create: %q v%d, want first v%d", b, v2, v)
	}
	noErr(t, s.Delete(ctx, "c"))
	must(s.Create(ctx, "c", []byte("again")))
}

func testSwap(t *testing.T, s objstore.Store) {
	_, err := s.Swap(ctx, "s", []byte("x"), 5)
	wantErr(t, err, objstore.ErrConflict, "Swap of an absent object from version 5")
	v1 := must(s.Swap(ctx, "s", []byte("one"), 0))
	_, err = s.Swap(ctx, "s", []byte("x"), 0)
	wantErr(t, err, objstore.ErrConflict, "Swap from 0 of an existing object")
	_, err = s.Swap(ctx, "s", []byte("x"), v1+100)
	wantErr(t, err, objstore.ErrConflict, "Swap from a wrong version")
	v2 := must(s.Swap(ctx, "s", []byte("two"), v1))
	_, err = s.Swap(ctx, "s", []byte("x"), v1)
	wantErr(t, err, objstore.ErrConflict, "Swap from a stale version")
	b, v, _ := s.Get(ctx, "s")
	if string(b) != "two" || v != v2 {
		t.Fatalf("Get = %q v%d, want two v%d", b, v, v2)
	}
}

func testDelete(t *testing.T, s objstore.Store) {
	wantErr(t, s.Delete(ctx, "d"), objstore.ErrNotFound, "Delete of a missing object")
	v := must(s.Put(ctx, "d", []byte("x")))
	noErr(t, s.Delete(ctx, "d"))
	_, _, err := s.Get(ctx, "d")
	wantErr(t, err, objstore.ErrNotFound, "Get after Delete")
	_, err = s.Stat(ctx, "d")
	wantErr(t, err, objstore.ErrNotFound, "Stat after Delete")
	wantErr(t, s.ReadAt(ctx, "d", make([]byte, 1), 0), objstore.ErrNotFound, "ReadAt after Delete")
	wantErr(t, s.Delete(ctx, "d"), objstore.ErrNotFound, "second Delete")
	_, err = s.Swap(ctx, "d", []byte("y"), v)
	wantErr(t, err, objstore.ErrConflict, "Swap from the version before Delete")
	must(s.Put(ctx, "d", []byte("x")))
	_, err = s.Swap(ctx, "d", []byte("y"), v)
	wantErr(t, err, objstore.ErrConflict, "Swap from the version before Delete of the object put again with the same bytes")
}

func testDeleteVersion(t *testing.T, s objstore.Store) {
	wantErr(t, s.DeleteVersion(ctx, "d", 1), objstore.ErrNotFound, "DeleteVersion of a missing object")
	v1 := must(s.Put(ctx, "d", []byte("one")))
	wantErr(t, s.DeleteVersion(ctx, "d", v1+100), objstore.ErrConflict, "DeleteVersion from a wrong version")
	v2 := must(s.Swap(ctx, "d", []byte("two"), v1))
	wantErr(t, s.DeleteVersion(ctx, "d", v1), objstore.ErrConflict, "DeleteVersion from a stale version")
	if b, v, err := s.Get(ctx, "d"); err != nil || string(b) != "two" || v != v2 {
		t.Fatalf("after refused DeleteVersions: Get = %q v%d %v, want two v%d", b, v, err, v2)
	}
	noErr(t, s.DeleteVersion(ctx, "d", v2))
	_, _, err := s.Get(ctx, "d")
	wantErr(t, err, objstore.ErrNotFound, "Get after DeleteVersion")
	wantErr(t, s.DeleteVersion(ctx, "d", v2), objstore.ErrNotFound, "second DeleteVersion")
	_, err = s.Swap(ctx, "d", []byte("y"), v2)
	wantErr(t, err, objstore.ErrConflict, "Swap from the version before DeleteVersion")
	v3 := must(s.Create(ctx, "d", []byte("three")))
	wantErr(t, s.DeleteVersion(ctx, "d", 0), objstore.ErrConflict, "DeleteVersion from version 0 of an existing object")
	noErr(t, s.DeleteVersion(ctx, "d", v3))
	wantErr(t, s.DeleteVersion(ctx, "d", 0), objstore.ErrNotFound, "DeleteVersion from version 0 of an absent object")
}

// testConcurrentDeleteVersion: of several deleters that read one version,
// one succeeds and the others conflict or find the object gone; and a
// deleter racing a re-creator never deletes the new object.
func testConcurrentDeleteVersion(t *testing.T, s objstore.Store) {
	for round := 0; round < 20; round++ {
		v := must(s.Put(ctx, "cd", []byte("x")))
		var wg sync.WaitGroup
		var wins atomic.Int32
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := s.DeleteVersion(ctx, "cd", v)
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, objstore.ErrConflict), errors.Is(err, objstore.ErrNotFound):
				default:
					t.Error(err)
				}
			}()
		}
		var created atomic.Bool
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Create(ctx, "cd", []byte("new")); err == nil {
				created.Store(true)
			} else if !errors.Is(err, objstore.ErrExists) {
				t.Error(err)
			}
		}()
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d DeleteVersions of one version succeeded, want 1", round, wins.Load())
		}
		b, _, err := s.Get(ctx, "cd")
		if created.Load() {
			if err != nil || string(b) != "new" {
				t.Fatalf("round %d: the object created after the delete is gone: %q %v", round, b, err)
			}
		} else {
			wantErr(t, err, objstore.ErrNotFound, "Get after the delete")
		}
		if err == nil {
			noErr(t, s.Delete(ctx, "cd"))
		}
	}
}

func testReadAt(t *testing.T, s objstore.Store) {
	wantErr(t, s.ReadAt(ctx, "r", make([]byte, 4), 0), objstore.ErrNotFound, "ReadAt of a missing object")
	must(s.Put(ctx, "r", []byte("hello world")))
	for _, tc := range []struct {
		off  int64
		n    int
		want string
	}{
		{0, 5, "hello"},
		{6, 5, "world"},
		{6, 8, "world\x00\x00\x00"},
		{11, 2, "\x00\x00"},
		{100, 3, "\x00\x00\x00"},
		{3, 0, ""},
	} {
		p := bytes.Repeat([]byte{0xff}, tc.n)
		if err := s.ReadAt(ctx, "r", p, tc.off); err != nil || string(p) != tc.want {
			t.Errorf("ReadAt(off %d, len %d) = %q, %v; want %q", tc.off, tc.n, p, err, tc.want)
		}
	}
	if err := s.ReadAt(ctx, "r", make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at a negative offset succeeded")
	}
}

func testStat(t *testing.T, s objstore.Store) {
	v := must(s.Put(ctx, "st/x", make([]byte, 1234)))
	in := must(s.Stat(ctx, "st/x"))
	if in.Name != "st/x" || in.Size != 1234 || in.Version != v || in.ModTime.IsZero() {
		t.Fatalf("Stat = %+v; want name st/x size 1234 version %d and a time", in, v)
	}
}

func testList(t *testing.T, s objstore.Store) {
	names := []string{"vol/a/map", "vol/a/seg/1", "vol/ab/map", "vol/b/map", "blk/00ff", "blk/0100", "top"}
	for _, n := range names {
		must(s.Put(ctx, n, []byte(n)))
	}
	noErr(t, s.Delete(ctx, "top"))
	list := func(prefix string) []string {
		var got []string
		noErr(t, s.List(ctx, prefix, func(in objstore.Info) error {
			if in.Size != int64(len(in.Name)) {
				t.Errorf("List: %s has size %d, want %d", in.Name, in.Size, len(in.Name))
			}
			got = append(got, in.Name)
			return nil
		}))
		sort.Strings(got)
		return got
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"blk/00ff", "blk/0100", "vol/a/map", "vol/a/seg/1", "vol/ab/map", "vol/b/map"}},
		{"vol/a", []string{"vol/a/map", "vol/a/seg/1", "vol/ab/map"}},
		{"vol/a/", []string{"vol/a/map", "vol/a/seg/1"}},
		{"blk/00", []string{"blk/00ff"}},
		{"vol/a/seg/1", []string{"vol/a/seg/1"}},
		{"nothing", nil},
		{"bad name/", nil},
	} {
		if got := list(tc.prefix); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("List(%q) = %v, want %v", tc.prefix, got, tc.want)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := s.List(ctx, "", func(objstore.Info) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("List with a failing callback: %v after %d calls", err, n)
	}
}

// testListNames: objstore.ListNames (the backend's NameLister, or List)
// names every object under the prefix once and nothing outside it; a
// deleted object may be named too.
func testListNames(t *testing.T, s objstore.Store) {
	names := []string{"vol/a/map", "vol/a/seg/1", "vol/ab/map", "vol/b/map", "blk/00ff", "blk/0100", "top"}
	for _, n := range names {
		must(s.Put(ctx, n, []byte(n)))
	}
	noErr(t, s.Delete(ctx, "top"))
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"blk/00ff", "blk/0100", "vol/a/map", "vol/a/seg/1", "vol/ab/map", "vol/b/map"}},
		{"vol/a", []string{"vol/a/map", "vol/a/seg/1", "vol/ab/map"}},
		{"vol/a/", []string{"vol/a/map", "vol/a/seg/1"}},
		{"blk/00", []string{"blk/00ff"}},
		{"vol/a/seg/1", []string{"vol/a/seg/1"}},
		{"nothing", nil},
		{"bad name/", nil},
	} {
		var got []string
		noErr(t, objstore.ListNames(ctx, s, tc.prefix, func(name string) error {
			got = append(got, name)
			return nil
		}))
		got = slices.DeleteFunc(got, func(n string) bool { return n == "top" && strings.HasPrefix(n, tc.prefix) })
		sort.Strings(got)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("ListNames(%q) = %v, want %v (and maybe the deleted top)", tc.prefix, got, tc.want)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := objstore.ListNames(ctx, s, "", func(string) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("ListNames with a failing callback: %v after %d calls", err, n)
	}
}

// testConcurrentSwap increments a counter from many goroutines with
// Swap: every successful Swap must be counted exactly once.
func testConcurrentSwap(t *testing.T, s objstore.Store) {
	must(s.Put(ctx, "counter", []byte("0")))
	const workers, each = 8, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				b, v, err := s.Get(ctx, "counter")
				if err != nil {
					t.Error(err)
					return
				}
				var n int
				fmt.Sscan(string(b), &n)
				_, err = s.Swap(ctx, "counter", []byte(fmt.Sprint(n+1)), v)
				if errors.Is(err, objstore.ErrConflict) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				done++
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	b := must(objstoreGet(s, "counter"))
	if string(b) != fmt.Sprint(wins) || wins != workers*each {
		t.Fatalf("counter = %s after %d successful swaps (want %d)", b, wins, workers*each)
	}
}

func testConcurrentCreate(t *testing.T, s objstore.Store) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Create(ctx, "once", []byte("x"))
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, objstore.ErrExists) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent Creates succeeded, want 1", wins)
	}
}

// testCreateDeleteMutex uses an object as a lock, as leases and the
// collector's lock do: taken by Create or by Swap from 0, released by
// Delete, while other goroutines keep trying and a lister walks the
// store. A holder must be alone, read its own record, and find its record
// there to delete; a deleted record must never come back.
func testCreateDeleteMutex(t *testing.T, s objstore.Store) {
	const workers, rounds = 4, 15
	var holders atomic.Int32
	var wg sync.WaitGroup
	stop := make(chan struct{})
	listed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				listed <- nil
				return
			default:
			}
			if err := s.List(ctx, "", func(objstore.Info) error { return nil }); err != nil {
				listed <- err
				return
			}
			runtime.Gosched()
		}
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; {
				id := []byte(fmt.Sprintf("holder %d round %d", w, r))
				var err error
				if (w+r)%2 == 0 {
					_, err = s.Create(ctx, "mutex", id)
				} else {
					_, err = s.Swap(ctx, "mutex", id, 0)
				}
				if errors.Is(err, objstore.ErrExists) || errors.Is(err, objstore.ErrConflict) {
					runtime.Gosched()
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if n := holders.Add(1); n != 1 {
					t.Errorf("%d holders at once", n)
				}
				if b, _, err := s.Get(ctx, "mutex"); err != nil || string(b) != string(id) {
					t.Errorf("holder reads %q, %v; want its own %q", b, err, id)
				}
				holders.Add(-1)
				if err := s.Delete(ctx, "mutex"); err != nil {
					t.Errorf("holder's delete: %v", err)
					return
				}
				r++
			}
		}()
	}
	wg.Wait()
	close(stop)
	noErr(t, <-listed)
	if _, _, err := s.Get(ctx, "mutex"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("after the last release: %v, want ErrNotFound", err)
	}
}

func testRangeWriter(t *testing.T, s objstore.Store) {
	w, _ := objstore.AsRangeWriter(s)
	noErr(t, w.WriteAt(ctx, "rw", []byte("abc"), 5))
	p := make([]byte, 10)
	noErr(t, s.ReadAt(ctx, "rw", p, 0))
	if string(p) != "\x00\x00\x00\x00\x00abc\x00\x00" {
		t.Fatalf("after WriteAt at 5: %q", p)
	}
	noErr(t, w.WriteAt(ctx, "rw", []byte("XY"), 0))
	noErr(t, w.WriteAt(ctx, "rw", []byte("Z"), 6))
	if in := must(s.Stat(ctx, "rw")); in.Size != 8 {
		t.Fatalf("size %d after writes up to 8", in.Size)
	}
	if sy, ok := objstore.AsSyncer(s); ok {
		noErr(t, sy.Sync(ctx, "rw"))
		if err := sy.Sync(ctx, "no-such"); !objstore.SyncWaits(s) || err != nil {
			// A Sync that only waits has nothing to wait for there.
			wantErr(t, err, objstore.ErrNotFound, "Sync of a missing object")
		}
	}
	b := must(objstoreGet(s, "rw"))
	if string(b) != "XY\x00\x00\x00aZc" {
		t.Fatalf("content %q", b)
	}
	if err := w.WriteAt(ctx, "rw", []byte("x"), -3); err == nil {
		t.Fatal("WriteAt at a negative offset succeeded")
	}
}

func testBuffers(t *testing.T, s objstore.Store) {
	data := []byte("original")
	must(s.Put(ctx, "buf", data))
	copy(data, "CHANGED!")
	b := must(objstoreGet(s, "buf"))
	if string(b) != "original" {
		t.Fatalf("store kept the caller's buffer: %q", b)
	}
	copy(b, "mutated!")
	if b := must(objstoreGet(s, "buf")); string(b) != "original" {
		t.Fatalf("Get returned the store's own buffer: %q", b)
	}
}

func testHandles(t *testing.T, s objstore.Store) {
	o, _ := objstore.AsHandleOpener(s)
	if _, err := o.OpenHandle(ctx, "h", false, false); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("OpenHandle of a missing object without create: %v", err)
	}
	h := must(o.OpenHandle(ctx, "h", true, true))
	noErr(t, h.WriteAt([]byte("abc"), 2))
	p := make([]byte, 7)
	noErr(t, h.ReadAt(p, 0))
	if string(p) != "\x00\x00abc\x00\x00" {
		t.Fatalf("handle read %q", p)
	}
	noErr(t, h.Sync())
	if b := must(objstoreGet(s, "h")); string(b) != "\x00\x00abc" {
		t.Fatalf("object after handle writes: %q", b)
	}
	// Writes through the name reach an open handle's object (same object).
	if w, ok := objstore.AsRangeWriter(s); ok {
		noErr(t, w.WriteAt(ctx, "h", []byte("Z"), 0))
		noErr(t, h.ReadAt(p[:1], 0))
		if p[0] != 'Z' {
			t.Fatalf("handle does not see an in-place write: %q", p[:1])
		}
	}
	noErr(t, h.Close())
	r := must(o.OpenHandle(ctx, "h", false, false))
	defer r.Close()
	noErr(t, r.ReadAt(p[:3], 2))
	if string(p[:3]) != "abc" {
		t.Fatalf("read-only handle read %q", p[:3])
	}
}

// has reports whether the backend offers capability c.
func has(c objstore.Caps) func(s objstore.Store) bool {
	return func(s objstore.Store) bool { return objstore.CapabilitiesOf(s)&c != 0 }
}

// testOrderedLister: names under a prefix, in byte order, after a name,
// and an error from fn stops the listing.
func testOrderedLister(t *testing.T, s objstore.Store) {
	var stored []string // by both runs
	for _, root := range []string{"", "cat/"} {
		t.Run("root="+root, func(t *testing.T) { testOrderedListerUnder(t, s, root, &stored) })
	}
}

// testOrderedListerUnder is testOrderedLister with every name under root:
// the catalog's (cat/), which some stores list from an index.
func testOrderedListerUnder(t *testing.T, s objstore.Store, root string, all *[]string) {
	ol, _ := objstore.AsOrderedLister(s)
	stored := *all
	defer func() { *all = stored }()
	for _, n := range []string{"o/b", "o/a", "o/a-1", "o/a/x", "o/c", "o/aa", "p/a"} {
		skippable := n == "o/a/x"
		n = root + n
		_, err := s.Put(ctx, n, []byte(n))
		if skippable && errors.Is(err, objstore.ErrBadName) {
			continue // a server on which "o/a" cannot also be a directory
		}
		noErr(t, err)
		stored = append(stored, n)
	}
	slices.Sort(stored)
	// want is the model: the stored names under prefix, after after, at
	// most limit of them (0: all).
	want := func(prefix, after string, limit int) string {
		var out []string
		for _, n := range stored {
			if strings.HasPrefix(n, prefix) && n > after && (limit == 0 || len(out) < limit) {
				out = append(out, n)
			}
		}
		return strings.Join(out, " ")
	}
	list := func(prefix, after string, limit int) string {
		var got []string
		stop := errors.New("stop")
		err := ol.ListNamesAfter(ctx, prefix, after, func(n string) error {
			got = append(got, n)
			if len(got) == limit {
				return stop
			}
			return nil
		})
		if limit > 0 && len(got) == limit {
			wantErr(t, err, stop, "ListNamesAfter stopped by fn")
		} else {
			noErr(t, err)
		}
		return strings.Join(got, " ")
	}
	if got := strings.ReplaceAll(want(root+"o/", "", 0), root, ""); got != "o/a o/a-1 o/a/x o/aa o/b o/c" && got != "o/a o/a-1 o/aa o/b o/c" {
		t.Fatalf("the model is wrong: %q", got)
	}
	for _, c := range []struct {
		prefix, after string
		limit         int
	}{
		{"o/", "", 0}, {"o/", "o/a-1", 0}, {"o/a", "o/a", 0}, {"o/", "o/a", 2},
		{"o/", "o/c", 0}, {"o/", "z", 0}, {"", "o/c", 0},
		{"o/", "a", 0}, {"o/a/", "o/", 0}, {"o/", "o/a/", 0}, {"o/", "o/a0", 1},
		{"o/", "o/b", 1}, {"o/a", "o/a.", 0}, {"o/x", "", 0},
	} {
		if c.prefix != "" || root == "" {
			c.prefix = root + c.prefix
		}
		if c.after != "" {
			c.after = root + c.after
		}
		if got, want := list(c.prefix, c.after, c.limit), want(c.prefix, c.after, c.limit); got != want {
			t.Errorf("ListNamesAfter(%q, %q) = %q, want %q", c.prefix, c.after, got, want)
		}
	}
}

func testCopier(t *testing.T, s objstore.Store) {
	c, _ := objstore.AsCopier(s)
	wantErr(t, c.Copy(ctx, "nosrc", "dst"), objstore.ErrNotFound, "Copy of a missing object")
	big := bytes.Repeat([]byte("copy me "), 1<<19) // 4 MiB
	must(s.Put(ctx, "src", big))
	noErr(t, c.Copy(ctx, "src", "dst"))
	if b := must(objstoreGet(s, "dst")); !bytes.Equal(b, big) {
		t.Fatal("copy differs from its source")
	}
	wantErr(t, c.Copy(ctx, "src", "dst"), objstore.ErrExists, "Copy onto an existing object")
	if w, ok := objstore.AsRangeWriter(s); ok {
		noErr(t, w.WriteAt(ctx, "dst", []byte("X"), 0))
		if b := must(objstoreGet(s, "src")); b[0] != 'c' {
			t.Fatal("writing the copy changed its source")
		}
	}
	if sy, ok := objstore.AsSyncer(s); ok {
		noErr(t, sy.Sync(ctx, "dst"))
	}
}

func testLender(t *testing.T, s objstore.Store) {
	l, _ := objstore.AsLender(s)
	data := make([]byte, 3<<20+123)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	must(s.Put(ctx, "lend", data))
	for _, c := range []struct {
		off int64
		n   int
	}{{0, len(data)}, {4096, 1 << 20}, {1, 4095}, {int64(len(data)) - 10, 4096}, {int64(len(data)) + 5, 100}, {7, 0}} {
		var got []byte
		calls := 0
		noErr(t, l.ReadLend(ctx, "lend", c.off, c.n, func(bufs [][]byte) error {
			calls++
			for _, b := range bufs {
				got = append(got, b...)
			}
			return nil
		}))
		want := data[min(c.off, int64(len(data))):min(c.off+int64(c.n), int64(len(data)))]
		if calls != 1 || !bytes.Equal(got, want) {
			t.Fatalf("ReadLend(%d, %d): %d calls, %d bytes, want 1 call and the object's %d bytes there", c.off, c.n, calls, len(got), len(want))
		}
	}
	called := false
	wantErr(t, l.ReadLend(ctx, "nolend", 0, 10, func([][]byte) error { called = true; return nil }), objstore.ErrNotFound, "ReadLend of a missing object")
	if called {
		t.Fatal("ReadLend called fn for a missing object")
	}
	errFn := errors.New("from fn")
	if err := l.ReadLend(ctx, "lend", 0, 10, func([][]byte) error { return errFn }); !errors.Is(err, errFn) {
		t.Fatalf("ReadLend returned %v, want fn's error", err)
	}
}
