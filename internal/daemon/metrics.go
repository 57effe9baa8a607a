package daemon

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/progress"
)

// DefaultVolumeLabels is how many volumes have series of their own
// unless MetricsConfig says otherwise.
const DefaultVolumeLabels = 100

// OtherVolumes is the volume label of the series that count the volumes
// beyond the bound of MetricsConfig.VolumeLabels.
const OtherVolumes = "_other"

// MetricsConfig configures a daemon's metrics.
type MetricsConfig struct {
	// VolumeLabels bounds how many volumes are counted under a volume
	// label of their own: the open volumes first, then those closed most
	// recently (their series are kept until the slot is needed). Volumes
	// beyond it are counted together under volume=OtherVolumes. 0 means
	// DefaultVolumeLabels; a negative value sets no bound on the open
	// volumes, and keeps the series of the DefaultVolumeLabels closed
	// most recently.
	VolumeLabels int
}

// Metrics are the Prometheus metrics of one daemon, in a registry of
// their own (so that one process may run several daemons): see
// docs/metrics.md for each. Requests update counters resolved when their
// volume was opened; nothing on the request path looks a label up.
type Metrics struct {
	reg   *prometheus.Registry
	limit int

	mu    sync.Mutex
	vols  map[string]*volSlot // the volumes with a label of their own
	other *volMetrics
	clock int64 // orders slot use, for eviction

	readOps, readBytes, writeOps, writeBytes, zeroOps, zeroBytes *prometheus.CounterVec
	fuaOps, flushOps, errs, cow                                  *prometheus.CounterVec
	readDur, writeDur, zeroDur, flushDur                         *prometheus.HistogramVec

	handoffs, handoffErrs, leaseAcquired, leaseTakeovers prometheus.Counter
	leaseLost                                            *prometheus.CounterVec
	handoffDur                                           prometheus.Histogram
	periodic, periodicErrs                               prometheus.Counter
	conns                                                *prometheus.GaugeVec
	roles                                                *prometheus.GaugeVec
	status                                               func() []VolumeStatus
	ops                                                  *opsMetrics
	opsRead                                              func(context.Context) ([]progress.Record, time.Time, error) // the store's running operations

	storeOps, storeErrs, storeRead, storeWritten *prometheus.CounterVec
	storeDur                                     *prometheus.HistogramVec
}

// volSlot is a volume's label: its counters and how many handles use it.
type volSlot struct {
	name string
	m    *volMetrics
	refs int
	used int64
}

// volMetrics are one volume's counters, resolved once.
type volMetrics struct {
	readOps, readBytes, writeOps, writeBytes, zeroOps, zeroBytes prometheus.Counter
	fuaOps, flushOps, cow                                        prometheus.Counter
	readErrs, writeErrs, zeroErrs, flushErrs                     prometheus.Counter
	readDur, writeDur, zeroDur, flushDur                         prometheus.Observer
}

// ioBuckets span the latencies of block I/O and store calls: 50µs to 13s.
var ioBuckets = prometheus.ExponentialBuckets(50e-6, 4, 10)

