package objstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileCreateSyncsAtOnce: a write of a new object makes its
// directory (and missing parents), fsyncing each parent, and fsyncs its
// temporary file; neither needs the other, so they run at once: a
// snapshot creates five new objects on its critical path (issue 12).
// Each hook waits for the other to start: run one after the other, they
// would wait out the timeout.
func TestFileCreateSyncsAtOnce(t *testing.T) {
	ctx := context.Background()
	f, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	const wait = 10 * time.Second
	dirSynced, tempSyncing := make(chan struct{}), make(chan struct{})
	var once1, once2 sync.Once
	objstore.SetFileHooks(f, objstore.FileHooks{
		SyncDir: func(string) {
			once1.Do(func() {
				close(dirSynced)
				select {
				case <-tempSyncing:
				case <-time.After(wait):
					t.Error("the directory's fsync ran without the temporary file's")
				}
			})
		},
		SyncTemp: func() {
			once2.Do(func() {
				close(tempSyncing)
				select {
				case <-dirSynced:
				case <-time.After(wait):
					t.Error("the temporary file's fsync ran without the directory's")
				}
			})
		},
	})
	if _, err := f.Create(ctx, "cat/name/x", []byte("record")); err != nil {
		t.Fatal(err)
	}
	if b, _, err := f.Get(ctx, "cat/name/x"); err != nil || string(b) != "record" {
		t.Fatalf("Get = %q, %v", b, err)
	}
}
