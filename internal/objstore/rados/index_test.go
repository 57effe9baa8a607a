//go:build ceph

package rados

import (
	"fmt"
	"sort"
	"testing"

	"github.com/ceph/go-ceph/rados"
	"golang.org/x/sync/errgroup"

	"github.com/archipelago-go/archip/internal/objstore"
)

func listAll(t *testing.T, s *Store, prefix string) []string {
	t.Helper()
	var got []string
	err := s.List(ctx, prefix, func(in objstore.Info) error {
		got = append(got, in.Name)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	sort.Strings(got)
	return got
}

func namesAfter(t *testing.T, s *Store, prefix, after string, limit int) []string {
	t.Helper()
	stop := fmt.Errorf("stop")
	var got []string
	err := s.ListNamesAfter(ctx, prefix, after, func(n string) error {
		got = append(got, n)
		if len(got) == limit {
			return stop
		}
		return nil
	})
	if err != nil && err != stop {
		t.Fatalf("ListNamesAfter(%q, %q): %v", prefix, after, err)
	}
	return got
}

// TestIndexListsWithoutWalking: the children of one volume and a page of
// the names are listed from the index, in order across its shards, page
// after page, without walking the pool (a walk costs every object of it).
func TestIndexListsWithoutWalking(t *testing.T) {
	defer func(b int) { indexBatch = b }(indexBatch)
	indexBatch = 2 // shards are read again and again
	s := OpenTestStore(t)
	var want []string
	var g errgroup.Group
	g.SetLimit(16)
	for i := range 300 {
		n := fmt.Sprintf("cat/name/v%03d", (i*7919)%300)
		want = append(want, n)
		g.Go(func() error { _, err := s.Create(ctx, n, []byte("r")); return err })
	}
	for i := range 3 {
		g.Go(func() error { _, err := s.Create(ctx, fmt.Sprintf("cat/child/P/c%d", i), nil); return err })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(want)
	if err := s.ensureIndex(ctx); err != nil {
		t.Fatal(err)
	}
	walks := s.walks.Load()
	if got := fmt.Sprint(listAll(t, s, "cat/child/P/")); got != "[cat/child/P/c0 cat/child/P/c1 cat/child/P/c2]" {
		t.Errorf("children: %s", got)
	}
	var pages []string
	for after := ""; ; {
		p := namesAfter(t, s, "cat/name/", after, 7)
		pages = append(pages, p...)
		if len(p) < 7 {
			break
		}
		after = p[len(p)-1]
	}
	if fmt.Sprint(pages) != fmt.Sprint(want) {
		t.Errorf("paged names:\n%v\nwant\n%v", pages, want)
	}
	if got := namesAfter(t, s, "cat/name/v1", "cat/name/v149", 0); fmt.Sprint(got) != fmt.Sprint(want[150:200]) {
		t.Errorf("names under v1 after v149: %v", got)
	}
	if n := s.walks.Load() - walks; n != 0 {
		t.Errorf("the listings walked the pool %d times, want 0", n)
	}
	used := 0
	for i := range indexShards {
		ref := s.shard("cat/name/", i)
		if _, err := s.statNS(ctx, ref.ns, ref.oid); err == nil {
			used++
		}
	}
	if used < indexShards/2 {
		t.Errorf("the names' keys are on %d index objects of %d", used, indexShards)
	}
}

// TestIndexGhostKey: a key whose object is absent (a creator that crashed
// between its key and its object) is not listed by List, and a create of
// that name later lists it.
func TestIndexGhostKey(t *testing.T) {
	s := OpenTestStore(t)
	if err := s.ensureIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.indexSet(ctx, "cat/child/P/ghost"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "cat/child/P/real", nil); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(listAll(t, s, "cat/child/")); got != "[cat/child/P/real]" {
		t.Errorf("List = %s, want the real object alone", got)
	}
	if _, err := s.Create(ctx, "cat/child/P/ghost", nil); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(listAll(t, s, "cat/child/P/")); got != "[cat/child/P/ghost cat/child/P/real]" {
		t.Errorf("List = %s", got)
	}
	if err := s.Delete(ctx, "cat/child/P/ghost"); err != nil {
		t.Fatal(err)
	}
	if has, err := s.indexHas(ctx, "cat/child/P/ghost"); has || err != nil {
		t.Errorf("a deleted object's key: %v, %v; want gone", has, err)
	}
}

// TestIndexDeleteRacesCreate: a delete whose key removal comes after a
// create of the same name (by another client: a writer that woke up late)
// does not hide the new object, whichever step of the create it meets.
func TestIndexDeleteRacesCreate(t *testing.T) {
	for _, c := range []struct {
		name string
		// at: the creator's step where it waits for the deleter's key
		// removal and check ("" : it completes before the removal).
		at string
	}{
		{"create before removal", ""},
		{"key before removal, object after", "keyed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ss := OpenTestStores(t, 2)
			del, cre := ss[0], ss[1]
			if err := del.ensureIndex(ctx); err != nil { // else its build repairs the index
				t.Fatal(err)
			}
			const name = "cat/child/P/x"
			if _, err := del.Create(ctx, name, []byte("old")); err != nil {
				t.Fatal(err)
			}
			keyed, removed := make(chan struct{}), make(chan struct{})
			created := make(chan error, 1)
			cre.indexHook = func(step, n string) {
				if step == c.at {
					close(keyed)
					<-removed
				}
			}
			del.indexHook = func(step, n string) {
				switch step {
				case "deleted": // the object is gone, its key not yet
					go func() {
						_, err := cre.Create(ctx, name, []byte("new"))
						created <- err
					}()
					if c.at == "" {
						if err := <-created; err != nil {
							t.Error(err)
						}
					} else {
						<-keyed
					}
				case "checked": // the key removed, the object found absent
					close(removed)
				}
			}
			if err := del.Delete(ctx, name); err != nil {
				t.Fatal(err)
			}
			if c.at != "" {
				if err := <-created; err != nil {
					t.Fatal(err)
				}
			}
			if got := fmt.Sprint(listAll(t, del, "cat/child/P/")); got != "["+name+"]" {
				t.Errorf("after the race, List = %s, want the new object", got)
			}
		})
	}
}

// TestIndexUpgrade: a store written before the index (today's layout: the
// catalog's objects in their namespaces, deeper directories' markers, no
// key anywhere) is indexed on first listing, once, and lists whole.
func TestIndexUpgrade(t *testing.T) {
	ss := OpenTestStores(t, 2)
	old, s := ss[0], ss[1]
	names := []string{"cat/name/a", "cat/name/b", "cat/id/1", "cat/child/P/1", "cat/child/P/2", "cat/child/Q/1", "cat/top", "blk/1"}
	for _, n := range names {
		// As the code before the index wrote them.
		var raw []string
		for dir := dirOf(n); len(dir) > 0 && isCat(n) && countSlash(dir) > 2; dir = dirOf(dir[:len(dir)-1]) {
			raw = append(raw, dir)
		}
		raw = append(raw, n)
		for _, r := range raw {
			err := old.withNS(ctx, old.nsOf(r), func(io *rados.IOContext) error {
				return mapErr(io.Create(r, rados.CreateIdempotent))
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := fmt.Sprint(listAll(t, s, "cat/child/")); got != "[cat/child/P/1 cat/child/P/2 cat/child/Q/1]" {
		t.Errorf("List after the upgrade = %s", got)
	}
	if got := fmt.Sprint(listAll(t, s, "cat/")); got != "[cat/child/P/1 cat/child/P/2 cat/child/Q/1 cat/id/1 cat/name/a cat/name/b cat/top]" {
		t.Errorf("List after the upgrade = %s", got)
	}
	if n := s.indexBuilds.Load(); n != 1 {
		t.Errorf("%d builds of the index, want 1", n)
	}
	// Another client finds the marker: no build, no walk.
	if got := fmt.Sprint(listAll(t, old, "cat/child/P/")); got != "[cat/child/P/1 cat/child/P/2]" {
		t.Errorf("List by another client = %s", got)
	}
	if n := old.indexBuilds.Load() + old.walks.Load(); n != 0 {
		t.Errorf("another client built the index or walked the pool (%d)", n)
	}
}

func countSlash(s string) (n int) {
	for i := range len(s) {
		if s[i] == '/' {
			n++
		}
	}
	return n
}
