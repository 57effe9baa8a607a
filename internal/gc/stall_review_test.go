package gc_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestHoldLostLeavesNoResult (review of issue 10 #5): an import stalls
// past its hold's expiry just before it writes its map; a collection
// takes the hold for dead and deletes the garbage blocks the import
// deduplicated onto. The import reports ErrHoldLost, and it must not
// leave its result in the catalog: a name that reads as "store is
// corrupt" (or, worse, that a clone or a VM then uses).
func TestHoldLostLeavesNoResult(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	rng := rand.New(rand.NewPCG(351, 361))
	data := garbageImage(t, m, rng, "g", 4)
	clk.advance(2 * time.Hour)

	st := newStall(mem, func(op, name string) bool { return op == "create" && strings.HasSuffix(name, "/head") })
	errc := make(chan error, 1)
	go func() {
		_, _, err := managerOn(m, st).Import(ctx, bytes.NewReader(data), -1, "again", image.Options{BlockShift: 16})
		errc <- err
	}()
	<-st.hit
	clk.advance(pastLock)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	close(st.release)
	if err := <-errc; !errors.Is(err, gc.ErrHoldLost) {
		t.Fatalf("import whose hold a collection took for dead: %v", err)
	}
	list, err := m.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		v, _, err := m.Open(ctx, e.Name, false)
		if err == nil {
			p := make([]byte, v.Size())
			err = v.ReadAt(ctx, p, 0)
			v.Close(ctx)
		}
		if err != nil {
			t.Errorf("%s is in the catalog after its import failed with ErrHoldLost, and does not read: %v", e.Name, err)
		}
	}
	// Nothing it wrote stays once collected.
	clk.advance(2 * time.Hour)
	if _, err := m.GC(ctx, gc.Options{}); err != nil {
		t.Fatal(err)
	}
	checkClean(t, m)
}