// NewMetrics returns the metrics of a daemon (see Daemon.UseMetrics).
func NewMetrics(c MetricsConfig) *Metrics {
	limit := c.VolumeLabels
	if limit == 0 {
		limit = DefaultVolumeLabels
	}
	m := &Metrics{reg: prometheus.NewRegistry(), limit: limit, vols: map[string]*volSlot{}}
	vc := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archip_" + name, Help: help}, append([]string{"volume"}, labels...))
	}
	vh := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "archip_" + name, Help: help, Buckets: ioBuckets}, []string{"volume"})
	}
	c1 := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "archip_" + name, Help: help})
	}
	m.readOps = vc("volume_read_ops_total", "Read requests served.")
	m.readBytes = vc("volume_read_bytes_total", "Bytes read by clients.")
	m.readDur = vh("volume_read_duration_seconds", "Time to serve a read request.")
	m.writeOps = vc("volume_write_ops_total", "Write requests served.")
	m.writeBytes = vc("volume_write_bytes_total", "Bytes written by clients.")
	m.writeDur = vh("volume_write_duration_seconds", "Time to serve a write request.")
	m.zeroOps = vc("volume_zero_ops_total", "Write-zeroes and trim requests served.")
	m.zeroBytes = vc("volume_zero_bytes_total", "Bytes zeroed or trimmed by clients.")
	m.zeroDur = vh("volume_zero_duration_seconds", "Time to serve a write-zeroes or trim request.")
	m.fuaOps = vc("volume_fua_ops_total", "Write, write-zeroes and trim requests with FUA (durable on return).")
	m.flushOps = vc("volume_flush_ops_total", "Flush requests of clients.")
	m.flushDur = vh("volume_flush_duration_seconds", "Time to serve a client's flush request.")
	m.errs = vc("volume_errors_total", "Requests that failed, by kind of request.", "op")
	m.cow = vc("volume_cow_copies_total", "Blocks copied before a partial write (copy-on-write from a snapshot, a clone's parent, or after a lease takeover).")
	m.handoffs = c1("handoffs_total", "Leases this node released because another node asked for the volume.")
	m.handoffErrs = c1("handoff_errors_total", "Handoff requests that failed (the flush before release failed).")
	m.handoffDur = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "archip_handoff_duration_seconds",
		Help: "Time from a handoff request to the lease's release (the flush included).", Buckets: ioBuckets})
	m.leaseAcquired = c1("lease_acquisitions_total", "Volume leases this node took (at a first write, or for a reader of a free lease).")
	m.leaseTakeovers = c1("lease_takeovers_total", "Volume leases this node took over after they expired (their holder stopped renewing).")
	m.leaseLost = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archip_lease_lost_total",
		Help: "Volume leases this node lost without releasing them; unflushed=\"true\" when writes were lost with them (the volume is fenced until its clients reconnect)."}, []string{"unflushed"})
	m.periodic = c1("periodic_flushes_total", "Flushes of volumes with unflushed writes by the periodic flush.")
	m.periodicErrs = c1("periodic_flush_errors_total", "Periodic flushes that failed.")
	m.conns = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "archip_frontend_connections",
		Help: "Client connections open, by frontend (nbd, ...)."}, []string{"frontend"})
	m.roles = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "archip_volumes",
		Help: "Volumes open on this node, by role: writer (holds the lease), follower, read-only, fenced, opening, closing, busy (changing its role: taking its lease, on a slow store)."}, []string{"role"})
	sl := []string{"backend", "op"}
	m.storeOps = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archip_store_ops_total", Help: "Calls to the object store, by operation."}, sl)
	m.storeErrs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archip_store_errors_total",
		Help: "Calls to the object store that failed (not counting answers: not found, exists, version conflict)."}, sl)
	m.storeDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "archip_store_op_duration_seconds", Help: "Time of a call to the object store.", Buckets: ioBuckets}, sl)
	m.storeRead = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archip_store_read_bytes_total", Help: "Bytes read from the object store."}, []string{"backend"})
	m.storeWritten = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archip_store_written_bytes_total", Help: "Bytes written to the object store."}, []string{"backend"})
	m.ops = newOpsMetrics()
	m.reg.MustRegister(m)
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.readOps, m.readBytes, m.readDur, m.writeOps, m.writeBytes, m.writeDur,
		m.zeroOps, m.zeroBytes, m.zeroDur, m.fuaOps, m.flushOps, m.flushDur, m.errs, m.cow,
		m.handoffs, m.handoffErrs, m.handoffDur, m.leaseAcquired, m.leaseTakeovers, m.leaseLost,
		m.periodic, m.periodicErrs, m.conns, m.roles,
		m.storeOps, m.storeErrs, m.storeDur, m.storeRead, m.storeWritten}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
	m.ops.describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	status, opsRead := m.status, m.opsRead
	m.mu.Unlock()
	m.ops.collect(ch, opsRead)
	if status != nil {
		n := map[string]float64{"writer": 0, "follower": 0, "read-only": 0, "fenced": 0, "opening": 0, "closing": 0, "busy": 0}
		for _, st := range status() {
			n[st.Role]++
		}
		for role, v := range n {
			m.roles.WithLabelValues(role).Set(v)
		}
	}
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

// Registry is the registry the metrics are in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus' exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// WrapStore returns s with every call counted under backend (the URL
// scheme: file, rados, s3...). The wrapper offers exactly the
// capabilities of s (objstore.Wrapper). Build the daemon's manager on
// it.
func (m *Metrics) WrapStore(s objstore.Store, backend string) objstore.Store {
	read, written := m.storeRead.WithLabelValues(backend), m.storeWritten.WithLabelValues(backend)
	return objstore.Observe(s, func(op objstore.Op) objstore.Probe {
		ops, errs, dur := m.storeOps.WithLabelValues(backend, string(op)), m.storeErrs.WithLabelValues(backend, string(op)), m.storeDur.WithLabelValues(backend, string(op))
		var bytes prometheus.Counter
		switch op {
		case objstore.OpReadAt, objstore.OpGet, objstore.OpLend:
			bytes = read
		case objstore.OpPut, objstore.OpCreate, objstore.OpSwap, objstore.OpWriteAt:
			bytes = written
		}
		return func(n int64, d time.Duration, err error) {
			ops.Inc()
			dur.Observe(d.Seconds())
			if err != nil && !errors.Is(err, objstore.ErrNotFound) && !errors.Is(err, objstore.ErrExists) && !errors.Is(err, objstore.ErrConflict) {
				errs.Inc()
			}
			if bytes != nil && err == nil {
				bytes.Add(float64(n))
			}
		}
	})
}

