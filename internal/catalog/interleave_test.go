package catalog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// stepper pauses before its k-th write (1-based) until resumed.
type stepper struct {
	objstore.Store
	k int
	// crashed: set before resume; every write from the k-th fails.
	crashed bool
	mu      sync.Mutex
	n       int
	paused  chan struct{}
	resume  chan struct{}
}

func (s *stepper) gate() error {
	s.mu.Lock()
	s.n++
	n := s.n
	s.mu.Unlock()
	if n == s.k {
		close(s.paused)
		<-s.resume
	}
	if n >= s.k && s.crashed {
		return errCrash
	}
	return nil
}

// crash resumes a paused operation as a process that died there.
func (s *stepper) crash() {
	s.crashed = true
	close(s.resume)
}

func (s *stepper) Put(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	if err := s.gate(); err != nil {
		return 0, err
	}
	return s.Store.Put(ctx, name, b)
}
func (s *stepper) Create(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	if err := s.gate(); err != nil {
		return 0, err
	}
	return s.Store.Create(ctx, name, b)
}
func (s *stepper) Swap(ctx context.Context, name string, b []byte, old objstore.Version) (objstore.Version, error) {
	if err := s.gate(); err != nil {
		return 0, err
	}
	return s.Store.Swap(ctx, name, b, old)
}
func (s *stepper) Delete(ctx context.Context, name string) error {
	if err := s.gate(); err != nil {
		return err
	}
	return s.Store.Delete(ctx, name)
}
func (s *stepper) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	if err := s.gate(); err != nil {
		return err
	}
	return s.Store.DeleteVersion(ctx, name, old)
}

type nameOp struct {
	label string
	run   func(c *Catalog) error
}

func outcome(t *testing.T, label string, err error) string {
	t.Helper()
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNotFound):
		return "not found"
	case errors.Is(err, ErrExists):
		return "exists"
	}
	t.Fatalf("%s: %v", label, err)
	return ""
}

