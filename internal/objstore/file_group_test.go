package objstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileConcurrentPutsShareDirSync: N writers that link in one
// directory while an fsync of it runs share the next fsync (group
// commit): the directory is fsynced fewer than N times, and still each
// write returns only after an fsync of the directory began after its
// link.
func TestFileConcurrentPutsShareDirSync(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "blk/x", []byte("0")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, objectDir(t, root, "blk"))
	const writers = 8
	var mu sync.Mutex
	syncs := 0  // fsyncs of dir begun
	linked := 0 // writers that linked
	all := make(chan struct{})
	var atLink, atReturn []int // fsyncs of dir begun when a writer linked, returned
	objstore.SetFileHooks(s, objstore.FileHooks{
		AfterLink: func(d string) {
			if d != dir {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			linked++
			atLink = append(atLink, syncs)
			if linked == writers {
				close(all)
			}
		},
		SyncDir: func(d string) {
			if d != dir {
				return
			}
			mu.Lock()
			syncs++
			first := syncs == 1
			mu.Unlock()
			if first {
				<-all // the first fsync runs while every writer links
			}
		},
	})
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Put(ctx, "blk/x", []byte(fmt.Sprint(i))); err != nil {
				errs <- err
			}
			mu.Lock()
			atReturn = append(atReturn, syncs)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Each write needs an fsync begun after its link: matched in order,
	// the i-th earliest return saw more fsyncs begun than the i-th
	// earliest link.
	sort.Ints(atLink)
	sort.Ints(atReturn)
	for i := range atLink {
		if atReturn[i] <= atLink[i] {
			t.Fatalf("writes returned with %v fsyncs of the directory begun, linked with %v: one returned before an fsync begun after its link", atReturn, atLink)
		}
	}
	if syncs >= writers {
		t.Fatalf("%d writers linking in one directory at once fsynced it %d times, want fewer (shared)", writers, syncs)
	}
}
