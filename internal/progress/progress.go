// Package progress makes the progress of the store's long operations
// that run as commands of their own ('archip gc', 'archip volume move',
// 'archip store migrate') visible to every daemon sharing the store,
// whose /metrics and dashboard show them (docs/metrics.md,
// "Operations").
//
// The running operations share one object, progress/running: for each,
// what it is, where it runs, its phase and counts, and an expiry. An
// operation writes its entry (by compare-and-swap, so that operations
// running at once keep each other's) when it starts, at each change of
// phase, every Every (5 s) while its counts change, and at least every
// TTL/3 to renew it; it removes its entry when it ends. An entry past
// its expiry is a crashed operation's: readers ignore it, and the next
// write drops it. So a reader reads one small object, whatever the
// store holds; gc keeps it (it deletes only names it knows).
package progress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// Name is the object that holds the running operations' records.
const Name = "progress/running"

// Kinds of operations.
const (
	KindGC      = "gc"
	KindMove    = "move"
	KindMigrate = "migrate"
)

// Kinds lists the kinds of operations, as metrics show them.
var Kinds = []string{KindGC, KindMove, KindMigrate}

const (
	// TTL is how long a record lasts without renewal.
	TTL = 60 * time.Second
	// Every is how often a running operation writes its counts.
	Every = 5 * time.Second
	// MaxRecords bounds how many records List returns.
	MaxRecords = 100
	// swapTries bounds the compare-and-swap retries of a write.
	swapTries = 20
)

// Record is a running operation as its record says.
type Record struct {
	// ID tells records apart.
	ID   string `json:"id"`
	Kind string `json:"kind"`
	// Target: the volume or image moved (move), the pools emptied and
	// filled, "FROM to TO" (migrate); "" for gc.
	Target string `json:"target,omitempty"`
	// Current: what a migrate is moving now.
	Current string `json:"current,omitempty"`
	Host    string `json:"host"`
	PID     int    `json:"pid"`
	Phase   string `json:"phase"`
	// Counts are the operation's figures, by name (gc: heads marked,
	// objects examined; move: blocks walked, to walk, copied, bytes).
	Counts  map[string]int64 `json:"counts,omitempty"`
	Started time.Time        `json:"started"`
	Updated time.Time        `json:"updated"`
	Expires time.Time        `json:"expires"`
}

// Live reports whether r's operation may still run at now.
func (r *Record) Live(now time.Time) bool { return now.Before(r.Expires) }

// Options tune a Reporter.
type Options struct {
	Now   func() time.Time // default time.Now
	Every time.Duration    // default Every
	// Logf hears failed writes (progress is best effort: the operation
	// goes on).
	Logf func(format string, args ...any)
}

