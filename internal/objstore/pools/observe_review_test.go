package pools

import (
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestObservedRouterKeepsCapabilities: a router of mixed pools under
// Observe (and Faulty over that) offers exactly the router's
// capabilities (Faulty: but those it documents hiding), and Of still
// finds the router.
func TestObservedRouterKeepsCapabilities(t *testing.T) {
	m := func() *objstore.Mem { return objstore.NewMem() }
	for name, r := range map[string]objstore.Store{
		"rados+rados":     newTest(radosish{m()}, isData, radosish{m()}, radosish{m()}),
		"durable+mem":     newTest(durableRW{m()}, isData, m()),
		"bare+rados":      newTest(bare{m()}, isData, radosish{m()}),
		"durable+durable": newTest(durableRW{m()}, isData, durableRW{m()}),
	} {
		o := objstore.Observe(r, func(objstore.Op) objstore.Probe { return nil })
		f := objstore.NewFaulty(o)
		for what, s := range map[string]objstore.Store{"observed": o, "faulty(observed)": f} {
			want := objstore.CapabilitiesOf(r)
			if s == objstore.Store(f) { // Faulty hides what would bypass its rules
				want &^= objstore.CapCopy | objstore.CapHandles | objstore.CapLend
			}
			if got := objstore.CapabilitiesOf(s); got != want {
				t.Errorf("%s: %s router offers %v, the router %v", name, what, got, want)
			}
			if rr, ok := Of(s); !ok || rr == nil {
				t.Errorf("%s: Of(%s router) found no router", name, what)
			}
			_, rw := objstore.AsRangeWriter(s)
			_, sy := objstore.AsSyncer(s)
			_, cp := objstore.AsCopier(s)
			_, ld := objstore.AsLender(s)
			_, fe := objstore.AsFencer(s)
			if rw != (want&objstore.CapRangeWrite != 0) || sy != (want&objstore.CapSync != 0) || cp != (want&objstore.CapCopy != 0) ||
				ld != (want&objstore.CapLend != 0) || fe != (want&objstore.CapFence != 0) || objstore.FreshStat(s) != (want&objstore.CapFreshStat != 0) {
				t.Errorf("%s: %s router: As* found rw %v sync %v copy %v lend %v fence %v; offered %v", name, what, rw, sy, cp, ld, fe, want)
			}
		}
	}
}