func validNames(t *testing.T, s objstore.Store, label string) string {
	t.Helper()
	p, err := New(s).List(ctx, ListOptions{})
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	ids := map[blockmap.ID]string{}
	var out []string
	for _, r := range p.Records {
		if other, dup := ids[r.ID]; dup {
			t.Fatalf("%s: %s named %q and %q", label, r.ID, other, r.Name)
		}
		ids[r.ID] = r.Name
		out = append(out, r.Name+"="+r.ID.String()[:6])
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// TestInterleavedNames runs one operation on names paused before each
// of its writes while another runs whole, for every pair of renames,
// removes and creates of two or three names (and while the other runs
// to each of its own writes): every paused state reads as one name per
// ID, and the answers and the names left are those of the two run one
// after the other, in one order or the other. And with the first one
// dying before each of its writes, the second answers and leaves what it
// would without the first, or after it.
func TestInterleavedNames(t *testing.T) {
	idA, idB, idNew1, idNew2 := blockmap.NewID(), blockmap.NewID(), blockmap.NewID(), blockmap.NewID()
	rec := func(name string, id blockmap.ID) Record { return Record{Name: name, ID: id, Kind: KindVolume} }
	ops := func() []nameOp {
		var out []nameOp
		for _, p := range [][2]string{{"a", "b"}, {"b", "a"}, {"a", "c"}, {"b", "c"}, {"c", "b"}} {
			out = append(out, nameOp{"rename " + p[0] + " " + p[1], func(c *Catalog) error { return c.Rename(ctx, p[0], p[1]) }})
		}
		for _, n := range []string{"a", "b"} {
			out = append(out, nameOp{"remove " + n, func(c *Catalog) error { _, err := c.Remove(ctx, n); return err }})
		}
		out = append(out, nameOp{"create a", func(c *Catalog) error { return c.Create(ctx, rec("a", idNew1)) }})
		out = append(out, nameOp{"create b", func(c *Catalog) error { return c.Create(ctx, rec("b", idNew2)) }})
		return out
	}()
	setups := map[string]func(s objstore.Store){
		"a":   func(s objstore.Store) { New(s).Create(ctx, rec("a", idA)) },
		"a+b": func(s objstore.Store) { New(s).Create(ctx, rec("a", idA)); New(s).Create(ctx, rec("b", idB)) },
	}
	runs := 0
	for sname, setup := range setups {
		for _, op1 := range ops {
			for _, op2 := range ops {
				var allowed []string
				for i, order := range [][2]nameOp{{op1, op2}, {op2, op1}} {
					mem := objstore.NewMem()
					setup(mem)
					r1 := outcome(t, order[0].label, order[0].run(New(mem)))
					r2 := outcome(t, order[1].label, order[1].run(New(mem)))
					if i == 1 {
						r1, r2 = r2, r1
					}
					allowed = append(allowed, fmt.Sprintf("%s / %s: %s", r1, r2, validNames(t, mem, "sequential")))
				}
				// op1 paused before its k-th write; op2 runs to its j-th
				// write (j 0: whole), then op1 goes on to its end, then
				// op2.
				start := func(s objstore.Store, op nameOp, k int) (*stepper, chan error, bool) {
					st := &stepper{Store: s, k: k, paused: make(chan struct{}), resume: make(chan struct{})}
					done := make(chan error, 1)
					go func() { done <- op.run(New(st)) }()
					select {
					case <-st.paused:
						return st, done, true
					case err := <-done:
						done <- err
						return st, done, false
					}
				}
				// op1 dies before its k-th write, then op2 runs: what op2
				// answers and leaves is as if op1 had not run, or had run
				// whole before it.
				var crashAllowed []string
				for _, before := range [][]nameOp{nil, {op1}} {
					mem := objstore.NewMem()
					setup(mem)
					for _, op := range before {
						op.run(New(mem))
					}
					crashAllowed = append(crashAllowed, fmt.Sprintf("%s: %s", outcome(t, "sequential", op2.run(New(mem))), validNames(t, mem, "sequential")))
				}
				for k := 1; ; k++ {
					label := fmt.Sprintf("%s: %s died before write %d, then %s", sname, op1.label, k, op2.label)
					mem := objstore.NewMem()
					setup(mem)
					st1, done1, paused := start(mem, op1, k)
					if !paused {
						<-done1
						break
					}
					st1.crash()
					if err := <-done1; !errors.Is(err, errCrash) {
						outcome(t, label, err)
					}
					validNames(t, mem, label+" (died)")
					got := fmt.Sprintf("%s: %s", outcome(t, label, op2.run(New(mem))), validNames(t, mem, label))
					if got != crashAllowed[0] && got != crashAllowed[1] {
						t.Fatalf("%s: got %s\nwant %s\nor   %s", label, got, crashAllowed[0], crashAllowed[1])
					}
					runs++
				}
				for k := 1; ; k++ {
					mem := objstore.NewMem()
					setup(mem)
					st1, done1, paused := start(mem, op1, k)
					if !paused {
						<-done1
						break
					}
					for j := 0; ; j++ {
						label := fmt.Sprintf("%s: %s paused before write %d, %s before write %d", sname, op1.label, k, op2.label, j)
						if j > 0 {
							mem = objstore.NewMem()
							setup(mem)
							st1, done1, _ = start(mem, op1, k)
						}
						validNames(t, mem, label+" (paused)")
						var err2 error
						var st2 *stepper
						var done2 chan error
						if j == 0 {
							err2 = op2.run(New(mem))
						} else if st2, done2, paused = start(mem, op2, j); !paused {
							close(st1.resume)
							<-done1
							<-done2
							break
						}
						if j > 0 {
							validNames(t, mem, label+" (both paused)")
						}
						close(st1.resume)
						err1 := <-done1
						if j > 0 {
							close(st2.resume)
							err2 = <-done2
						}
						got := fmt.Sprintf("%s / %s: %s", outcome(t, label, err1), outcome(t, label, err2), validNames(t, mem, label))
						if got != allowed[0] && got != allowed[1] {
							t.Fatalf("%s: got %s\nwant %s\nor   %s", label, got, allowed[0], allowed[1])
						}
						runs++
					}
				}
			}
		}
	}
	t.Logf("%d interleavings", runs)
}

// TestRenameUndoneBeforeItsPendingRecord: a rename paused after its
// intent, while another process settles (undoes) it and removes the old
// name; the rename then creates its pending record and finds its commit
// impossible. It must not leave that record behind: no name holds it and
// nothing else would delete it (TestConcurrentNames found one under load).
func TestRenameUndoneBeforeItsPendingRecord(t *testing.T) {
	mem := objstore.NewMem()
	if err := New(mem).Create(ctx, Record{Name: "a", ID: blockmap.NewID(), Kind: KindVolume}); err != nil {
		t.Fatal(err)
	}
	st := &stepper{Store: mem, k: 2, paused: make(chan struct{}), resume: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- New(st).Rename(ctx, "a", "b") }()
	<-st.paused // after the intent, before the pending record
	if _, err := New(mem).Remove(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	close(st.resume)
	if err := <-done; !errors.Is(err, ErrNotFound) {
		t.Fatalf("the rename of a removed name: %v, want ErrNotFound", err)
	}
	if _, _, err := mem.Get(ctx, recordName("b")); !objstore.IsNotExist(err) {
		t.Fatalf("the undone rename left its pending record: %v", err)
	}
}
