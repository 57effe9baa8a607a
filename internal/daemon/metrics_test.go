package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// metricsDaemon is a daemon with metrics on a memory store counted as
// backend "mem", with the volumes named.
func metricsDaemon(t testing.TB, c MetricsConfig, vols ...string) (*Daemon, *Metrics) {
	t.Helper()
	mx := NewMetrics(c)
	m := manage.New(mx.WrapStore(objstore.NewMem(), "mem"))
	for _, v := range vols {
		if _, err := m.CreateVolume(context.Background(), v, 1<<20, 16); err != nil {
			t.Fatal(err)
		}
	}
	d := New(m, t.Logf)
	d.UseMetrics(mx)
	t.Cleanup(func() { d.Close(context.Background()) })
	return d, mx
}

func count(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

// histCount is how many observations a histogram has.
func histCount(t *testing.T, h *prometheus.HistogramVec, labels ...string) uint64 {
	t.Helper()
	o, err := h.GetMetricWithLabelValues(labels...)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan prometheus.Metric, 1)
	o.(prometheus.Histogram).Collect(ch)
	pb := new(dto.Metric)
	if err := (<-ch).Write(pb); err != nil {
		t.Fatal(err)
	}
	return pb.GetHistogram().GetSampleCount()
}

// TestMetricsCountRequests: each kind of request moves its volume's
// counters by exactly its count and bytes, and the store's counters move
// too; the registry passes the linter.
func TestMetricsCountRequests(t *testing.T) {
	ctx := context.Background()
	d, mx := metricsDaemon(t, MetricsConfig{}, "v")
	v, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	storeWrites := count(mx.storeWritten.WithLabelValues("mem"))
	for i := range 3 {
		if err := v.WriteAt(ctx, make([]byte, 4096), int64(i)*4096, i == 0); err != nil {
			t.Fatal(err)
		}
	}
	p := make([]byte, 512)
	for range 5 {
		if err := v.ReadAt(ctx, p, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.ReadAt(ctx, p, 1<<30); err == nil {
		t.Fatal("a read beyond the end succeeded")
	}
	if err := v.WriteZeroes(ctx, 0, 8192, false, false, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Trim(ctx, 65536, 65536, true); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		got  prometheus.Collector
		want float64
	}{
		"read ops":    {mx.readOps.WithLabelValues("v"), 6},
		"read bytes":  {mx.readBytes.WithLabelValues("v"), 5 * 512},
		"read errors": {mx.errs.WithLabelValues("v", "read"), 1},
		"write ops":   {mx.writeOps.WithLabelValues("v"), 3},
		"write bytes": {mx.writeBytes.WithLabelValues("v"), 3 * 4096},
		"zero ops":    {mx.zeroOps.WithLabelValues("v"), 2},
		"zero bytes":  {mx.zeroBytes.WithLabelValues("v"), 8192 + 65536},
		"fua ops":     {mx.fuaOps.WithLabelValues("v"), 2},
		"flush ops":   {mx.flushOps.WithLabelValues("v"), 1},
		"leases":      {mx.leaseAcquired, 1},
	} {
		if got := count(c.got); got != c.want {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
	if n := histCount(t, mx.readDur, "v"); n != 6 {
		t.Errorf("read latencies observed: %d, want 6", n)
	}
	if n := histCount(t, mx.flushDur, "v"); n != 1 {
		t.Errorf("flush latencies observed: %d, want 1", n)
	}
	if got := count(mx.storeWritten.WithLabelValues("mem")) - storeWrites; got < 3*4096 {
		t.Errorf("store bytes written: %v, want at least the data", got)
	}
	if got := count(mx.storeOps.WithLabelValues("mem", "swap")); got < 1 {
		t.Errorf("store swaps: %v, want the flush's head swap", got)
	}
	release()
	problems, err := testutil.CollectAndLint(mx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if n, err := testutil.GatherAndCount(mx.Registry(), "archip_volumes"); err != nil || n != 7 {
		t.Errorf("archip_volumes series: %d, %v; want one per role", n, err)
	}
}

// staleStat is a memory store whose Stat is not fresh (as on NFS): its
// writers write no log, and copy on write at once.
type staleStat struct{ *objstore.Mem }

func (staleStat) FreshStat() bool { return false }

// TestMetricsCopyOnWrite: a partial write to a block of a snapshot's
// copies it once.
func TestMetricsCopyOnWrite(t *testing.T) {
	ctx := context.Background()
	mx := NewMetrics(MetricsConfig{})
	m := manage.New(mx.WrapStore(staleStat{objstore.NewMem()}, "mem"))
	if _, err := m.CreateVolume(ctx, "v", 1<<20, 16); err != nil {
		t.Fatal(err)
	}
	d := New(m, t.Logf)
	d.UseMetrics(mx)
	defer d.Close(ctx)
	v, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, make([]byte, 65536), 0, false); err != nil {
		t.Fatal(err)
	}
	release()
	if _, err := d.mgr.Snapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	v, release, err = d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for range 2 {
		if err := v.WriteAt(ctx, []byte("x"), 10, false); err != nil {
			t.Fatal(err)
		}
	}
	if got := count(mx.cow.WithLabelValues("v")); got != 1 {
		t.Errorf("copies: %v, want 1", got)
	}
}

// TestMetricsVolumeBound: volumes beyond the bound count under
// OtherVolumes, a closed volume's series make way for a new one, and a
// negative bound sets none.
func TestMetricsVolumeBound(t *testing.T) {
	ctx := context.Background()
	d, mx := metricsDaemon(t, MetricsConfig{VolumeLabels: 2}, "a", "b", "c", "e")
	open := func(name string) func() {
		v, release, err := d.Open(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.ReadAt(ctx, make([]byte, 1), 0); err != nil {
			t.Fatal(err)
		}
		return release
	}
	relA, relB, relC := open("a"), open("b"), open("c")
	defer relB()
	defer relC()
	volumes := func() []string {
		var names []string
		fams, _ := mx.Registry().Gather()
		for _, f := range fams {
			if f.GetName() != "archip_volume_read_ops_total" {
				continue
			}
			for _, m := range f.GetMetric() {
				names = append(names, fmt.Sprintf("%s=%v", m.GetLabel()[0].GetValue(), m.GetCounter().GetValue()))
			}
		}
		return names
	}
	if got := strings.Join(volumes(), " "); got != "_other=1 a=1 b=1" {
		t.Errorf("series with a, b, c open: %s", got)
	}
	relA()
	relE := open("e")
	defer relE()
	if got := strings.Join(volumes(), " "); got != "_other=1 b=1 e=1" {
		t.Errorf("series after a closed and e opened: %s", got)
	}

	d2, mx2 := metricsDaemon(t, MetricsConfig{VolumeLabels: -1}, "a", "b", "c")
	for _, n := range []string{"a", "b", "c"} {
		_, release, err := d2.Open(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
	}
	if n, _ := testutil.GatherAndCount(mx2.Registry(), "archip_volume_read_ops_total"); n != 3 {
		t.Errorf("unbounded: %d series, want 3", n)
	}
}

// TestMetricsHandoff: a handoff and the lease it moves are counted on
// both sides.
func TestMetricsHandoff(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	a, b := newNode(t, s, "a", time.Hour), newNode(t, s, "b", time.Hour)
	ma, mb := NewMetrics(MetricsConfig{}), NewMetrics(MetricsConfig{})
	a.d.UseMetrics(ma)
	b.d.UseMetrics(mb)
	if _, err := a.d.mgr.CreateVolume(ctx, "v", 1<<20, 16); err != nil {
		t.Fatal(err)
	}
	ea, eb := a.open(t, "v"), b.open(t, "v")
	for _, e := range []*Volume{ea, eb, ea} {
		if err := e.WriteAt(ctx, []byte("x"), 0, false); err != nil {
			t.Fatal(err)
		}
	}
	if got := count(ma.handoffs); got != 1 {
		t.Errorf("handoffs by a: %v, want 1", got)
	}
	if got := count(mb.handoffs); got != 1 {
		t.Errorf("handoffs by b: %v, want 1", got)
	}
	if got := count(ma.leaseAcquired); got != 2 {
		t.Errorf("leases taken by a: %v, want 2", got)
	}
}

// BenchmarkVolumeRead is the cost of a 4 KiB read through a daemon
// volume with metrics off and on: the difference is what counting a
// request costs.
func BenchmarkVolumeRead(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", on), func(b *testing.B) {
			ctx := context.Background()
			m := manage.New(objstore.NewMem())
			if _, err := m.CreateVolume(ctx, "v", 1<<20, 16); err != nil {
				b.Fatal(err)
			}
			d := New(m, nil)
			if on {
				d.UseMetrics(NewMetrics(MetricsConfig{}))
			}
			v, release, err := d.Open(ctx, "v")
			if err != nil {
				b.Fatal(err)
			}
			if err := v.WriteAt(ctx, make([]byte, 1<<20), 0, false); err != nil {
				b.Fatal(err)
			}
			p := make([]byte, 4096)
			b.ResetTimer()
			for i := range b.N {
				if err := v.ReadAt(ctx, p, int64(i%256)*4096); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			release()
			d.Close(ctx)
		})
	}
}

// BenchmarkCountRead is what counting one read costs by itself: the
// clock read, two counters and a histogram.
func BenchmarkCountRead(b *testing.B) {
	vm := NewMetrics(MetricsConfig{}).volume("v")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			vm.read(4096, time.Now(), nil)
		}
	})
}
