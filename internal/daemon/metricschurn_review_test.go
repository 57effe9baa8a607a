package daemon

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsVolumeChurnBounded: thousands of volumes opened and closed
// in turn, and more held open than the bound, leave at most the bound's
// volumes (and _other) in the series; the held volumes beyond the bound
// count under _other, and a volume's counts survive until its slot is
// needed.
func TestMetricsVolumeChurnBounded(t *testing.T) {
	const bound = 8
	m := NewMetrics(MetricsConfig{VolumeLabels: bound})
	for i := range 3000 {
		name := fmt.Sprintf("v%d", i)
		vm := m.volume(name)
		vm.read(4096, time.Now(), nil)
		m.release(name, vm)
	}
	if n := testutil.CollectAndCount(m.readOps); n > bound {
		t.Fatalf("after 3000 volumes opened and closed: %d read_ops series, want <= %d", n, bound)
	}
	if got := testutil.ToFloat64(m.readOps.WithLabelValues("v2999")); got != 1 {
		t.Fatalf("the last closed volume's reads: %v, want 1 (kept until its slot is needed)", got)
	}
	var held []*volMetrics
	for i := range bound + 5 {
		vm := m.volume(fmt.Sprintf("h%d", i))
		vm.write(512, true, time.Now(), nil)
		held = append(held, vm)
	}
	if n := testutil.CollectAndCount(m.writeOps); n != bound+1 {
		t.Fatalf("%d volumes held: %d write_ops series, want %d (the bound and %s)", bound+5, n, bound+1, OtherVolumes)
	}
	if got := testutil.ToFloat64(m.writeOps.WithLabelValues(OtherVolumes)); got != 5 {
		t.Fatalf("%s writes: %v, want 5", OtherVolumes, got)
	}
	if got := testutil.ToFloat64(m.fuaOps.WithLabelValues(OtherVolumes)); got != 5 {
		t.Fatalf("%s fua: %v, want 5", OtherVolumes, got)
	}
	if n := testutil.CollectAndCount(m.errs); n > 4*(bound+1) {
		t.Fatalf("%d error series, want <= %d", n, 4*(bound+1))
	}
	if problems, err := testutil.CollectAndLint(m); err != nil || len(problems) != 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

// TestMetricsUnboundedForgetsClosed: with no bound, every open volume
// has its own series, but thousands of volumes opened and closed in
// turn leave the series of at most DefaultVolumeLabels closed ones (a
// daemon serving a churn of volumes must not grow without end).
func TestMetricsUnboundedForgetsClosed(t *testing.T) {
	m := NewMetrics(MetricsConfig{VolumeLabels: -1})
	for i := range 3000 {
		name := fmt.Sprintf("v%d", i)
		vm := m.volume(name)
		vm.read(4096, time.Now(), nil)
		m.release(name, vm)
	}
	if n := testutil.CollectAndCount(m.readOps); n > DefaultVolumeLabels {
		t.Fatalf("after 3000 volumes opened and closed: %d read_ops series, want <= %d", n, DefaultVolumeLabels)
	}
	if got := testutil.ToFloat64(m.readOps.WithLabelValues("v2999")); got != 1 {
		t.Fatalf("the last closed volume's reads: %v, want 1", got)
	}
	const held = 3 * DefaultVolumeLabels
	for i := range held {
		vm := m.volume(fmt.Sprintf("h%d", i))
		vm.write(512, false, time.Now(), nil)
	}
	for i := range held {
		if got := testutil.ToFloat64(m.writeOps.WithLabelValues(fmt.Sprintf("h%d", i))); got != 1 {
			t.Fatalf("open volume h%d: %v writes, want 1 (every open volume has its own series)", i, got)
		}
	}
}