// volume returns the counters of the volume name for one more handle.
func (m *Metrics) volume(name string) *volMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clock++
	if s := m.vols[name]; s != nil {
		s.refs++
		s.used = m.clock
		return s.m
	}
	if m.limit >= 0 && len(m.vols) >= m.limit {
		var old *volSlot
		for _, s := range m.vols {
			if s.refs == 0 && (old == nil || s.used < old.used) {
				old = s
			}
		}
		if old == nil {
			if m.other == nil {
				m.other = m.resolve(OtherVolumes)
			}
			return m.other
		}
		m.forget(old.name)
	}
	s := &volSlot{name: name, m: m.resolve(name), refs: 1, used: m.clock}
	m.vols[name] = s
	return s.m
}

// release gives back a handle's use of the counters of name.
func (m *Metrics) release(name string, vm *volMetrics) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.vols[name]
	if s == nil || s.m != vm {
		return
	}
	s.refs--
	if m.limit >= 0 || s.refs > 0 {
		return
	}
	// No bound: every open volume has a label, but only the
	// DefaultVolumeLabels closed most recently keep theirs.
	var idle int
	var old *volSlot
	for _, s := range m.vols {
		if s.refs == 0 {
			idle++
			if old == nil || s.used < old.used {
				old = s
			}
		}
	}
	if idle > DefaultVolumeLabels {
		m.forget(old.name)
	}
}

// forget drops the series of a volume. The caller holds m.mu.
func (m *Metrics) forget(name string) {
	delete(m.vols, name)
	for _, v := range []*prometheus.CounterVec{m.readOps, m.readBytes, m.writeOps, m.writeBytes, m.zeroOps, m.zeroBytes, m.fuaOps, m.flushOps, m.cow} {
		v.DeleteLabelValues(name)
	}
	m.errs.DeletePartialMatch(prometheus.Labels{"volume": name})
	for _, v := range []*prometheus.HistogramVec{m.readDur, m.writeDur, m.zeroDur, m.flushDur} {
		v.DeleteLabelValues(name)
	}
}

func (m *Metrics) resolve(name string) *volMetrics {
	return &volMetrics{
		readOps: m.readOps.WithLabelValues(name), readBytes: m.readBytes.WithLabelValues(name), readDur: m.readDur.WithLabelValues(name),
		writeOps: m.writeOps.WithLabelValues(name), writeBytes: m.writeBytes.WithLabelValues(name), writeDur: m.writeDur.WithLabelValues(name),
		zeroOps: m.zeroOps.WithLabelValues(name), zeroBytes: m.zeroBytes.WithLabelValues(name), zeroDur: m.zeroDur.WithLabelValues(name),
		fuaOps: m.fuaOps.WithLabelValues(name), flushOps: m.flushOps.WithLabelValues(name), flushDur: m.flushDur.WithLabelValues(name),
		cow:      m.cow.WithLabelValues(name),
		readErrs: m.errs.WithLabelValues(name, "read"), writeErrs: m.errs.WithLabelValues(name, "write"),
		zeroErrs: m.errs.WithLabelValues(name, "zero"), flushErrs: m.errs.WithLabelValues(name, "flush"),
	}
}

// read counts a read request that started at t.
func (v *volMetrics) read(n int, t time.Time, err error) {
	v.readOps.Inc()
	v.readDur.Observe(time.Since(t).Seconds())
	if err != nil {
		v.readErrs.Inc()
		return
	}
	v.readBytes.Add(float64(n))
}

func (v *volMetrics) write(n int, fua bool, t time.Time, err error) {
	v.writeOps.Inc()
	v.writeDur.Observe(time.Since(t).Seconds())
	if fua {
		v.fuaOps.Inc()
	}
	if err != nil {
		v.writeErrs.Inc()
		return
	}
	v.writeBytes.Add(float64(n))
}

func (v *volMetrics) zero(n int64, fua bool, t time.Time, err error) {
	v.zeroOps.Inc()
	v.zeroDur.Observe(time.Since(t).Seconds())
	if fua {
		v.fuaOps.Inc()
	}
	if err != nil {
		v.zeroErrs.Inc()
		return
	}
	v.zeroBytes.Add(float64(n))
}

func (v *volMetrics) flush(t time.Time, err error) {
	v.flushOps.Inc()
	v.flushDur.Observe(time.Since(t).Seconds())
	if err != nil {
		v.flushErrs.Inc()
	}
}

// countConns counts the connections l accepts, open until closed, in
// the gauge of frontend.
func (m *Metrics) countConns(l net.Listener, frontend string) net.Listener {
	return &countingListener{Listener: l, g: m.conns.WithLabelValues(frontend)}
}

type countingListener struct {
	net.Listener
	g prometheus.Gauge
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.g.Inc()
	return &countedConn{Conn: c, g: l.g}, nil
}

type countedConn struct {
	net.Conn
	g    prometheus.Gauge
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(c.g.Dec)
	return c.Conn.Close()
}
