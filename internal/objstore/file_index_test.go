package objstore_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

func openIndexed(t *testing.T, splitKeys int) *objstore.File {
	t.Helper()
	f, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	objstore.SetIndexSplit(f, 0, splitKeys)
	if err := f.RepairIndex(ctx); err != nil { // marks the new index complete
		t.Fatal(err)
	}
	return f
}

// listAll lists prefix from after on, page names at a time, continuing
// from the last name of each page, as the catalog's paged listing does.
func listAll(t *testing.T, f *objstore.File, prefix, after string, page int) []string {
	t.Helper()
	var out []string
	stop := errors.New("page full")
	for {
		var got []string
		err := f.ListNamesAfter(ctx, prefix, after, func(n string) error {
			got = append(got, n)
			if len(got) == page {
				return stop
			}
			return nil
		})
		if err != nil && !errors.Is(err, stop) {
			t.Fatal(err)
		}
		out = append(out, got...)
		if err == nil {
			return out
		}
		after = got[len(got)-1]
	}
}

// TestFileIndexPageCostsThePage: a page of 100 catalog names out of
// 20,000 reads a few levels of the index, not every name (before: the
// file store had no ordered listing, and the catalog listed and sorted
// every name).
func TestFileIndexPageCostsThePage(t *testing.T) {
	f := openIndexed(t, 256)
	objstore.SetIndexSplit(f, 8<<10, 256)
	var names []string
	for i := range 10000 {
		names = append(names, fmt.Sprintf("cat/name/v%08d", i))
		names = append(names, fmt.Sprintf("cat/name/volume-%016x", rand.Uint64()))
	}
	if err := objstore.SetIndexKeys(f, names); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	ol, ok := objstore.AsOrderedLister(f)
	if !ok {
		t.Fatal("the file store is no OrderedLister")
	}
	read, levels := 0, 0
	objstore.SetIndexHooks(f, objstore.IndexHooks{Read: func(n int) { read += n; levels++ }})
	for _, after := range []string{"", names[7777], names[19990]} {
		read, levels = 0, 0
		var got []string
		stop := errors.New("enough")
		err := ol.ListNamesAfter(ctx, "cat/name/", after, func(n string) error {
			got = append(got, n)
			if len(got) == 100 {
				return stop
			}
			return nil
		})
		if err != nil && !errors.Is(err, stop) {
			t.Fatal(err)
		}
		i, _ := slices.BinarySearch(names, after)
		if after != "" {
			i++
		}
		want := names[i:min(i+100, len(names))]
		if !slices.Equal(got, want) {
			t.Fatalf("after %q: got %d names %v..., want %v...", after, len(got), got[:min(3, len(got))], want[:3])
		}
		if read > 2000 {
			t.Errorf("after %q: a page of 100 read %d entries in %d levels, of %d names", after, read, levels, len(names))
		}
	}
}

// indexNames are names of the shapes the catalog has: sequential, a
// common prefix with random tails, nested directories, one longer than a
// file name, and a directory's name that is a prefix of others.
func indexName(r *rand.Rand) string {
	switch r.IntN(6) {
	case 0:
		return fmt.Sprintf("cat/name/v%04d", r.IntN(300))
	case 1:
		return fmt.Sprintf("cat/name/volume-%03x", r.IntN(300))
	case 2:
		return fmt.Sprintf("cat/child/%02d/%02d", r.IntN(5), r.IntN(10))
	case 3:
		return "cat/child/" + strings.Repeat("p", 200) + "/" + strings.Repeat("l", 60+r.IntN(20))
	case 4:
		return fmt.Sprintf("cat/id/%x", r.IntN(40))
	}
	return []string{"cat/name", "cat/name.", "cat/name-", "cat/n", "cat/x"}[r.IntN(5)]
}

