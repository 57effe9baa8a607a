package daemon

import (
	"context"
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestMetricsCountFailures: failed writes, zeroes, trims and flushes are
// counted as requests and errors of their kind and move no bytes; a
// failed store call is counted as the store's error, once; a fast
// zero that is refused (ErrNotFast) is no request.
func TestMetricsCountFailures(t *testing.T) {
	ctx := context.Background()
	mx := NewMetrics(MetricsConfig{})
	faulty := objstore.NewFaulty(objstore.NewMem())
	m := manage.New(mx.WrapStore(faulty, "mem"))
	if _, err := m.CreateVolume(ctx, "v", 1<<20, 16); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Snapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	d := New(m, t.Logf)
	d.UseMetrics(mx)
	defer d.Close(ctx)
	s, rs, err := d.Open(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	defer rs()
	if s.WriteAt(ctx, make([]byte, 4096), 0, true) == nil || s.WriteZeroes(ctx, 0, 4096, false, false, false) == nil || s.Trim(ctx, 0, 4096, true) == nil {
		t.Fatal("a snapshot took a write")
	}
	v, rv, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer rv()
	if err := v.WriteAt(ctx, make([]byte, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteZeroes(ctx, 1, 10, false, true, false); !errors.Is(err, ErrNotFast) {
		t.Fatalf("an unaligned fast zero: %v", err)
	}
	storeErrs := func() float64 {
		var n float64
		for _, op := range objstore.ObservedOps {
			n += count(mx.storeErrs.WithLabelValues("mem", string(op)))
		}
		return n
	}
	errsBefore := storeErrs()
	boom := errors.New("store unavailable")
	faulty.Add(objstore.Rule{Err: boom, Count: 1000})
	if err := v.Flush(ctx); err == nil {
		t.Fatal("a flush on a failing store succeeded")
	}
	faulty.Reset()
	for name, c := range map[string]struct {
		got, want float64
	}{
		"snapshot write ops":    {count(mx.writeOps.WithLabelValues("s")), 1},
		"snapshot write bytes":  {count(mx.writeBytes.WithLabelValues("s")), 0},
		"snapshot write errors": {count(mx.errs.WithLabelValues("s", "write")), 1},
		"snapshot zero ops":     {count(mx.zeroOps.WithLabelValues("s")), 2},
		"snapshot zero bytes":   {count(mx.zeroBytes.WithLabelValues("s")), 0},
		"snapshot zero errors":  {count(mx.errs.WithLabelValues("s", "zero")), 2},
		"v zero ops":            {count(mx.zeroOps.WithLabelValues("v")), 0},
		"v flush ops":           {count(mx.flushOps.WithLabelValues("v")), 1},
		"v flush errors":        {count(mx.errs.WithLabelValues("v", "flush")), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", name, c.got, c.want)
		}
	}
	if got := storeErrs() - errsBefore; got < 1 {
		t.Errorf("store errors during the failed flush: %v, want at least 1", got)
	}
}
