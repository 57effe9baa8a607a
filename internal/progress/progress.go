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
// TTL/3 to renew it (after a write failed, counts and renewals wait
// TTL/3); it removes its entry when it ends. An entry past
// its expiry is a crashed operation's: readers ignore it, and the next
// write drops it. The object holds at most MaxRecords records (an
// operation beyond shows once one ends), so a reader reads one small
// object, whatever the store holds; gc keeps it (it deletes only names
// it knows). Progress is best effort: a slow or failing store holds up
// the operation at most Options.Wait at a change of phase (once, until
// a write ends) and Options.Timeout at End.
package progress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
	// Logf hears failed writes, the first of each run of them (progress
	// is best effort: the operation goes on).
	Logf func(format string, args ...any)
	// Wait bounds how long Start, Set and SetCurrent wait for a write
	// (default DefaultWait); Timeout bounds a write (default
	// DefaultTimeout).
	Wait, Timeout time.Duration
}

// DefaultWait and DefaultTimeout are the defaults of Options.Wait and
// Options.Timeout.
const (
	DefaultWait    = 2 * time.Second
	DefaultTimeout = 10 * time.Second
)

// errFull: the object holds MaxRecords records of operations running.
var errFull = fmt.Errorf("progress: %s holds the records of %d running operations: this one shows once one ends", Name, MaxRecords)

// Reporter keeps an operation's record. Its writes run in a goroutine
// of their own: a store that is slow or fails holds up none of its
// methods beyond Options.Wait (End: Options.Timeout).
type Reporter struct {
	s objstore.Store
	o Options

	mu      sync.Mutex // guards the fields below; never held across I/O
	rec     Record
	dirty   bool          // rec has changes not written
	changes uint64        // counts the changes of rec
	urgent  bool          // ... to be written at once
	gen     uint64        // counts the changes of rec asked to be written at once
	wrote   uint64        // the gen of the last write that ended
	ended   chan struct{} // closed and replaced when a write ends
	slow    bool          // a wait for a write timed out; no waits until one ends
	failing bool          // the last write failed (and was logged)
	retry   time.Time     // after a failed write: counts and renewals wait till then
	written time.Time     // of the last write that succeeded

	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	ctx    context.Context // the writes'; canceled by End
	cancel context.CancelFunc
	once   sync.Once
}

