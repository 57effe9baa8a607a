package pools

import (
	"crypto/sha256"
	"errors"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestReviewConcurrentCreators: creators of one content block through
// views of two pools and readers at once, under the race detector: each
// Create succeeds or says ErrExists, a reader sees the block's bytes or
// ErrNotFound, never others; at least one copy is stored (two may be:
// Create is not atomic across pools, docs/pools.md), and Delete removes
// every copy.
func TestReviewConcurrentCreators(t *testing.T) {
	meta, fast, cold := objstore.NewMem(), objstore.NewMem(), objstore.NewMem()
	s, err := New(meta, []Named{{"fast", fast}, {"cold", cold}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := Of(s)
	vf, _ := r.View("fast")
	vc, _ := r.View("cold")
	for round := 0; round < 50; round++ {
		data := []byte{byte(round), 1, 2, 3}
		blk := blockmap.ContentName(sha256.Sum256(data))
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for k := 0; k < 8; k++ {
			v := []objstore.Store{vf, vc, s}[k%3]
			wg.Add(2)
			go func() {
				defer wg.Done()
				if _, err := v.Create(ctx, blk, data); err != nil && !errors.Is(err, objstore.ErrExists) {
					errs <- err
				}
			}()
			go func() {
				defer wg.Done()
				b, _, err := s.Get(ctx, blk)
				if err == nil && string(b) != string(data) {
					errs <- errors.New("a reader saw other bytes")
				} else if err != nil && !objstore.IsNotExist(err) {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if b, _, err := s.Get(ctx, blk); err != nil || string(b) != string(data) {
			t.Fatalf("after the creators: %q %v", b, err)
		}
		if err := s.Delete(ctx, blk); err != nil {
			t.Fatal(err)
		}
		for _, p := range []objstore.Store{fast, cold} {
			if _, err := p.Stat(ctx, blk); !objstore.IsNotExist(err) {
				t.Fatalf("Delete left a copy: %v", err)
			}
		}
	}
}
