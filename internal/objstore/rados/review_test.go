//go:build ceph

package rados

import (
	"context"
	"errors"
	"fmt"
	"github.com/archipelago-go/archip/internal/objstore"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
)

// TestMarkDirsHoldsOneContext: a create in a new directory below cat/D/
// needs one I/O context at a time. It held one for the marker's check and
// took a second for the directory's key, so contexts creators in new
// directories at once (clones of distinct volumes) each held one and
// waited for another forever. Here every context but one is taken.
func TestMarkDirsHoldsOneContext(t *testing.T) {
	s := OpenTestStore(t)
	var held []*rados.IOContext
	for len(s.ioctxs) > 1 {
		held = append(held, <-s.ioctxs)
	}
	defer func() {
		for _, io := range held {
			s.ioctxs <- io
		}
	}()
	// A deadlock, not slowness, is what this bound detects.
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := s.Create(c, "cat/child/P/c", []byte("x")); err != nil {
		t.Fatalf("create in a new directory with one free I/O context: %v", err)
	}
}

// TestIndexListMatchesModel: ListNamesAfter under every prefix and from
// every position equals the sorted model: directories at several depths
// whose names are prefixes of objects' names and sort around them.
func TestIndexListMatchesModel(t *testing.T) {
	defer func(b int) { indexBatch = b }(indexBatch)
	indexBatch = 2
	s := OpenTestStore(t)
	names := []string{
		"cat/format", "cat/name/a", "cat/name/a-b", "cat/name/a.b", "cat/name/a_b", "cat/name/ab",
		"cat/name/b", "cat/name/Z", "cat/name/0", "cat/id/x", "cat/child/a/b", "cat/child/a/b.c",
		"cat/child/a-/c", "cat/child/a.b/c", "cat/child/a.b-/d", "cat/child/a/b/c", "cat/child/ab",
		"cat/child/a.b/c/d/e", "cat/child/a.b/c.d", "cat/x", "cat/x.y/z", "cat/x-y",
	}
	for _, n := range names {
		if _, err := s.Create(ctx, n, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(names)
	prefixes := []string{"", "c", "cat", "cat/", "cat/n", "cat/name", "cat/name/", "cat/name/a", "cat/name/ab",
		"cat/child/", "cat/child/a", "cat/child/a/", "cat/child/a.b", "cat/child/a.b/c", "cat/child/a.b/c/", "cat/x", "cat/z"}
	afters := append([]string{"", "a", "cat", "cat/", "cat/child", "cat/child/", "cat/child/a", "cat/child/a/",
		"cat/child/a.b/c/d", "cat/child/a/b/", "cat/name/a/", "cat/name/a0", "cat/zz", "z"}, names...)
	for _, p := range prefixes {
		for _, a := range afters {
			var want []string
			for _, n := range names {
				if strings.HasPrefix(n, p) && n > a {
					want = append(want, n)
				}
			}
			var got []string
			err := s.ListNamesAfter(ctx, p, a, func(n string) error {
				got = append(got, n)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("ListNamesAfter(%q, %q)\n got %v\nwant %v", p, a, got, want)
			}
		}
	}
}

// TestIndexCheckSurvivesCancel: a delete whose context is canceled after
// it removed the key (a CLI interrupted, a request's deadline) still
// makes its check, so a create of the same name that completed in
// between keeps its key: the check is part of the delete, not a retry the
// caller may skip. Before, the check's stat failed with the context's
// error (half the time: the pool's select) and the new object was
// unlisted, with no crash at all.
func TestIndexCheckSurvivesCancel(t *testing.T) {
	s := OpenTestStore(t)
	if err := s.ensureIndex(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 16 {
		name := fmt.Sprintf("cat/child/P/x%d", i)
		if _, err := s.Create(ctx, name, []byte("old")); err != nil {
			t.Fatal(err)
		}
		dctx, cancel := context.WithCancel(ctx)
		inside := false
		s.indexHook = func(step, n string) {
			if step != "deleted" || inside {
				return
			}
			inside = true
			// The object is gone, its key not yet: a create completes.
			if _, err := s.Create(ctx, name, []byte("new")); err != nil {
				t.Error(err)
			}
			s.statHook = func() { s.statHook = nil; cancel() }
		}
		err := s.Delete(dctx, name)
		s.indexHook, s.statHook = nil, nil
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		if got := fmt.Sprint(namesAfter(t, s, name, "", 0)); got != "["+name+"]" {
			t.Fatalf("round %d: the created object is unlisted after a canceled delete's check: %s", i, got)
		}
	}
}

// TestRepairIndexRemovesGhosts: keys whose objects are absent (creators
// that crashed or were canceled between the key and the write: each
// listing reads them again, and the catalog reads each one's record)
// are removed by RepairIndex, and a key whose object is being created
// (set, not yet written) comes back by the creator's read-back.
func TestRepairIndexRemovesGhosts(t *testing.T) {
	s := OpenTestStore(t)
	for _, n := range []string{"cat/name/real", "cat/child/P/real", "cat/top"} {
		if _, err := s.Create(ctx, n, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ensureIndex(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := s.indexSet(ctx, fmt.Sprintf("cat/name/ghost%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.indexSet(ctx, "cat/child/P/ghost"); err != nil {
		t.Fatal(err)
	}
	if err := s.indexSet(ctx, "cat/ghost"); err != nil {
		t.Fatal(err)
	}
	// A creator between its key and its write while the repair runs.
	const late = "cat/name/late"
	keyed, repaired := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	s.indexHook = func(step, n string) {
		if n == late && step == "keyed" {
			close(keyed)
			<-repaired
		}
	}
	go func() { _, err := s.Create(ctx, late, []byte("x")); done <- err }()
	<-keyed
	err := s.RepairIndex(ctx)
	close(repaired)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.indexHook = nil
	want := "[cat/child/P/real cat/name/late cat/name/real cat/top]"
	if got := fmt.Sprint(namesAfter(t, s, "cat/", "", 0)); got != want {
		t.Fatalf("after RepairIndex: %s, want %s", got, want)
	}
}

// actor runs fn in steps: fn calls pause between its steps, and each
// step runs when step is called.
type actor struct {
	arrive, proceed chan struct{}
	err             error
}

func startActor(fn func(pause func()) error) *actor {
	a := &actor{arrive: make(chan struct{}), proceed: make(chan struct{})}
	go func() {
		pause := func() { a.arrive <- struct{}{}; <-a.proceed }
		<-a.proceed
		a.err = fn(pause)
		close(a.arrive)
	}()
	return a
}

// step runs the actor up to its next pause (or its end).
func (a *actor) step() {
	a.proceed <- struct{}{}
	<-a.arrive
}

// TestIndexEveryInterleaving: a Put and a Delete of one existing
// catalog object, in every interleaving of their steps (the creator's
// key, write and read-back; the deleter's delete, removal, stat and
// setting again): once both returned, the object, if it exists, has its
// key.
func TestIndexEveryInterleaving(t *testing.T) {
	ss := OpenTestStores(t, 2)
	cre, del := ss[0], ss[1]
	if _, err := cre.Create(ctx, "cat/child/P/seed", nil); err != nil {
		t.Fatal(err)
	}
	if err := del.ensureIndex(ctx); err != nil {
		t.Fatal(err)
	}
	var schedules [][]bool // true: the creator's step
	var gen func(s []bool, c, d int)
	gen = func(s []bool, c, d int) {
		if c == 4 && d == 4 {
			schedules = append(schedules, append([]bool(nil), s...))
			return
		}
		if c < 4 {
			gen(append(s, true), c+1, d)
		}
		if d < 4 {
			gen(append(s, false), c, d+1)
		}
	}
	gen(nil, 0, 0)
	for i, sched := range schedules {
		name := fmt.Sprintf("cat/child/P/x%03d", i)
		if _, err := del.Put(ctx, name, []byte("old")); err != nil {
			t.Fatal(err)
		}
		var cp, dp func()
		cre.indexHook = func(step, n string) {
			if n == name {
				cp()
			}
		}
		del.indexHook = func(step, n string) {
			if n == name {
				dp()
			}
		}
		del.statHook = func() { dp() }
		c := startActor(func(pause func()) error {
			cp = pause
			_, err := cre.Put(ctx, name, []byte("new"))
			return err
		})
		d := startActor(func(pause func()) error {
			dp = pause
			return del.Delete(ctx, name)
		})
		for _, creStep := range sched {
			if creStep {
				c.step()
			} else {
				d.step()
			}
		}
		cre.indexHook, del.indexHook, del.statHook = nil, nil, nil
		if c.err != nil || d.err != nil && !objstore.IsNotExist(d.err) {
			t.Fatalf("schedule %v: put %v, delete %v", sched, c.err, d.err)
		}
		_, err := del.Stat(ctx, name)
		has, herr := del.indexHas(ctx, name)
		if herr != nil {
			t.Fatal(herr)
		}
		if err == nil && !has {
			t.Errorf("schedule %v (true: the put's step): the object exists without its key", sched)
		}
	}
}
