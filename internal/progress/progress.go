// Package progress makes the progress of the store's long operations
// that run as commands of their own ('archip gc', 'archip volume move',
// 'archip store migrate') visible to every daemon sharing the store,
// whose /metrics and dashboard show them (docs/metrics.md,
// "Operations").
//
// A running operation keeps a record, progress/<kind>-<random>, in the
// store: what it is, where it runs, its phase and counts, and an expiry.
// It writes the record when it starts, at each change of phase, and
// every Every (5 s) while its counts change, and at least every TTL/3
// to renew it; it deletes the record when it ends. A record whose
// expiry has passed is a crashed operation's: readers ignore it, and
// the next operation to start deletes it. Records are small and few
// (one per operation running), and never garbage to gc (it keeps names
// it does not know).
package progress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// Prefix is the name prefix of the records.
const Prefix = "progress/"

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
)

// Record is a running operation as its record says.
type Record struct {
	// ID tells records apart (from the record's name; not stored).
	ID   string `json:"-"`
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
	s    objstore.Store
	name string
	o    Options

	mu      sync.Mutex // guards rec and dirty, and orders writes
	rec     Record
	dirty   bool
	written time.Time

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Start writes the record of an operation of kind on target, deletes the
// records of operations that died, and keeps the record until End.
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
	now := o.Now()
	r := &Reporter{s: s, name: Prefix + kind + "-" + hex.EncodeToString(b[:]), o: o,
		rec:  Record{Kind: kind, Target: target, Host: host, PID: os.Getpid(), Phase: "start", Started: now},
		stop: make(chan struct{}), done: make(chan struct{})}
	r.mu.Lock()
	r.write(ctx)
	r.mu.Unlock()
	sweep(ctx, s, now)
	go r.keep()
	return r
}

// sweep deletes the records of operations that died.
func sweep(ctx context.Context, s objstore.Store, now time.Time) {
	var dead []string
	s.List(ctx, Prefix, func(in objstore.Info) error {
		if rec, err := read(ctx, s, in.Name); errors.Is(err, objstore.ErrCorrupt) || (err == nil && !rec.Live(now.Add(-TTL))) {
			dead = append(dead, in.Name)
		}
		return nil
	})
	for _, n := range dead {
		s.Delete(ctx, n)
	}
}

// write writes the record. The caller holds r.mu.
func (r *Reporter) write(ctx context.Context) {
	now := r.o.Now()
	r.rec.Updated, r.rec.Expires = now, now.Add(TTL)
	b, _ := json.Marshal(r.rec)
	if _, err := r.s.Put(ctx, r.name, b); err != nil {
		r.o.Logf("progress: writing %s: %v", r.name, err)
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
		if err := r.s.Delete(ctx, r.name); err != nil && !objstore.IsNotExist(err) {
			r.o.Logf("progress: deleting %s (it expires on its own): %v", r.name, err)
		}
	})
}

func read(ctx context.Context, s objstore.Store, name string) (Record, error) {
	b, _, err := s.Get(ctx, name)
	if err != nil {
		return Record{}, err
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil || rec.Kind == "" {
		return Record{}, fmt.Errorf("%w: %s is not a progress record", objstore.ErrCorrupt, name)
	}
	return rec, nil
}

// List returns the records of the operations running at now (by their
// expiry), at most MaxRecords, by kind, target and start.
func List(ctx context.Context, s objstore.Store, now time.Time) ([]Record, error) {
	var names []string
	err := s.List(ctx, Prefix, func(in objstore.Info) error {
		names = append(names, in.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("progress: listing %s: %w", Prefix, err)
	}
	sort.Strings(names)
	var out []Record
	for _, n := range names {
		if len(out) == MaxRecords {
			break
		}
		rec, err := read(ctx, s, n)
		switch {
		case objstore.IsNotExist(err), errors.Is(err, objstore.ErrCorrupt):
			continue
		case err != nil:
			return nil, fmt.Errorf("progress: %w", err)
		case rec.Live(now):
			rec.ID = strings.TrimPrefix(n, Prefix)
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Target != b.Target {
			return strings.Compare(a.Target, b.Target) < 0
		}
		return a.Started.Before(b.Started)
	})
	return out, nil
}
