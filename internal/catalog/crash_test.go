package catalog

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

var errCrash = errors.New("test: crashed")

// crashAfter lets k writes through, then fails every write without
// applying it: a process that died after its k-th write.
// With applyLast, the first failing write takes effect all the same (a
// crash after the store applied it, before the answer).
type crashAfter struct {
	objstore.Store
	left      atomic.Int64
	applyLast bool
}

func (s *crashAfter) do(write func() error) error {
	switch n := s.left.Add(-1); {
	case n >= 0:
		return write()
	case n == -1 && s.applyLast:
		write()
	}
	return errCrash
}

func (s *crashAfter) Put(ctx context.Context, name string, b []byte) (v objstore.Version, err error) {
	err = s.do(func() error { v, err = s.Store.Put(ctx, name, b); return err })
	return v, err
}
func (s *crashAfter) Create(ctx context.Context, name string, b []byte) (v objstore.Version, err error) {
	err = s.do(func() error { v, err = s.Store.Create(ctx, name, b); return err })
	return v, err
}
func (s *crashAfter) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (v objstore.Version, err error) {
	err = s.do(func() error { v, err = s.Store.Swap(ctx, name, b, old); return err })
	return v, err
}
func (s *crashAfter) Delete(ctx context.Context, name string) error {
	return s.do(func() error { return s.Store.Delete(ctx, name) })
}
func (s *crashAfter) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	return s.do(func() error { return s.Store.DeleteVersion(ctx, name, old) })
}