// TestFileIndexModel: random creates, puts and deletes of catalog names
// (splitting levels often) against a sorted model: the index lists
// exactly the objects there are, in order, in pages of any size, under
// any prefix and after any name.
func TestFileIndexModel(t *testing.T) {
	f := openIndexed(t, 6)
	r := rand.New(rand.NewPCG(1, 2))
	model := map[string]bool{}
	check := func() {
		t.Helper()
		var want []string
		for n := range model {
			want = append(want, n)
		}
		slices.Sort(want)
		for _, page := range []int{1, 7, 1000} {
			if got := listAll(t, f, "cat/", "", page); !slices.Equal(got, want) {
				t.Fatalf("pages of %d: got %v\nwant %v", page, got, want)
			}
		}
		for _, q := range []struct{ prefix, after string }{
			{"cat/name/", "cat/name/v0100"}, {"cat/name", "cat/name-"}, {"cat/child/02/", ""},
			{"cat/name/volume-0", "cat/name/volume-05"}, {"cat/", "cat/m"}, {"cat/name/", "cat/name/z"},
		} {
			var w []string
			for _, n := range want {
				if strings.HasPrefix(n, q.prefix) && n > q.after {
					w = append(w, n)
				}
			}
			if got := listAll(t, f, q.prefix, q.after, 5); !slices.Equal(got, w) {
				t.Fatalf("%+v: got %v\nwant %v", q, got, w)
			}
		}
	}
	for i := range 1200 {
		n := indexName(r)
		switch r.IntN(3) {
		case 0:
			_, err := f.Create(ctx, n, []byte("x"))
			if err != nil && !errors.Is(err, objstore.ErrExists) {
				t.Fatal(err)
			}
			model[n] = true
		case 1:
			if _, err := f.Put(ctx, n, []byte("y")); err != nil {
				t.Fatal(err)
			}
			model[n] = true
		case 2:
			err := f.Delete(ctx, n)
			if err != nil && !errors.Is(err, objstore.ErrNotFound) {
				t.Fatal(err)
			}
			delete(model, n)
		}
		if i%200 == 199 {
			check()
		}
	}
	check()
}

// TestFileIndexEveryInterleaving: a put (or a create) and a delete of
// one name, in every interleaving of their steps, on an object there or
// absent: afterwards the object has its key if it exists.
func TestFileIndexEveryInterleaving(t *testing.T) {
	const name = "cat/name/x"
	// orders of 4 steps of the put (start, after set, keyed, created)
	// and 3 of the delete (start, after deleted, checked).
	var orders [][]int
	var gen func(o []int, p, d int)
	gen = func(o []int, p, d int) {
		if p == 0 && d == 0 {
			orders = append(orders, slices.Clone(o))
			return
		}
		if p > 0 {
			gen(append(o, 0), p-1, d)
		}
		if d > 0 {
			gen(append(o, 1), p, d-1)
		}
	}
	gen(nil, 4, 3)
	for _, there := range []bool{true, false} {
		for _, order := range orders {
			f := openIndexed(t, 4)
			if there {
				if _, err := f.Put(ctx, name, []byte("old")); err != nil {
					t.Fatal(err)
				}
			}
			var gates [2]chan chan struct{}
			for i := range gates {
				gates[i] = make(chan chan struct{})
			}
			wait := func(i int) {
				c := make(chan struct{})
				gates[i] <- c
				<-c
			}
			objstore.SetIndexHooks(f, objstore.IndexHooks{Step: func(step, _ string) {
				if step == "deleted" || step == "checked" {
					wait(1)
				} else {
					wait(0)
				}
			}})
			var done [2]chan error
			for i := range done {
				done[i] = make(chan error, 1)
			}
			go func() {
				wait(0)
				_, err := f.Put(ctx, name, []byte("new"))
				done[0] <- err
			}()
			go func() {
				wait(1)
				err := f.Delete(ctx, name)
				if errors.Is(err, objstore.ErrNotFound) {
					err = nil
				}
				done[1] <- err
			}()
			var parked [2]chan struct{}
			finished := [2]bool{}
			// park waits until goroutine i is at a gate or finished.
			park := func(i int) {
				select {
				case c := <-gates[i]:
					parked[i] = c
				case err := <-done[i]:
					if err != nil {
						t.Fatal(err)
					}
					finished[i] = true
				}
			}
			park(0)
			park(1)
			for _, i := range order {
				if finished[i] {
					continue
				}
				close(parked[i])
				park(i)
			}
			for i := range 2 {
				for !finished[i] {
					close(parked[i])
					park(i)
				}
			}
			objstore.SetIndexHooks(f, objstore.IndexHooks{})
			_, err := f.Stat(ctx, name)
			has, herr := objstore.IndexHas(f, name)
			if herr != nil {
				t.Fatal(herr)
			}
			if err == nil && !has {
				t.Fatalf("there %v, order %v: the object exists without its key", there, order)
			}
			if err != nil && !objstore.IsNotExist(err) {
				t.Fatal(err)
			}
		}
	}
}

