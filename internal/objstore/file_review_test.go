package objstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileLinearizableUnderStalls: three handles on one store (hosts)
// with short random stalls inside their writes (after the listing an
// install decided on, and at every directory fsync) create, swap, delete
// and read a few names, while a fourth lists (and tidies) throughout.
// No Put, so an object's life is Create, Swaps, Delete. Checked against
// that model: every successful write is the only one from its base (no
// two Swaps win from one version, no two Creates win in one absence);
// a read returns only what a successful write wrote, with the version
// that write returned; what one worker sees of a name never goes back;
// a listing reports no object that was absent throughout, and misses
// none that existed throughout; at the end the object exists exactly
// when Creates outnumber Deletes.
//
// With prune, the handles collect superseded generations at once and the
// lister sees the server's clock a minute ahead: as if every write
// stalled past PruneAge between its link and its check. A writer may then
// take its win for a loss (documented: a Create answers ErrExists, a
// Delete ErrNotFound, for a write that happened, possibly after a reader
// saw it; one deleted before the fsync of its directory answers
// ErrNotFound), so only what does not trust the answers is checked: no two
// Swaps win from one version, and listings miss nothing.
func TestFileLinearizableUnderStalls(t *testing.T) {
	for _, prune := range []bool{false, true} {
		t.Run(fmt.Sprintf("prune=%v", prune), func(t *testing.T) { testFileLinearizable(t, prune) })
	}
}

func testFileLinearizable(t *testing.T, prune bool) {
	ctx := context.Background()
	root := t.TempDir()
	var stores []*objstore.File
	for i := 0; i < 4; i++ {
		s, err := objstore.OpenFile(root, i == 0)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(i), 11))
		var mu sync.Mutex
		stall := func(string) {
			mu.Lock()
			d, us := rng.IntN(4), rng.IntN(300)
			mu.Unlock()
			switch d {
			case 0:
				time.Sleep(time.Duration(us) * time.Microsecond)
			case 1:
				runtimeGosched()
			}
		}
		h := objstore.FileHooks{BeforeInstall: stall, SyncDir: stall}
		if prune {
			s.SetPruneAge(0)
			if i == 3 {
				h.Now = func(ns int64) int64 { return ns + int64(time.Minute) }
			}
		}
		objstore.SetFileHooks(s, h)
		stores = append(stores, s)
	}
	names := []string{"lease/v1", "blk/ab"}
	// "always" exists from start to end: a listing must report it.
	if _, err := stores[0].Create(ctx, "blk/always", []byte("x")); err != nil {
		t.Fatal(err)
	}

	type write struct {
		from    string // content of the base: "" for a Create
		ver     objstore.Version
		name    string
		created bool
	}
	var mu sync.Mutex
	wins := map[string]write{}         // content → the write that stored it
	failed := map[string]bool{}        // contents of writes that failed
	swapsFrom := map[string][]string{} // base content → contents swapped from it
	creates, deletes := map[string]int{}, map[string]int{}

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
			found := false
			err := stores[3].List(ctx, "blk/", func(in objstore.Info) error {
				if in.Name == "blk/always" {
					found = true
				}
				return nil
			})
			if err == nil && !found {
				err = errors.New("a listing missed blk/always, which exists throughout")
			}
			if err != nil {
				listed <- err
				return
			}
		}
	}()

	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%3]
			rng := rand.New(rand.NewPCG(uint64(w), 5))
			seen := map[string]objstore.Version{}
			last := map[string]string{} // content at seen[name]
			n := 0
			next := func() string { n++; return fmt.Sprintf("w%d.%d", w, n) }
			saw := func(op, name string, v objstore.Version) {
				if v < seen[name] {
					t.Errorf("worker %d: %s of %s gave version %x after %x", w, op, name, v, seen[name])
				}
				seen[name] = v
			}
			for i := 0; i < 150; i++ {
				name := names[rng.IntN(len(names))]
				switch rng.IntN(4) {
				case 0:
					b, v, err := s.Get(ctx, name)
					if errors.Is(err, objstore.ErrNotFound) {
						delete(last, name)
						continue
					}
					if err != nil {
						t.Error(err)
						continue
					}
					saw("get", name, v)
					last[name] = string(b)
					mu.Lock()
					if wr, ok := wins[string(b)]; !prune && ok && (wr.ver != v || wr.name != name) {
						t.Errorf("worker %d: get of %s read %q at version %x, written as %s at version %x", w, name, b, v, wr.name, wr.ver)
					}
					mu.Unlock()
				case 1:
					data := next()
					v, err := s.Create(ctx, name, []byte(data))
					mu.Lock()
					if err == nil {
						wins[data] = write{ver: v, name: name, created: true}
						creates[name]++
					} else {
						failed[data] = true
						// (With prune, a write deleted before its
						// directory's fsync answers ErrNotFound.)
						if !errors.Is(err, objstore.ErrExists) && !(prune && errors.Is(err, objstore.ErrNotFound)) {
							t.Error(err)
						}
					}
					mu.Unlock()
					if err == nil {
						saw("create", name, v)
						last[name] = data
					}
				case 2:
					base, ok := last[name]
					if !ok {
						continue
					}
					data := next()
					v, err := s.Swap(ctx, name, []byte(data), seen[name])
					mu.Lock()
					if err == nil {
						wins[data] = write{from: base, ver: v, name: name}
						swapsFrom[base] = append(swapsFrom[base], data)
					} else {
						failed[data] = true
						if !errors.Is(err, objstore.ErrConflict) && !(prune && errors.Is(err, objstore.ErrNotFound)) {
							t.Error(err)
						}
					}
					mu.Unlock()
					if err == nil {
						saw("swap", name, v)
						last[name] = data
					}
				case 3:
					err := s.Delete(ctx, name)
					if err == nil {
						mu.Lock()
						deletes[name]++
						mu.Unlock()
					} else if !errors.Is(err, objstore.ErrNotFound) {
						t.Error(err)
					}
					delete(last, name)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-listed; err != nil {
		t.Fatal(err)
	}
	for base, to := range swapsFrom {
		if len(to) > 1 {
			t.Errorf("%d swaps won from the version holding %q: %v", len(to), base, to)
		}
	}
	for _, name := range names {
		if prune {
			break
		}
		c, d := creates[name], deletes[name]
		b, _, err := stores[0].Get(ctx, name)
		exists := err == nil
		if err != nil && !errors.Is(err, objstore.ErrNotFound) {
			t.Fatal(err)
		}
		if c-d != 0 && c-d != 1 || exists != (c-d == 1) {
			t.Errorf("%s: %d creates and %d deletes won, exists at the end: %v", name, c, d, exists)
		}
		if exists {
			if _, ok := wins[string(b)]; !ok {
				t.Errorf("%s holds %q at the end, which no successful write wrote (failed: %v)", name, b, failed[string(b)])
			}
		}
	}
	t.Logf("wins %d, failed writes %d, creates %v, deletes %v", len(wins), len(failed), creates, deletes)
}

func runtimeGosched() { runtime.Gosched() }