// Start writes the record of an operation of kind on target, and keeps
// it until End. ctx is not used past Start.
func Start(ctx context.Context, s objstore.Store, kind, target string, o Options) *Reporter {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Every <= 0 {
		o.Every = Every
	}
	if o.Wait <= 0 {
		o.Wait = DefaultWait
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
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
		ended: make(chan struct{}), kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.keep()
	r.mu.Lock()
	r.writeNow(ctx)
	r.mu.Unlock()
	return r
}

// running is the content of the object Name.
type running struct {
	Operations []Record `json:"operations"`
}

// update applies fn to the records in the store, by compare-and-swap,
// dropping those expired a TTL ago or more (crashed operations'; the
// margin covers clocks that differ) and all but the latest of an ID
// (garbage). An error of fn is returned, nothing written.
func update(ctx context.Context, s objstore.Store, now time.Time, fn func([]Record) ([]Record, error)) error {
	for range swapTries {
		b, v, err := s.Get(ctx, Name)
		if err != nil && !objstore.IsNotExist(err) {
			return err
		}
		var cur running
		if err == nil {
			json.Unmarshal(b, &cur) // garbage: start afresh
		}
		keep := latest(cur.Operations, now.Add(-TTL))
		recs, err := fn(keep)
		if err != nil {
			return err
		}
		nb, _ := json.Marshal(running{Operations: recs})
		if _, err = s.Swap(ctx, Name, nb, v); !errors.Is(err, objstore.ErrConflict) && !errors.Is(err, objstore.ErrExists) {
			return err
		}
	}
	return fmt.Errorf("progress: %s kept changing under %d writes", Name, swapTries)
}

// latest returns the records of recs live at now with an ID and a kind,
// the latest updated of each ID, in their order.
func latest(recs []Record, now time.Time) []Record {
	var out []Record
	at := map[string]int{}
	for _, rec := range recs {
		if !rec.Live(now) || rec.ID == "" || rec.Kind == "" {
			continue
		}
		if i, ok := at[rec.ID]; ok {
			if rec.Updated.After(out[i].Updated) {
				out[i] = rec
			}
			continue
		}
		at[rec.ID] = len(out)
		out = append(out, rec)
	}
	return out
}

// writeNow asks for the record to be written at once and waits for the
// write, at most Options.Wait, or until ctx is done. The caller holds
// r.mu.
func (r *Reporter) writeNow(ctx context.Context) {
	r.dirty, r.urgent = true, true
	r.gen++
	r.changes++
	gen := r.gen
	select {
	case r.kick <- struct{}{}:
	default:
	}
	select {
	case <-r.stop: // ended: nothing writes
		return
	default:
	}
	if r.slow {
		return
	}
	timer := time.NewTimer(r.o.Wait)
	defer timer.Stop()
	for r.wrote < gen {
		ended := r.ended
		r.mu.Unlock()
		select {
		case <-ended:
			r.mu.Lock()
		case <-timer.C:
			r.mu.Lock()
			r.slow = true
			return
		case <-ctx.Done():
			r.mu.Lock()
			return
		}
	}
}

// write writes the record if it is due: changed at once, counts every
// Options.Every, and renewed every TTL/3.
func (r *Reporter) write(tick bool) {
	r.mu.Lock()
	now := r.o.Now()
	due := r.urgent || (tick && (r.dirty || now.Sub(r.written) >= TTL/3) && !now.Before(r.retry))
	if !due {
		r.mu.Unlock()
		return
	}
	r.rec.Updated, r.rec.Expires = now, now.Add(TTL)
	rec, gen, changes := r.rec, r.gen, r.changes
	rec.Counts = maps.Clone(rec.Counts) // Set changes r.rec's meanwhile
	r.urgent = false
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.ctx, r.o.Timeout)
	err := update(ctx, r.s, now, func(recs []Record) ([]Record, error) {
		for i := range recs {
			if recs[i].ID == rec.ID {
				recs[i] = rec
				return recs, nil
			}
		}
		if len(recs) >= MaxRecords {
			return nil, errFull
		}
		return append(recs, rec), nil
	})
	cancel()

	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if !r.failing {
			r.o.Logf("progress: writing %s (logged once until a write succeeds): %v", Name, err)
		}
		r.failing, r.retry = true, now.Add(TTL/3)
	} else {
		r.written, r.failing = now, false
		if r.changes == changes {
			r.dirty = false
		}
	}
	r.wrote, r.slow = gen, false
	close(r.ended)
	r.ended = make(chan struct{})
}

func (r *Reporter) keep() {
	defer close(r.done)
	t := time.NewTicker(r.o.Every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-r.kick:
			r.write(false)
		case <-t.C:
			r.write(true)
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
			r.changes++
		}
	}
	if phase != r.rec.Phase {
		r.rec.Phase = phase
		r.writeNow(context.Background())
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
	r.writeNow(context.Background())
}

// End deletes the record: the operation is over. If a write of the
// record succeeded, it tries until Options.Timeout; it returns by then
// whatever the store does. It may be called more than
// once.
func (r *Reporter) End() {
	if r == nil {
		return
	}
	r.once.Do(func() {
		close(r.stop)
		r.cancel() // a write in flight
		<-r.done
		ctx, cancel := context.WithTimeout(context.Background(), r.o.Timeout)
		defer cancel()
		r.mu.Lock()
		id, wrote := r.rec.ID, !r.written.IsZero()
		r.mu.Unlock()
		var err error
		for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
			err = update(ctx, r.s, r.o.Now(), func(recs []Record) ([]Record, error) {
				return slices.DeleteFunc(recs, func(rec Record) bool { return rec.ID == id }), nil
			})
			if err == nil || !wrote || ctx.Err() != nil {
				break
			}
			select { // a failed write: again, until Timeout
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
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
	out := latest(cur.Operations, now)
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