// TestFileIndexSplitRaces: a splitter that stalls before it moves a key
// down, while the key's object is deleted (and created again, or not),
// and others are created: it never leaves a live object without its key,
// nor brings a deleted one's key back.
func TestFileIndexSplitRaces(t *testing.T) {
	for _, again := range []bool{false, true} {
		f := openIndexed(t, 4)
		model := map[string]bool{}
		var victim string
		objstore.SetIndexHooks(f, objstore.IndexHooks{BeforeSplitMove: func(key string) {
			if victim != "" {
				return
			}
			// The key file's name is the rest of the name after its
			// level: find the name among the objects there.
			var n string
			for m := range model {
				if strings.HasSuffix(m, strings.ReplaceAll(strings.TrimPrefix(filepath.Base(key), "+"), "=", "/")) {
					n = m
				}
			}
			if _, err := f.Stat(ctx, n); n == "" || err != nil {
				return // the key of the create that splits: not written yet
			}
			victim = n
			if err := f.Delete(ctx, victim); err != nil {
				t.Error(err)
			}
			delete(model, victim)
			if again {
				if _, err := f.Create(ctx, victim, []byte("again")); err != nil {
					t.Error(err)
				}
				model[victim] = true
			}
			if _, err := f.Create(ctx, victim+"z", nil); err != nil {
				t.Error(err)
			}
			model[victim+"z"] = true
		}})
		for i := range 12 {
			n := fmt.Sprintf("cat/name/a%02d", i)
			model[n] = true // before: the hook may look for it
			if _, err := f.Create(ctx, n, nil); err != nil {
				t.Fatal(err)
			}
		}
		if victim == "" {
			t.Fatal("no split")
		}
		var want []string
		for n := range model {
			want = append(want, n)
		}
		slices.Sort(want)
		if got := listAll(t, f, "cat/", "", 3); !slices.Equal(got, want) {
			t.Fatalf("again %v, victim %s: got %v\nwant %v", again, victim, got, want)
		}
	}
}

