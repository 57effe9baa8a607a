package daemon

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestScrapeDuringLeaseTaking: a scrape of /metrics (and Status, which
// /v1/volumes and the dashboard show) answers while a volume is taking
// its lease on a stalled store, instead of waiting for the store: the
// metrics must not vanish in the very incident they should show.
func TestScrapeDuringLeaseTaking(t *testing.T) {
	ctx := context.Background()
	d, s, _ := newHookDaemon(t, "v")
	mx := NewMetrics(MetricsConfig{})
	d.UseMetrics(mx)
	e, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	hit, unblock := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	s.setHook(func(objstore.Op, string) error {
		if first.CompareAndSwap(false, true) {
			close(hit)
			<-unblock
		}
		return nil
	})
	wrote := make(chan struct{})
	go func() { e.WriteAt(ctx, []byte("x"), 0, false); close(wrote) }()
	within(t, hit, "the write's first store call")
	scraped := make(chan struct{})
	var st []VolumeStatus
	go func() {
		testutil.CollectAndCount(mx)
		st = d.Status()
		close(scraped)
	}()
	select {
	case <-scraped:
	case <-wrote:
		t.Fatal("the write finished with its store call held")
	case <-hitTimeout():
		close(unblock)
		<-scraped
		t.Fatal("a scrape waited for a volume taking its lease on a stalled store")
	}
	close(unblock)
	<-wrote
	if len(st) != 1 || st[0].Name != "v" {
		t.Fatalf("status during the lease taking: %+v", st)
	}
}

// hitTimeout is how long a call that does no I/O of its own may take
// on a loaded machine before the test calls it blocked.
func hitTimeout() <-chan time.Time { return time.After(20 * time.Second) }
