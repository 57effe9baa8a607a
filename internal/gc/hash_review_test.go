package gc_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestHashHoldLost (review of issue 10 #5): a hash stalls past its
// hold's expiry just before it persists its new map; a collection takes
// the hold for dead and deletes the garbage content blocks the hash
// deduplicated onto. The hash reports ErrHoldLost, but the volume must
// still read its data.
func TestHashHoldLost(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	rng := rand.New(rand.NewPCG(41, 42))
	data := garbageImage(t, m, rng, "g", 4)
	if _, err := m.CreateVolume(ctx, "v", uint64(len(data)), 16); err != nil {
		t.Fatal(err)
	}
	manage.WriteT(t, m, "v", 0, data)
	clk.advance(7200e9)

	st := newStall(mem, func(op, name string) bool { return op == "create" && strings.Contains(name, "/s/") })
	errc := make(chan error, 1)
	go func() {
		_, err := managerOn(m, st).Hash(ctx, "v", nil)
		errc <- err
	}()
	<-st.hit
	clk.advance(pastLock)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	close(st.release)
	if err := <-errc; !errors.Is(err, gc.ErrHoldLost) {
		t.Fatalf("hash whose hold a collection took for dead: %v", err)
	}
	if !bytes.Equal(manage.ReadT(t, m, "v", 0, -1), data) {
		t.Fatal("the volume does not read its data")
	}
}
