package objstore_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileCreateSyncsDirsAtOnce: a write of a new object whose parents
// are missing (a gc hold after the last one was deleted: gc/holds/@xx)
// makes them, renames its directory into place and links its
// generation, and only then fsyncs each changed directory, all at once,
// before it answers: each fsync in turn was a journal commit in turn
// (five for a hold, issue 12). The first fsync waits for a second one
// to start with it.
func TestFileCreateSyncsDirsAtOnce(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	f, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	const wait = 10 * time.Second
	var mu sync.Mutex
	var synced []string
	first, second := make(chan struct{}), make(chan struct{})
	var once1, once2 sync.Once
	objstore.SetFileHooks(f, objstore.FileHooks{
		SyncDir: func(d string) {
			mu.Lock()
			synced = append(synced, d)
			n := len(synced)
			mu.Unlock()
			switch n {
			case 1:
				once1.Do(func() {
					close(first)
					select {
					case <-second:
					case <-time.After(wait):
						t.Error("the first directory fsync of a create ran alone")
					}
				})
			case 2:
				once2.Do(func() { close(second) })
			}
		},
	})
	if _, err := f.Create(ctx, "gc/holds/x", []byte("hold")); err != nil {
		t.Fatal(err)
	}
	if b, _, err := f.Get(ctx, "gc/holds/x"); err != nil || string(b) != "hold" {
		t.Fatalf("Get = %q, %v", b, err)
	}
	// Every directory of the path was synced in its parent: obj/gc,
	// gc/holds, holds/@xx, the object's directory, and the object's
	// directory itself for the link.
	mu.Lock()
	defer mu.Unlock()
	want := map[string]bool{}
	for _, d := range []string{"obj", "obj/gc", "obj/gc/holds"} {
		want[filepath.Join(root, d)] = true
	}
	got := map[string]bool{}
	for _, d := range synced {
		got[d] = true
	}
	for d := range want {
		if !got[d] {
			t.Errorf("%s not synced: %q", d, synced)
		}
	}
	if len(synced) != 5 {
		t.Errorf("%d directory fsyncs, want 5: %q", len(synced), synced)
	}
}
