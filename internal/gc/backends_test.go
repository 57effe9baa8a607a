package gc_test

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// collectOn runs a small removal scenario on a real backend (whose
// object times come from its own clock) and collects with a tiny grace.
func collectOn(t *testing.T, s objstore.Store) {
	m := manage.New(s)
	rng := rand.New(rand.NewPCG(11, 12))
	img := randBytes(rng, 4*bs)
	if _, _, err := m.Import(ctx, bytes.NewReader(img), -1, "img", image.Options{BlockShift: 16}); err != nil {
		t.Fatal(err)
	}
	m.Clone(ctx, "img", "vm", 0)
	manage.WriteT(t, m, "vm", 10, randBytes(rng, 2*bs))
	want := manage.ReadT(t, m, "vm", 0, -1)
	m.Import(ctx, bytes.NewReader(randBytes(rng, 3*bs)), -1, "gone", image.Options{BlockShift: 16})
	m.Remove(ctx, "gone")
	m.Remove(ctx, "img")                // the clone keeps what it uses
	time.Sleep(1100 * time.Millisecond) // object times may have a 1 s granularity
	rep, err := m.GC(ctx, gc.WithShortGrace(gc.Options{Grace: time.Nanosecond}))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted.Content < 3 {
		t.Fatalf("removed image's blocks not collected: %+v", rep.Deleted)
	}
	checkClean(t, m)
	if !bytes.Equal(manage.ReadT(t, m, "vm", 0, -1), want) {
		t.Fatal("the clone changed")
	}
}

func TestFileStore(t *testing.T) {
	s, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	collectOn(t, s)
}