// Reporter keeps an operation's record.
type Reporter struct {
	s objstore.Store
	o Options

	mu      sync.Mutex // guards rec and dirty, and orders writes
	rec     Record
	dirty   bool
	written time.Time

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Start writes the record of an operation of kind on target, and keeps
// it until End.
func Start(ctx context.Context, s objstore.Store, kind, target string, o Options) *Reporter {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Every <= 0 {
		o.Every = Every
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	var b [6]byte
	rand.Read(b[:])
	host, _ := os.Hostname()
	r := &Reporter{s: s, o: o,
		rec: Record{ID: kind + "-" + hex.EncodeToString(b[:]), Kind: kind, Target: target, Host: host, PID: os.Getpid(),
			Phase: "start", Started: o.Now()},
		stop: make(chan struct{}), done: make(chan struct{})}
	r.mu.Lock()
	r.write(ctx)
	r.mu.Unlock()
	go r.keep()
	return r
}

// running is the content of the object Name.
type running struct {
	Operations []Record `json:"operations"`
}

// update applies fn to the records in the store, by compare-and-swap,
// dropping those expired a TTL ago or more (crashed operations'; the
// margin covers clocks that differ).
func update(ctx context.Context, s objstore.Store, now time.Time, fn func([]Record) []Record) error {
	for range swapTries {
		b, v, err := s.Get(ctx, Name)
		if err != nil && !objstore.IsNotExist(err) {
			return err
		}
		var cur running
		if err == nil {
			json.Unmarshal(b, &cur) // garbage: start afresh
		}
		var keep []Record
		for _, rec := range cur.Operations {
			if rec.Live(now.Add(-TTL)) {
				keep = append(keep, rec)
			}
		}
		nb, _ := json.Marshal(running{Operations: fn(keep)})
		if _, err = s.Swap(ctx, Name, nb, v); !errors.Is(err, objstore.ErrConflict) && !errors.Is(err, objstore.ErrExists) {
			return err
		}
	}
	return fmt.Errorf("progress: %s kept changing under %d writes", Name, swapTries)
}

// write writes the record. The caller holds r.mu.
func (r *Reporter) write(ctx context.Context) {
	now := r.o.Now()
	r.rec.Updated, r.rec.Expires = now, now.Add(TTL)
	rec := r.rec
	err := update(ctx, r.s, now, func(recs []Record) []Record {
		for i := range recs {
			if recs[i].ID == rec.ID {
				recs[i] = rec
				return recs
			}
		}
		return append(recs, rec)
	})
	if err != nil {
		r.o.Logf("progress: writing %s: %v", Name, err)
		return
	}
	r.dirty, r.written = false, now
}

func (r *Reporter) keep() {
	defer close(r.done)
	t := time.NewTicker(r.o.Every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.mu.Lock()
			if r.dirty || r.o.Now().Sub(r.written) >= TTL/3 {
				r.write(context.Background())
			}
			r.mu.Unlock()
		}
	}
}

// Set records the operation's phase and counts (merged into those set
// before). A new phase is written at once; counts within a phase are
// written every Options.Every.
func (r *Reporter) Set(phase string, counts map[string]int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(counts) > 0 && r.rec.Counts == nil {
		r.rec.Counts = map[string]int64{}
	}
	for k, v := range counts {
		if r.rec.Counts[k] != v {
			r.rec.Counts[k], r.dirty = v, true
		}
	}
	if phase != r.rec.Phase {
		r.rec.Phase = phase
		r.write(context.Background())
	}
}

// SetCurrent records what the operation works on now (a migrate's
// volume), written at once.
func (r *Reporter) SetCurrent(current string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rec.Current = current
	r.write(context.Background())
}

// End deletes the record: the operation is over. It may be called more
// than once.
func (r *Reporter) End() {
	if r == nil {
		return
	}
	r.once.Do(func() {
		close(r.stop)
		<-r.done
		r.mu.Lock()
		defer r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		id := r.rec.ID
		err := update(ctx, r.s, r.o.Now(), func(recs []Record) []Record {
			return slices.DeleteFunc(recs, func(rec Record) bool { return rec.ID == id })
		})
		if err != nil {
			r.o.Logf("progress: removing this operation from %s (it expires on its own): %v", Name, err)
		}
	})
}

// List returns the records of the operations running at now (by their
// expiry), at most MaxRecords, by kind, target and start: one read of
// the store.
func List(ctx context.Context, s objstore.Store, now time.Time) ([]Record, error) {
	b, _, err := s.Get(ctx, Name)
	if objstore.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("progress: reading %s: %w", Name, err)
	}
	var cur running
	if err := json.Unmarshal(b, &cur); err != nil {
		return nil, fmt.Errorf("progress: %w: %s: %v", objstore.ErrCorrupt, Name, err)
	}
	var out []Record
	for _, rec := range cur.Operations {
		if rec.Live(now) && rec.Kind != "" {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Target != b.Target {
			return a.Target < b.Target
		}
		return a.Started.Before(b.Started)
	})
	if len(out) > MaxRecords {
		out = out[:MaxRecords]
	}
	return out, nil
}
