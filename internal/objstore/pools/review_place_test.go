package pools

import (
	"context"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// placeGate delays the metadata backend's answer to a read of a placement
// record, to interleave a Place with it.
type placeGate struct {
	objstore.Store
	read, resume chan struct{}
}

func (g *placeGate) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	b, v, err := g.Store.Get(ctx, name)
	if _, ok := ParsePlacementName(name); ok && g.read != nil {
		g.read <- struct{}{}
		<-g.resume
	}
	return b, v, err
}

// TestReviewPlacementCacheRace: a read of a volume's placement that found
// no record must not cache "no record" over the placement a Place of
// this process recorded meanwhile: the volume's new blocks would go to
// the default pool for as long as the process lives.
func TestReviewPlacementCacheRace(t *testing.T) {
	g := &placeGate{Store: objstore.NewMem(), read: make(chan struct{}), resume: make(chan struct{})}
	s, err := New(g, []Named{{"a", objstore.NewMem()}, {"b", objstore.NewMem()}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := Of(s)
	id := blockmap.NewID()
	done := make(chan error)
	go func() { _, _, err := r.Placement(ctx, id); done <- err }()
	<-g.read // it found no record
	g.read = nil
	if err := r.Place(ctx, id, "b"); err != nil {
		t.Fatal(err)
	}
	close(g.resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p, rec, err := r.Placement(ctx, id); err != nil || p != "b" || !rec {
		t.Fatalf("placement after Place raced a read: %q recorded=%v %v; want b", p, rec, err)
	}
}
