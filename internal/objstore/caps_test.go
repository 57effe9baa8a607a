package objstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/storetest"
)

// fencing is a memory store that can fence, as RADOS can.
type fencing struct {
	*objstore.Mem
	fenced []string
}

func (f *fencing) FenceID(context.Context) (string, error) { return "me", nil }
func (f *fencing) Fence(_ context.Context, id string) error {
	f.fenced = append(f.fenced, id)
	return nil
}

// bare hides every capability of the store it embeds.
type bare struct{ objstore.Store }

// lazy is a Wrapper with none of the optional methods: it offers the
// wrapped store's capabilities all the same.
type lazy struct{ objstore.Store }

func (l lazy) Capabilities() objstore.Caps { return objstore.CapabilitiesOf(l.Store) }
func (l lazy) Unwrap() objstore.Store      { return l.Store }

// asAll finds each capability of s through the helpers, reporting which
// value answered it.
func asAll(s objstore.Store) map[objstore.Caps]any {
	m := map[objstore.Caps]any{}
	put := func(c objstore.Caps, v any, ok bool) {
		if ok {
			m[c] = v
		}
	}
	rw, ok := objstore.AsRangeWriter(s)
	put(objstore.CapRangeWrite, rw, ok)
	sy, ok := objstore.AsSyncer(s)
	put(objstore.CapSync, sy, ok)
	cp, ok := objstore.AsCopier(s)
	put(objstore.CapCopy, cp, ok)
	ho, ok := objstore.AsHandleOpener(s)
	put(objstore.CapHandles, ho, ok)
	le, ok := objstore.AsLender(s)
	put(objstore.CapLend, le, ok)
	fe, ok := objstore.AsFencer(s)
	put(objstore.CapFence, fe, ok)
	nl, ok := objstore.AsNameLister(s)
	put(objstore.CapListNames, nl, ok)
	ol, ok := objstore.AsOrderedLister(s)
	put(objstore.CapListOrdered, ol, ok)
	lc, ok := objstore.AsLazyCreator(s)
	put(objstore.CapLazyCreate, lc, ok)
	if objstore.FreshStat(s) {
		m[objstore.CapFreshStat] = s
	}
	return m
}

// TestWrapperKeepsCapabilities: an Observed store offers exactly the
// capabilities of each real store kind it wraps, each answered by the
// wrapper itself (so that its calls are observed); a wrapper cannot fake
// one the store lacks, nor hide one by lacking its method.
func TestWrapperKeepsCapabilities(t *testing.T) {
	file, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	stores := map[string]objstore.Store{"mem": objstore.NewMem(), "file": file,
		"fencing": &fencing{Mem: objstore.NewMem()}, "bare": bare{objstore.NewMem()}}
	for kind, s := range stores {
		probe := func(objstore.Op) objstore.Probe { return nil }
		o := objstore.Observe(s, probe)
		want, got := objstore.CapabilitiesOf(s), objstore.CapabilitiesOf(o)
		if got != want {
			t.Errorf("%s: observed store offers %v, the store %v", kind, got, want)
		}
		found := asAll(o)
		for c := objstore.Caps(1); c != 0 && c <= objstore.CapLazyCreate; c <<= 1 {
			v, ok := found[c]
			if ok != (want&c != 0) {
				t.Errorf("%s: capability %v found %v, offered %v", kind, c, ok, want&c != 0)
			}
			if ok && v != any(o) {
				t.Errorf("%s: capability %v answered by %T, not by the wrapper", kind, c, v)
			}
		}
		if l := (lazy{s}); objstore.CapabilitiesOf(l) != want || len(asAll(l)) != len(asAll(s)) {
			t.Errorf("%s: a wrapper without the methods hides capabilities: %v of %v", kind, asAll(l), want)
		}
	}
	if _, ok := objstore.AsRangeWriter(objstore.Observe(bare{objstore.NewMem()}, func(objstore.Op) objstore.Probe { return nil })); ok {
		t.Error("the wrapper of a store without WriteAt offers it")
	}
	if c := objstore.CapabilitiesOf(stores["mem"]); c&objstore.CapHandles == 0 || c&objstore.CapFreshStat == 0 {
		t.Errorf("mem store capabilities %v", c)
	}
}

// TestObservedReports: every call reaches its probe with the bytes it
// moved and its error, also through handles.
func TestObservedReports(t *testing.T) {
	ctx := context.Background()
	type rec struct {
		n     int64
		calls int
		errs  int
	}
	seen := map[objstore.Op]*rec{}
	o := objstore.Observe(objstore.NewMem(), func(op objstore.Op) objstore.Probe {
		r := &rec{}
		seen[op] = r
		return func(n int64, _ time.Duration, err error) {
			r.n += n
			r.calls++
			if err != nil {
				r.errs++
			}
		}
	})
	o.Put(ctx, "a", make([]byte, 10))
	o.ReadAt(ctx, "a", make([]byte, 4), 0)
	o.Get(ctx, "missing")
	o.WriteAt(ctx, "b", make([]byte, 3), 0)
	h, err := o.OpenHandle(ctx, "a", false, true)
	if err != nil {
		t.Fatal(err)
	}
	h.ReadAt(make([]byte, 5), 0)
	h.Close()
	want := map[objstore.Op]rec{objstore.OpPut: {10, 1, 0}, objstore.OpReadAt: {9, 2, 0},
		objstore.OpGet: {0, 1, 1}, objstore.OpWriteAt: {3, 1, 0}, objstore.OpOpen: {0, 1, 0}}
	for op, w := range want {
		if *seen[op] != w {
			t.Errorf("%s: %+v, want %+v", op, *seen[op], w)
		}
	}
}

// TestFaultyPassesFencer: Faulty offers the wrapped store's Fencer, with
// its rules, and none of the capabilities that would bypass them.
func TestFaultyPassesFencer(t *testing.T) {
	ctx := context.Background()
	fs := &fencing{Mem: objstore.NewMem()}
	f := objstore.NewFaulty(fs)
	fc, ok := objstore.AsFencer(f)
	if !ok {
		t.Fatal("Faulty hides the store's Fencer")
	}
	if id, err := fc.FenceID(ctx); id != "me" || err != nil {
		t.Fatalf("FenceID: %q, %v", id, err)
	}
	f.Add(objstore.Rule{Op: objstore.OpFence, Count: 1, Err: objstore.ErrTimeout})
	if err := fc.Fence(ctx, "x"); !errors.Is(err, objstore.ErrTimeout) {
		t.Fatalf("fence under a rule: %v", err)
	}
	if err := fc.Fence(ctx, "x"); err != nil || len(fs.fenced) != 1 {
		t.Fatalf("fence: %v, fenced %v", err, fs.fenced)
	}
	if _, ok := objstore.AsFencer(objstore.NewFaulty(objstore.NewMem())); ok {
		t.Error("Faulty fakes a Fencer")
	}
	if _, ok := objstore.AsHandleOpener(f); ok {
		t.Error("Faulty offers handles, which bypass its rules")
	}
}

// TestObservedSuite: an Observed store of each real kind passes the
// store suite, its optional parts included.
func TestObservedSuite(t *testing.T) {
	none := func(objstore.Op) objstore.Probe { return nil }
	t.Run("mem", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) objstore.Store { return objstore.Observe(objstore.NewMem(), none) })
	})
	t.Run("file", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) objstore.Store {
			f, err := objstore.OpenFile(t.TempDir(), true)
			if err != nil {
				t.Fatal(err)
			}
			return objstore.Observe(f, none)
		})
	})
}
