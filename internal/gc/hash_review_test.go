package gc_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

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

// TestHashStallAroundSwap: a hash stalls past its hold's expiry after it
// checked its hold, just before its head swap (a collection marks the old
// map and deletes the garbage content blocks the hash deduplicated onto),
// or just after it (a collection marks the new map and deletes the
// private blocks it replaced). Either way the volume reads its data, the
// hash's map is sound (repaired under a new hold), and once collected
// nothing is left over or missing.
func TestHashStallAroundSwap(t *testing.T) {
	for _, tc := range []struct {
		name     string
		op, part string
		nth      int
	}{
		// The first head swap is the open's, the first read of the hold
		// is the hash's check before its head swap.
		{"before the swap", "swap", "/head", 2},
		{"after the swap", "get", "gc/holds/", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := objstore.NewMem()
			m, clk := setup(mem)
			rng := rand.New(rand.NewPCG(43, 44))
			data := garbageImage(t, m, rng, "g", 4)
			if _, err := m.CreateVolume(ctx, "v", uint64(len(data)), 16); err != nil {
				t.Fatal(err)
			}
			manage.WriteT(t, m, "v", 0, data)
			clk.advance(2 * time.Hour)

			n := 0
			st := newStall(mem, func(op, name string) bool {
				if op == tc.op && strings.Contains(name, tc.part) {
					n++
				}
				return n == tc.nth
			})
			errc := make(chan error, 1)
			go func() {
				_, err := managerOn(m, st).Hash(ctx, "v", nil)
				errc <- err
			}()
			select {
			case <-st.hit:
			case err := <-errc:
				t.Fatalf("the hash did not reach the stall (%v)", err)
			}
			clk.advance(pastLock)
			rep, err := m.GC(ctx, gc.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Deleted.Objects == 0 {
				t.Fatal("the collection deleted nothing: the test does not test the stall")
			}
			close(st.release)
			if err := <-errc; err != nil {
				t.Fatalf("hash repaired after its hold was lost: %v", err)
			}
			if !bytes.Equal(manage.ReadT(t, m, "v", 0, -1), data) {
				t.Fatal("the volume does not read its data")
			}
			clk.advance(2 * time.Hour)
			if _, err := m.GC(ctx, gc.Options{}); err != nil {
				t.Fatal(err)
			}
			checkClean(t, m)
			if !bytes.Equal(manage.ReadT(t, m, "v", 0, -1), data) {
				t.Fatal("the volume does not read its data after a collection")
			}
		})
	}
}
