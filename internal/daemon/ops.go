package daemon

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/progress"
)

// DefaultOperationsMaxAge is how long the records of the store's
// running operations are kept before they are read again.
const DefaultOperationsMaxAge = 2 * time.Second

// opsWait bounds how long a caller (a scrape) waits for a read of the
// records; a read the store holds up goes on, one at a time, and is
// used when it ends.
const opsWait = 2 * time.Second

// opsReadTimeout bounds a read of the records.
const opsReadTimeout = 30 * time.Second

// errOpsSlow: the read of the records took longer than opsWait.
var errOpsSlow = errors.New("daemon: reading the running operations' records is taking long (a slow store?): showing those read before")

// opsReader reads the records of the store's running operations (gc,
// moves; package progress), at most once per maxAge whoever asks.
type opsReader struct {
	s      objstore.Store
	maxAge time.Duration
	wait   time.Duration // opsWait (tests: less)

	mu       sync.Mutex
	at       time.Time // of the last read
	recs     []progress.Record
	err      error
	inflight chan struct{} // closed when the read in flight ends
}

func (o *opsReader) get(ctx context.Context) ([]progress.Record, time.Time, error) {
	o.mu.Lock()
	if !o.at.IsZero() && time.Since(o.at) < o.maxAge {
		defer o.mu.Unlock()
		return o.recs, o.at, o.err
	}
	ch := o.inflight
	if ch == nil {
		ch = make(chan struct{})
		o.inflight = ch
		go o.read(ch)
	}
	o.mu.Unlock()
	var err error
	select {
	case <-ch:
	case <-time.After(o.wait):
		err = errOpsSlow
	case <-ctx.Done():
		err = ctx.Err()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if err == nil {
		return o.recs, o.at, o.err
	}
	return live(o.recs, time.Now()), o.at, err
}

func (o *opsReader) read(ch chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), opsReadTimeout)
	defer cancel()
	now := time.Now()
	recs, err := progress.List(ctx, o.s, now)
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		recs = live(o.recs, now) // until they expire
	}
	o.recs, o.err, o.at, o.inflight = recs, err, now, nil
	close(ch)
}

// live returns the records of recs whose operations may run at now.
func live(recs []progress.Record, now time.Time) []progress.Record {
	var out []progress.Record
	for _, r := range recs {
		if r.Live(now) {
			out = append(out, r)
		}
	}
	return out
}

// Operations returns the store's running operations (gc, moves, pool
// migrations: package progress), as read at the time returned, at most
// the operations' max age ago (CacheOperations). With an error, the
// records read before that have not expired.
func (d *Daemon) Operations(ctx context.Context) ([]progress.Record, time.Time, error) {
	return d.ops.get(ctx)
}

// CacheOperations sets how long the records of Operations are kept
// (default DefaultOperationsMaxAge; 0: read at every call). Call it
// before d serves anything.
func (d *Daemon) CacheOperations(maxAge time.Duration) { d.ops.maxAge = maxAge }

// opsMetrics are the metrics of the store's running operations, read
// at each scrape from their records.
type opsMetrics struct {
	running, info, count      *prometheus.Desc
	started, updated, readErr *prometheus.Desc
	errs                      prometheus.Counter
}

func newOpsMetrics() *opsMetrics {
	kt := []string{"kind", "target", "id"}
	return &opsMetrics{
		running: prometheus.NewDesc("archip_operations", "Operations running on the store (any host), by kind: gc, move, migrate.", []string{"kind"}, nil),
		info:    prometheus.NewDesc("archip_operation_info", "A running operation: its phase and the host it runs on (1).", append(kt, "phase", "host"), nil),
		count:   prometheus.NewDesc("archip_operation_progress", "A running operation's counts, by count (gc: heads_marked, objects_examined; move: walk, blocks_walked, blocks_to_walk, blocks_copied, bytes_copied).", append(kt, "count"), nil),
		started: prometheus.NewDesc("archip_operation_started_timestamp_seconds", "When a running operation started, by its host's clock.", kt, nil),
		updated: prometheus.NewDesc("archip_operation_updated_timestamp_seconds", "When a running operation last wrote its progress, by its host's clock.", kt, nil),
		errs: prometheus.NewCounter(prometheus.CounterOpts{Name: "archip_operations_read_errors_total",
			Help: "Reads of the running operations' records that failed (the metrics then show those read before, until they expire)."}),
	}
}

func (o *opsMetrics) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{o.running, o.info, o.count, o.started, o.updated} {
		ch <- d
	}
	o.errs.Describe(ch)
}

// collect reads the records with read (nil: none) and sends the
// metrics.
func (o *opsMetrics) collect(ch chan<- prometheus.Metric, read func(context.Context) ([]progress.Record, time.Time, error)) {
	if read != nil {
		recs, _, err := read(context.Background())
		if err != nil {
			o.errs.Inc()
		}
		n := map[string]float64{}
		for _, k := range progress.Kinds {
			n[k] = 0
		}
		for _, r := range recs {
			n[r.Kind]++
			l := []string{r.Kind, r.Target, r.ID}
			ch <- prometheus.MustNewConstMetric(o.info, prometheus.GaugeValue, 1, append(l, r.Phase, r.Host)...)
			for c, v := range r.Counts {
				ch <- prometheus.MustNewConstMetric(o.count, prometheus.GaugeValue, float64(v), append(l, c)...)
			}
			ch <- prometheus.MustNewConstMetric(o.started, prometheus.GaugeValue, float64(r.Started.UnixNano())/1e9, l...)
			ch <- prometheus.MustNewConstMetric(o.updated, prometheus.GaugeValue, float64(r.Updated.UnixNano())/1e9, l...)
		}
		for k, v := range n {
			ch <- prometheus.MustNewConstMetric(o.running, prometheus.GaugeValue, v, k)
		}
	}
	o.errs.Collect(ch)
}
