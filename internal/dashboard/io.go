package dashboard

import (
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// volumeIO is one volume's I/O rates, per second, over the last
// interval between two samples of the registry.
type volumeIO struct {
	Volume     string  `json:"volume"`
	ReadOps    float64 `json:"read_iops"`
	WriteOps   float64 `json:"write_iops"`
	ReadBytes  float64 `json:"read_bytes_per_second"`
	WriteBytes float64 `json:"write_bytes_per_second"`
}

func (v volumeIO) IOPS() float64 { return v.ReadOps + v.WriteOps }

// ioRates are the rates of every volume the registry counts.
type ioRates struct {
	At       time.Time           `json:"time"`
	Interval float64             `json:"interval_seconds"` // 0: one sample so far, no rates yet
	Volumes  []volumeIO          `json:"volumes"`          // busiest first
	byName   map[string]volumeIO // of Volumes
}

func (r *ioRates) top(n int) []volumeIO {
	if r == nil {
		return nil
	}
	var out []volumeIO
	for _, v := range r.Volumes {
		if len(out) == n || v.IOPS() == 0 && v.ReadBytes == 0 && v.WriteBytes == 0 {
			break
		}
		out = append(out, v)
	}
	return out
}

// minInterval is the least time between two samples rates are
// computed from.
const minInterval = time.Second

// ioSampler computes rates from samples of the registry's per-volume
// counters, taken when asked and at least minInterval apart.
type ioSampler struct {
	now    func() time.Time
	gather func() ([]*dto.MetricFamily, error) // nil: no metrics

	mu    sync.Mutex
	last  *ioSample
	rates *ioRates
}

type ioSample struct {
	at     time.Time
	counts map[string]*[4]float64 // by volume: read ops, write ops, read bytes, write bytes
}

var ioCounters = map[string]int{
	"archip_volume_read_ops_total": 0, "archip_volume_write_ops_total": 1,
	"archip_volume_read_bytes_total": 2, "archip_volume_write_bytes_total": 3,
}

// sample returns the latest rates (an empty set without metrics).
func (s *ioSampler) sample() *ioRates {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.gather == nil {
		return &ioRates{At: now, byName: map[string]volumeIO{}}
	}
	if s.last != nil && now.Sub(s.last.at) < minInterval && s.rates != nil {
		return s.rates
	}
	mfs, err := s.gather()
	if err != nil {
		return &ioRates{At: now, byName: map[string]volumeIO{}}
	}
	cur := &ioSample{at: now, counts: map[string]*[4]float64{}}
	for _, mf := range mfs {
		k, ok := ioCounters[mf.GetName()]
		if !ok {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "volume" {
					c := cur.counts[l.GetValue()]
					if c == nil {
						c = new([4]float64)
						cur.counts[l.GetValue()] = c
					}
					c[k] = m.GetCounter().GetValue()
				}
			}
		}
	}
	r := &ioRates{At: now, byName: map[string]volumeIO{}}
	if prev := s.last; prev != nil {
		dt := now.Sub(prev.at).Seconds()
		r.Interval = dt
		for name, c := range cur.counts {
			p := prev.counts[name]
			if p == nil {
				p = new([4]float64)
			}
			var d [4]float64
			for i := range d {
				if c[i] >= p[i] { // else reset (the label was reused): no rate
					d[i] = (c[i] - p[i]) / dt
				}
			}
			v := volumeIO{Volume: name, ReadOps: d[0], WriteOps: d[1], ReadBytes: d[2], WriteBytes: d[3]}
			r.Volumes = append(r.Volumes, v)
			r.byName[name] = v
		}
	}
	sort.Slice(r.Volumes, func(i, j int) bool {
		a, b := r.Volumes[i], r.Volumes[j]
		if a.IOPS() != b.IOPS() {
			return a.IOPS() > b.IOPS()
		}
		return a.Volume < b.Volume
	})
	s.last, s.rates = cur, r
	return r
}

func (d *Dashboard) ioJSON(w http.ResponseWriter, r *http.Request) {
	rates := d.io.sample()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(struct {
		*ioRates
		Metrics bool `json:"metrics"`
	}{rates, d.io.gather != nil})
}
