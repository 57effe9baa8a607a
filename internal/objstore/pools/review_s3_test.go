package pools

import (
	"crypto/sha256"
	"errors"
	"path/filepath"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/s3"
)

// TestReviewS3NoConditionalBlocks: on a real S3 server without
// conditional writes as a data pool beside a file pool, content blocks
// are created once (a second creator, in this process or another, is
// told ErrExists, also when the file pool is its first), private blocks
// are put and never created, and versions of the block's copies in the
// two pools differ.
func TestReviewS3NoConditionalBlocks(t *testing.T) {
	srv := s3.TestServer(t, "versitygw")
	srv.NoConditional = true
	plain := s3.OpenTestStore(t, srv)
	meta, err := objstore.OpenFile(filepath.Join(t.TempDir(), "m"), true)
	if err != nil {
		t.Fatal(err)
	}
	file, err := objstore.OpenFile(filepath.Join(t.TempDir(), "f"), true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(meta, []Named{{"s3", plainNoClose{plain}}, {"file", file}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, _ := Of(s)
	other, _ := r.View("file")
	data := []byte("content block")
	blk := blockmap.ContentName(sha256.Sum256(data))
	v1, err := s.Create(ctx, blk, data)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []objstore.Store{s, other} {
		if _, err := c.Create(ctx, blk, data); !errors.Is(err, objstore.ErrExists) {
			t.Fatalf("a second Create of a content block: %v", err)
		}
	}
	if _, err := file.Stat(ctx, blk); !objstore.IsNotExist(err) {
		t.Fatalf("the file pool got a copy: %v", err)
	}
	file.Put(ctx, blk, data)
	plain.Delete(ctx, blk)
	in, err := s.Stat(ctx, blk)
	if err != nil {
		t.Fatal(err)
	}
	if in.Version == v1 {
		t.Fatalf("the copies in two pools have one version %x", v1)
	}
	priv := blockmap.PrivateEntry(blockmap.NewID(), 1, 1).ObjectName()
	if _, err := s.Create(ctx, priv, []byte("p")); !errors.Is(err, objstore.ErrUnsupport) {
		t.Fatalf("Create of a private block on S3 without conditional writes: %v", err)
	}
	if _, err := s.Put(ctx, priv, []byte("p")); err != nil {
		t.Fatalf("Put of a private block: %v", err)
	}
	if b, _, err := plain.Get(ctx, priv); err != nil || string(b) != "p" {
		t.Fatalf("the private block on S3: %q %v", b, err)
	}
}
