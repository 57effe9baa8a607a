package gc_test

import (
	"bytes"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFileRecordWithoutIndexKey: on the file store, whose catalog listing
// reads its list index, a record without its key (the crash state the
// index's order leaves, or a binary of catalog format 3) is still a
// volume: gc repairs the index before its mark (objstore.RepairIndexes
// reaches the file store), and the volume is kept and listed again.
func TestFileRecordWithoutIndexKey(t *testing.T) {
	f, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	m := manage.New(f)
	rng := rand.New(rand.NewPCG(9, 10))
	if _, _, err := m.Import(ctx, bytes.NewReader(randBytes(rng, 4*bs)), -1, "vm", image.Options{BlockShift: 16}); err != nil {
		t.Fatal(err)
	}
	want := manage.ReadT(t, m, "vm", 0, -1)
	dropped := 0
	filepath.WalkDir(filepath.Join(f.Root(), "idx"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), "+") && strings.HasSuffix(p, "vm") && strings.Contains(p, "name") {
			os.Remove(p)
			dropped++
		}
		return nil
	})
	if dropped != 1 {
		t.Fatalf("dropped %d keys of vm's record", dropped)
	}
	if p, _, err := m.ListPage(ctx, catalog.ListOptions{}); err != nil || len(p) != 0 {
		t.Fatalf("listed %v %v without the key", p, err)
	}
	now := func() time.Time { return time.Now().Add(2 * time.Hour) }
	rep, err := gc.Run(ctx, f, gc.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted.Heads != 0 || rep.Roots != 1 {
		t.Fatalf("%d roots, deleted %+v", rep.Roots, rep.Deleted)
	}
	if !bytes.Equal(manage.ReadT(t, m, "vm", 0, -1), want) {
		t.Fatal("vm changed across the collection")
	}
	if p, _, err := m.ListPage(ctx, catalog.ListOptions{}); err != nil || len(p) != 1 {
		t.Fatalf("listed %v %v after the collection", p, err)
	}
}