// check verifies the catalog's invariants on s: every record name listed
// is readable; each ID has exactly one valid name, the ID hint finds it;
// want maps the names that must exist to their IDs.
func check(t *testing.T, s objstore.Store, want map[string]blockmap.ID) {
	t.Helper()
	c := New(s)
	p, err := c.List(ctx, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]blockmap.ID{}
	byID := map[blockmap.ID]string{}
	for _, r := range p.Records {
		got[r.Name] = r.ID
		if other, dup := byID[r.ID]; dup {
			t.Fatalf("ID %s valid under two names, %q and %q", r.ID, other, r.Name)
		}
		byID[r.ID] = r.Name
		mustLookup(t, c, r.Name, r.ID)
		if b, err := c.ByID(ctx, r.ID); err != nil || b.Name != r.Name {
			t.Fatalf("ByID(%s) = %v %v, want %q", r.ID, b, err, r.Name)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("catalog %v, want %v", got, want)
	}
}

// TestRenameCrashes crashes a rename after each of its writes, then
// checks that the store reads as either before or after the rename, and
// that the next command (another rename, a remove, a create of either
// name) settles it and leaves no half of it behind.
func TestRenameCrashes(t *testing.T) {
	for _, applied := range []bool{false, true} {
		for _, next := range []string{"rename-old", "rename-new", "remove", "create-old", "create-new", "rename-again"} {
			for k := 0; ; k++ {
				mem := objstore.NewMem()
				a, other := vol("a"), vol("other")
				New(mem).Create(ctx, a)
				New(mem).Create(ctx, other)
				cs := &crashAfter{Store: mem, applyLast: applied}
				cs.left.Store(int64(k))
				err := New(cs).Rename(ctx, "a", "b")
				done := err == nil
				if err != nil && !errors.Is(err, errCrash) {
					t.Fatalf("k=%d: %v", k, err)
				}
				// Readers (a fresh process) see the rename done or not.
				c := New(mem)
				ra, erra := c.Lookup(ctx, "a")
				rb, errb := c.Lookup(ctx, "b")
				committed := errb == nil
				if committed == (erra == nil) || (committed && rb.ID != a.ID) || (!committed && ra.ID != a.ID) {
					t.Fatalf("k=%d: after the crash a=%v %v b=%v %v", k, ra, erra, rb, errb)
				}
				cur := "a"
				if committed {
					cur = "b"
				}
				check(t, mem, map[string]blockmap.ID{cur: a.ID, "other": other.ID})
				want := map[string]blockmap.ID{"other": other.ID}
				switch next {
				case "rename-old", "rename-new":
					from := "a"
					if next == "rename-new" {
						from = "b"
					}
					err := c.Rename(ctx, from, "c")
					if from == cur {
						want["c"] = a.ID
					} else if !errors.Is(err, ErrNotFound) {
						t.Fatalf("k=%d: rename of the invalid half %q: %v", k, from, err)
					} else {
						want[cur] = a.ID
					}
				case "remove":
					if _, err := c.Remove(ctx, cur); err != nil {
						t.Fatalf("k=%d: %v", k, err)
					}
				case "create-old", "create-new":
					n := "a"
					if next == "create-new" {
						n = "b"
					}
					r := vol(n)
					err := c.Create(ctx, r)
					want[cur] = a.ID
					if n == cur {
						if !errors.Is(err, ErrExists) {
							t.Fatalf("k=%d: create of %q: %v", k, n, err)
						}
					} else if err != nil {
						t.Fatalf("k=%d: create of %q: %v", k, n, err)
					} else {
						want[n] = r.ID
					}
				case "rename-again":
					if err := c.Rename(ctx, "a", "b"); committed && !errors.Is(err, ErrNotFound) || !committed && err != nil {
						t.Fatalf("k=%d: rename again: %v", k, err)
					}
					want["b"] = a.ID
				}
				check(t, mem, want)
				// Nothing of the rename is left in the records but, in a
				// name the next command did not touch, an intent never
				// committed or a RenamedFrom whose old record no longer names it (both
				// valid as they are, and cleared by the next change).
				for n := range want {
					b, _, _ := mem.Get(ctx, recordName(n))
					s, err := decodeStored(n, b)
					pointsBack := false
					if ob, _, oerr := mem.Get(ctx, recordName(s.RenamedFrom)); s.RenamedFrom != "" && oerr == nil {
						o, _ := decodeStored(s.RenamedFrom, ob)
						pointsBack = o != nil && o.RenamingTo == n && o.Token == s.Token
					}
					if err != nil || s.Moved || s.Pending || pointsBack {
						t.Fatalf("k=%d next=%s: %q left as %s (%v)", k, next, n, b, err)
					}
				}
				if got := len(names(t, mem, NamePrefix)); got != len(want) {
					t.Fatalf("k=%d next=%s: %d records for %d names: %v", k, next, got, len(want), names(t, mem, NamePrefix))
				}
				if done {
					break
				}
			}
		}
	}
}

// TestRenameCrashesOntoTaken: a rename onto a name that gets taken while
// it runs is undone, whatever the step it crashed at.
func TestRenameUndoneWhenTaken(t *testing.T) {
	mem := objstore.NewMem()
	a := vol("a")
	New(mem).Create(ctx, a)
	// Crash after the intent: the pending record was not written.
	cs := &crashAfter{Store: mem}
	cs.left.Store(1)
	if err := New(cs).Rename(ctx, "a", "b"); !errors.Is(err, errCrash) {
		t.Fatal(err)
	}
	b := vol("b")
	if err := New(mem).Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	check(t, mem, map[string]blockmap.ID{"a": a.ID, "b": b.ID})
	if err := New(mem).Rename(ctx, "a", "b"); !errors.Is(err, ErrExists) {
		t.Fatalf("rename onto a taken name: %v", err)
	}
	check(t, mem, map[string]blockmap.ID{"a": a.ID, "b": b.ID})
}

// TestConcurrentNames: goroutines of two Catalog instances (two
// processes) create, rename and remove a few names at random on one
// store; afterwards each ID that was created and not removed has exactly
// one name, the removed ones none, and no record is left half-renamed
// once every name is removed.
func TestConcurrentNames(t *testing.T) {
	for _, backend := range []string{"mem", "file"} {
		t.Run(backend, func(t *testing.T) {
			var s objstore.Store = objstore.NewMem()
			if backend == "file" {
				f, err := objstore.OpenFile(filepath.Join(t.TempDir(), "s"), true)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				s = f
			}
			cats := []*Catalog{New(s), New(s)}
			pool := []string{"n0", "n1", "n2", "n3", "n@4"}
			var mu sync.Mutex
			created := map[blockmap.ID]bool{}
			removed := map[blockmap.ID]bool{}
			var wg sync.WaitGroup
			ops := 200
			if backend == "file" {
				ops = 30
			}
			for g := 0; g < 16; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(g), 1))
					c := cats[g%2]
					for i := 0; i < ops; i++ {
						x, y := pool[rng.IntN(len(pool))], pool[rng.IntN(len(pool))]
						var err error
						switch rng.IntN(3) {
						case 0:
							r := vol(x)
							if err = c.Create(ctx, r); err == nil {
								mu.Lock()
								created[r.ID] = true
								mu.Unlock()
							}
						case 1:
							err = c.Rename(ctx, x, y)
						case 2:
							var r Record
							if r, err = c.Remove(ctx, x); err == nil {
								mu.Lock()
								if removed[r.ID] {
									t.Errorf("%s removed twice", r.ID)
								}
								removed[r.ID] = true
								mu.Unlock()
							}
						}
						if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrExists) && !errors.Is(err, ErrBusy) {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			want := map[blockmap.ID]bool{}
			for id := range created {
				if !removed[id] {
					want[id] = true
				}
			}
			p, err := New(s).List(ctx, ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got := map[blockmap.ID]bool{}
			for _, r := range p.Records {
				if got[r.ID] {
					t.Fatalf("%s has two names", r.ID)
				}
				got[r.ID] = true
				if !created[r.ID] {
					t.Fatalf("%q has an ID nobody created", r.Name)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("%d IDs named, want %d (created %d, removed %d)", len(got), len(want), len(created), len(removed))
			}
			for _, r := range p.Records {
				if _, err := New(s).Remove(ctx, r.Name); err != nil {
					t.Fatal(err)
				}
			}
			if left := names(t, s, NamePrefix); len(left) != 0 {
				t.Fatalf("records left after removing every name: %v", left)
			}
		})
	}
}

// TestRenameCrashesTwice: a rename crashes after k writes, then the
// command that settles it crashes after j writes of its own; every state
// still reads as one name per ID at most, and what is left settles.
func TestRenameCrashesTwice(t *testing.T) {
	type cmd func(c *Catalog) error
	nexts := map[string]cmd{
		"rename a": func(c *Catalog) error { return c.Rename(ctx, "a", "c") },
		"rename b": func(c *Catalog) error { return c.Rename(ctx, "b", "c") },
		"remove a": func(c *Catalog) error { _, err := c.Remove(ctx, "a"); return err },
		"remove b": func(c *Catalog) error { _, err := c.Remove(ctx, "b"); return err },
		"create b": func(c *Catalog) error { return c.Create(ctx, vol("b")) },
	}
	for name, next := range nexts {
		for _, applied := range []bool{false, true} {
			for k := 0; k < 8; k++ {
				for j := 0; j < 8; j++ {
					mem := objstore.NewMem()
					a := vol("a")
					New(mem).Create(ctx, a)
					cs := &crashAfter{Store: mem, applyLast: applied}
					cs.left.Store(int64(k))
					New(cs).Rename(ctx, "a", "b")
					cs2 := &crashAfter{Store: mem, applyLast: applied}
					cs2.left.Store(int64(j))
					if err := next(New(cs2)); err != nil && !errors.Is(err, errCrash) && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrExists) {
						t.Fatalf("%s k=%d j=%d: %v", name, k, j, err)
					}
					c := New(mem)
					p, err := c.List(ctx, ListOptions{})
					if err != nil {
						t.Fatal(err)
					}
					seen := map[blockmap.ID]string{}
					for _, r := range p.Records {
						if other, dup := seen[r.ID]; dup {
							t.Fatalf("%s k=%d j=%d: %s valid as %q and %q", name, k, j, r.ID, other, r.Name)
						}
						seen[r.ID] = r.Name
					}
					for _, r := range p.Records {
						if _, err := c.Remove(ctx, r.Name); err != nil {
							t.Fatalf("%s k=%d j=%d: remove %q: %v", name, k, j, r.Name, err)
						}
					}
					for _, n := range []string{"a", "b", "c"} {
						c.Remove(ctx, n) // settles what no listing shows
					}
					if left := names(t, mem, NamePrefix); len(left) != 0 {
						t.Fatalf("%s k=%d j=%d: records left after removing every name: %v", name, k, j, left)
					}
				}
			}
		}
	}
}
