package pools

import (
	"context"
	"crypto/sha256"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// racyPool is a pool without conditional writes where another writer
// puts other bytes under a name between the router's HEAD and its PUT.
type racyPool struct {
	noCAS
	once  sync.Once
	other []byte
	raced bool // the other writer put its bytes
}

func (p *racyPool) Stat(ctx context.Context, name string) (objstore.Info, error) {
	in, err := p.noCAS.Stat(ctx, name)
	if objstore.IsNotExist(err) && p.other != nil {
		p.once.Do(func() { p.noCAS.Put(ctx, name, p.other); p.raced = true })
	}
	return in, err
}

// TestReviewEmulatedCreatePrivate: on a pool without conditional writes
// the router creates a block with a HEAD, then a PUT; that is sound only
// where every writer of the name writes the same bytes, which holds for
// content blocks (named by their hash) and not for private blocks (their
// writer replaces them whole with Put, and one taken over may still do
// so). A Create of a private block there must not replace bytes another
// writer put in between.
func TestReviewEmulatedCreatePrivate(t *testing.T) {
	p := &racyPool{noCAS: noCAS{objstore.NewMem()}, other: []byte("the writer's")}
	s, err := New(objstore.NewMem(), []Named{{"s3", p}})
	if err != nil {
		t.Fatal(err)
	}
	priv := blockmap.PrivateEntry(blockmap.NewID(), 1, 1).ObjectName()
	_, err = s.Create(ctx, priv, []byte("a creator's"))
	got, _, _ := p.Get(ctx, priv)
	if p.raced && string(got) != "the writer's" {
		t.Fatalf("Create (%v) replaced what another writer put: %q", err, got)
	}
	if p.raced && err == nil {
		t.Fatal("Create reported that it created an object another writer had put")
	}
	// A content block is still created so: every creator writes the same
	// bytes.
	data := []byte("content")
	blk := blockmap.ContentName(sha256.Sum256(data))
	p.other = nil
	if _, err := s.Create(ctx, blk, data); err != nil {
		t.Fatalf("Create of a content block on a pool without conditional writes: %v", err)
	}
}
