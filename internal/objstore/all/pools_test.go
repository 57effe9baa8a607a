package all

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestPoolsURL: pools:// names a configuration whose backends the same
// registry opens; blocks go to the pool, the rest to the metadata store.
func TestPoolsURL(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "store.toml")
	conf := fmt.Sprintf("metadata = %q\n[pools]\ndata = %q\n", "file://"+filepath.Join(dir, "meta"), "file://"+filepath.Join(dir, "data"))
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := Registry()
	s, err := r.Open(ctx, "pools://"+cfg, objstore.OpenOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	blk := blockmap.ContentName([32]byte{7})
	for _, n := range []string{blk, "cat/name/x"} {
		if _, err := s.Create(ctx, n, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	data, err := r.Open(ctx, "file://"+filepath.Join(dir, "data"), objstore.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	if _, err := data.Stat(ctx, blk); err != nil {
		t.Fatalf("the block is not in the data pool: %v", err)
	}
	if _, err := data.Stat(ctx, "cat/name/x"); !objstore.IsNotExist(err) {
		t.Fatalf("a catalog record in the data pool: %v", err)
	}
	conf = fmt.Sprintf("metadata = %q\n[pools]\ndata = %q\n", "pools://"+cfg, "mem://d")
	os.WriteFile(cfg, []byte(conf), 0o644)
	if _, err := r.Open(ctx, "pools://"+cfg, objstore.OpenOptions{}); !errors.Is(err, objstore.ErrBadURL) {
		t.Fatalf("a pools:// store inside another: %v", err)
	}
}
