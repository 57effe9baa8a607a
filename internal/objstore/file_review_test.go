package objstore_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
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
// Checked: no two Swaps win from one version of a name; what one worker
// sees of a name never goes back; a read returns only bytes some write
// was asked to store; a listing never misses an object that exists
// throughout.
//
// Not checked, because it does not hold: that a read returns only what a
// successful write stored, with the version it returned, and that an
// object exists at the end exactly when more Creates than Deletes won. A
// writer's link on a tombstone is visible before its check of the base;
// when the Delete that wrote the tombstone (or a listing) removes it
// meanwhile (collect checks that the tombstone is newest, then removes
// it: not atomic), the writer finds its base gone, withdraws its link and
// starts over. A reader or a Delete may have acted on the withdrawn link
// meanwhile (seen in about one run in fifteen: a Delete reported done on
// it, the Create then won a second time).
//
// With prune, the handles collect superseded generations at once and the
// lister sees the server's clock a minute ahead, as if every write
// stalled past PruneAge between its link and its check; a write deleted
// before its directory's fsync then answers ErrNotFound. Versions are not
// checked to grow then: the lister's clock, not the server's, is ahead,
// so it removes tombstones numbered above the server's time, and a
// directory made after that may be numbered below them.
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
		h := objstore.FileHooks{BeforeInstall: stall, SyncDir: stall, AfterLink: stall}
		if prune {
			// (Every store sees the same server clock: a lister whose
			// clock ran ahead of the creators' would model a server
			// clock going back, which the store does not survive: a
			// directory made after a tombstone's removal could be
			// numbered below it.)
			s.SetPruneAge(0)
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
	swapsFrom := map[string][]string{} // name@version → contents swapped from it
	asked := map[string]bool{}         // contents some write was asked to store
	creates, deletes := map[string]int{}, map[string]int{}

	stop := make(chan struct{})
	listed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				listed <- nil
				return
			case <-time.After(time.Millisecond):
				// (Listing in a tight loop, it removes the empty parent a
				// creator has just made, before its rename, often
				// enough for 100 times in a row: the creator gives up.)
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
				if v < seen[name] && !prune {
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
					if !asked[string(b)] {
						t.Errorf("worker %d: get of %s read %q, which no write stored", w, name, b)
					}
					mu.Unlock()
				case 1:
					data := next()
					mu.Lock()
					asked[data] = true
					mu.Unlock()
					v, err := s.Create(ctx, name, []byte(data))
					mu.Lock()
					if err == nil {
						wins[data] = write{ver: v, name: name, created: true}
						creates[name]++
					} else {
						failed[data] = true
						// (With prune, a write deleted before its
						// directory's fsync answers ErrNotFound, and
						// one that finds its base pruned when it checks
						// cannot tell whether it won: ErrTimeout.)
						if !errors.Is(err, objstore.ErrExists) && !(prune && (errors.Is(err, objstore.ErrNotFound) || errors.Is(err, objstore.ErrTimeout))) {
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
					from := fmt.Sprintf("%s@%x", name, seen[name])
					mu.Lock()
					asked[data] = true
					mu.Unlock()
					v, err := s.Swap(ctx, name, []byte(data), seen[name])
					mu.Lock()
					if err == nil {
						wins[data] = write{from: base, ver: v, name: name}
						swapsFrom[from] = append(swapsFrom[from], data)
					} else {
						failed[data] = true
						if !errors.Is(err, objstore.ErrConflict) && !(prune && (errors.Is(err, objstore.ErrNotFound) || errors.Is(err, objstore.ErrTimeout))) {
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
					} else if !errors.Is(err, objstore.ErrNotFound) && !(prune && errors.Is(err, objstore.ErrTimeout)) {
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
			t.Errorf("%d swaps won from %s: %v", len(to), base, to)
		}
	}
	t.Logf("wins %d, failed writes %d, creates %v, deletes %v", len(wins), len(failed), creates, deletes)
}

func runtimeGosched() { runtime.Gosched() }

// TestFileCreateWhoseDirectoryWentAgain: a creator that has renamed its
// new object directory into place stalls before it links on it (it used
// to fsync the parent there; now it fsyncs it after the link);
// meanwhile another host creates the object on that directory and
// deletes it, which removes the directory and its empty parent. The
// stalled Create must look again and create the object, not answer
// ErrNotFound (found by TestFileLinearizableUnderStalls).
func TestFileCreateWhoseDirectoryWentAgain(t *testing.T) {
	ctx := context.Background()
	root, a, b := twoFileStores(t)
	// The delete removes its tombstone and the directories at once only
	// if the tombstone's number (the directory's creation time plus a
	// random part below a millisecond) is below its change time: b's
	// clock ahead makes it so whatever the timing.
	later(b)
	h := fnv.New32a()
	h.Write([]byte("ab"))
	fan := filepath.Join(root, "obj", "blk", fmt.Sprintf("@%02x", h.Sum32()&0xff))
	done := false
	objstore.SetFileHooks(a, objstore.FileHooks{BeforeInstall: func(dir string) {
		if filepath.Dir(dir) != fan || done {
			return
		}
		if _, err := os.Stat(dir); err != nil {
			return // not made yet
		}
		done = true
		if _, err := b.Create(ctx, "blk/ab", []byte("b")); err != nil {
			t.Error(err)
		}
		if err := b.Delete(ctx, "blk/ab"); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(fan); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the deleted object's parent directory is still there: %v", err)
		}
	}})
	if _, err := a.Create(ctx, "blk/ab", []byte("a")); err != nil {
		t.Fatalf("create: %v", err)
	}
	if !done {
		t.Fatal("the stall never happened")
	}
	if got, _, err := b.Get(ctx, "blk/ab"); err != nil || string(got) != "a" {
		t.Fatalf("get = %q, %v", got, err)
	}
}