// copyTree copies the store at src to dst as a crash would leave it if
// everything done so far were durable and nothing after.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(to, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return nil
			}
			return os.Symlink(l, to)
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestFileIndexCrashImages: images of the store taken between every two
// steps of creates, deletes and splits (as a crash there leaves it, had
// everything before been made durable): in each, every catalog object
// has its key, and a repair removes the ghosts.
func TestFileIndexCrashImages(t *testing.T) {
	root := t.TempDir()
	f, err := objstore.OpenFile(filepath.Join(root, "s"), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.RepairIndex(ctx); err != nil {
		t.Fatal(err)
	}
	objstore.SetIndexSplit(f, 0, 3)
	var images []string
	var mu sync.Mutex // splits run beside the write that set the key
	take := func() {
		mu.Lock()
		defer mu.Unlock()
		img := filepath.Join(root, fmt.Sprintf("img%03d", len(images)))
		copyTree(t, f.Root(), img)
		images = append(images, img)
	}
	objstore.SetIndexHooks(f, objstore.IndexHooks{
		Step:            func(string, string) { take() },
		BeforeSplitMove: func(string) { take() },
	})
	for i := range 8 {
		if _, err := f.Create(ctx, fmt.Sprintf("cat/name/b%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{2, 5} {
		if err := f.Delete(ctx, fmt.Sprintf("cat/name/b%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, img := range images {
		g, err := objstore.OpenFile(img, false)
		if err != nil {
			t.Fatal(err)
		}
		var live []string
		if err := g.List(ctx, "cat/", func(in objstore.Info) error { live = append(live, in.Name); return nil }); err != nil {
			t.Fatal(err)
		}
		slices.Sort(live)
		listed := listAll(t, g, "cat/", "", 4)
		for _, n := range live {
			if !slices.Contains(listed, n) {
				t.Fatalf("%s: %s exists and is not listed (%v)", img, n, listed)
			}
		}
		if err := g.RepairIndex(ctx); err != nil {
			t.Fatal(err)
		}
		if listed := listAll(t, g, "cat/", "", 4); !slices.Equal(listed, live) {
			t.Fatalf("%s: repaired, lists %v, want %v", img, listed, live)
		}
	}
}

// TestFileIndexRepairOldStore: a store whose catalog objects were written
// without keys (a binary of catalog format 3) is listed by a walk until
// its index is repaired, and from the index afterwards, ghosts removed.
func TestFileIndexRepairOldStore(t *testing.T) {
	f := openIndexed(t, 4)
	var want []string
	for i := range 10 {
		n := fmt.Sprintf("cat/name/o%d", i)
		if _, err := f.Create(ctx, n, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, n)
	}
	// As the store was before the index: no idx/.
	if err := os.RemoveAll(filepath.Join(f.Root(), "idx")); err != nil {
		t.Fatal(err)
	}
	g, err := objstore.OpenFile(f.Root(), false)
	if err != nil {
		t.Fatal(err)
	}
	objstore.SetIndexSplit(g, 0, 4)
	if got := listAll(t, g, "cat/", "", 3); !slices.Equal(got, want) {
		t.Fatalf("before the repair: %v, want %v", got, want)
	}
	if err := objstore.SetIndexKeys(g, []string{"cat/name/ghost"}); err != nil {
		t.Fatal(err)
	}
	if err := objstore.RepairIndexes(ctx, objstore.NewFaulty(g)); err != nil {
		t.Fatal(err)
	}
	read := 0
	objstore.SetIndexHooks(g, objstore.IndexHooks{Read: func(n int) { read += n }})
	if got := listAll(t, g, "cat/", "", 3); !slices.Equal(got, want) || read == 0 {
		t.Fatalf("after the repair: %v (%d index entries read), want %v", got, read, want)
	}
}

var ctx = context.Background()

// indexLoop creates, puts and deletes n random catalog names of a small
// set (n < 0: until killed), splitting levels often.
func indexLoop(dir string, n int) error {
	f, err := objstore.OpenFile(dir, false)
	if err != nil {
		return err
	}
	objstore.SetIndexSplit(f, 0, 4)
	r := rand.New(rand.NewPCG(uint64(os.Getpid()), 1))
	for i := 0; n < 0 || i < n; i++ {
		name := fmt.Sprintf("cat/name/m%02d", r.IntN(40))
		switch r.IntN(3) {
		case 0:
			_, err = f.Create(ctx, name, nil)
		case 1:
			_, err = f.Put(ctx, name, nil)
		case 2:
			err = f.Delete(ctx, name)
		}
		if err != nil && !errors.Is(err, objstore.ErrExists) && !errors.Is(err, objstore.ErrNotFound) {
			return err
		}
		if i == 20 {
			fmt.Println("running")
		}
	}
	return nil
}

// TestFileIndexAcrossProcesses: processes sharing a store (as hosts over
// NFS) create and delete the same names, splitting the same levels, one
// of them killed at some point: afterwards every object there is listed,
// and a repair leaves the index naming exactly them.
func TestFileIndexAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	f, err := objstore.OpenFile(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.RepairIndex(ctx); err != nil {
		t.Fatal(err)
	}
	start := func(n int) (*exec.Cmd, *bufio.Scanner) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "ARCHIP_INDEX_DIR="+dir, "ARCHIP_INDEX_N="+strconv.Itoa(n))
		cmd.Stderr = os.Stderr
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, bufio.NewScanner(out)
	}
	victim, vout := start(-1)
	var cmds []*exec.Cmd
	for range 2 {
		cmd, _ := start(150)
		cmds = append(cmds, cmd)
	}
	if !vout.Scan() {
		t.Fatal("the process to kill did not start")
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("process %d: %v", i, err)
		}
	}
	victim.Process.Kill()
	victim.Wait()
	var live []string
	if err := f.List(ctx, "cat/", func(in objstore.Info) error { live = append(live, in.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(live)
	listed := listAll(t, f, "cat/", "", 7)
	for _, n := range live {
		if !slices.Contains(listed, n) {
			t.Fatalf("%s exists and is not listed (%v)", n, listed)
		}
	}
	if err := f.RepairIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if listed := listAll(t, f, "cat/", "", 7); !slices.Equal(listed, live) {
		t.Fatalf("repaired, lists %v, want %v", listed, live)
	}
}

// TestFileIndexConcurrentSplits: writers in one process create, put and
// delete the same names at once while their keys' levels split under
// them: afterwards every object there is listed.
func TestFileIndexConcurrentSplits(t *testing.T) {
	f := openIndexed(t, 3)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 3))
			for range 60 {
				name := fmt.Sprintf("cat/name/c%d%d", r.IntN(4), r.IntN(6))
				var err error
				switch r.IntN(3) {
				case 0:
					_, err = f.Create(ctx, name, nil)
				case 1:
					_, err = f.Put(ctx, name, nil)
				case 2:
					err = f.Delete(ctx, name)
				}
				if err != nil && !errors.Is(err, objstore.ErrExists) && !errors.Is(err, objstore.ErrNotFound) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	listed := listAll(t, f, "cat/", "", 5)
	if err := f.List(ctx, "cat/", func(in objstore.Info) error {
		if !slices.Contains(listed, in.Name) {
			t.Errorf("%s exists and is not listed", in.Name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
