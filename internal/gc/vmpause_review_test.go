package gc_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestVMPausedCollector (review of issue 10 #5): a VM paused by its
// hypervisor does not see the pause on its own clocks (QEMU's kvmclock
// stops with the VM; Go compares times by CLOCK_MONOTONIC, which a host
// suspend does not advance either). Collector A marks, then its VM is
// paused past the lock's TTL; an import on another host finds the lock
// expired and deduplicates onto blocks A marked garbage; A resumes, its
// clock as it was: it must not delete them.
func TestVMPausedCollector(t *testing.T) {
	mem := objstore.NewMem()
	m, clk := setup(mem)
	rng := rand.New(rand.NewPCG(333, 334))
	data := garbageImage(t, m, rng, "g", 6)
	clk.advance(7200e9)

	clkA := &clock{t: clk.now()} // A's clock: stops while A's VM is paused
	stA := newStall(mem, func(op, prefix string) bool { return op == "list" && prefix == "" })
	a := runAsync(stA, clkA)
	<-stA.hit // marked: g's blocks are garbage to A
	clk.advance(pastLock)
	if _, _, err := m.Import(ctx, bytes.NewReader(data), -1, "again", image.Options{BlockShift: 16}); err != nil {
		t.Fatal(err)
	}
	close(stA.release)
	ra := <-a
	if ra.rep.Deleted.Objects != 0 {
		t.Errorf("collector A, its VM paused past its lock's TTL, deleted %+v (err %v)", ra.rep.Deleted, ra.err)
	}
	if !bytes.Equal(manage.ReadT(t, m, "again", 0, -1), data) {
		t.Fatal("the import does not read its data")
	}
}
