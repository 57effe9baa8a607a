package objstore

import (
	"context"
	"strings"
	"sync"
	"time"
)

// Op names a Store operation, for fault rules.
type Op string

// The operations a Fault rule can match.
const (
	OpReadAt  Op = "readat"
	OpGet     Op = "get"
	OpPut     Op = "put"
	OpCreate  Op = "create"
	OpSwap    Op = "swap"
	OpDelete  Op = "delete"
	OpStat    Op = "stat"
	OpList    Op = "list"
	OpWriteAt Op = "writeat"
	OpSync    Op = "sync"
)

// Rule says which calls fail or slow down. The zero value of a field
// matches everything.
type Rule struct {
	Op     Op            // the operation; "" matches all
	Prefix string        // object names starting with this
	Skip   int           // let this many matching calls through first
	Count  int           // then fail this many (0: all that follow)
	Err    error         // the error to return (nil: only Delay)
	Delay  time.Duration // sleep before the call (or before failing)
}

// Faulty wraps a Store and injects errors and latency by rules, for
// tests: a full disk (ErrNoSpace on put), a lost object, a slow backend.
// The wrapped store must implement RangeWriter and Syncer for Faulty's
// WriteAt and Sync to work; otherwise they return ErrUnsupport.
type Faulty struct {
	Store

	mu    sync.Mutex // guards rules and seen
	rules []Rule
	seen  []int // matching calls per rule so far
}

// NewFaulty wraps s.
func NewFaulty(s Store) *Faulty { return &Faulty{Store: s} }

// Add installs a rule; rules are checked in the order added.
func (f *Faulty) Add(r Rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, r)
	f.seen = append(f.seen, 0)
}

// Reset removes every rule.
func (f *Faulty) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules, f.seen = nil, nil
}

func (f *Faulty) check(ctx context.Context, op Op, name string) error {
	f.mu.Lock()
	var delay time.Duration
	var err error
	for i, r := range f.rules {
		if (r.Op != "" && r.Op != op) || !strings.HasPrefix(name, r.Prefix) {
			continue
		}
		f.seen[i]++
		n := f.seen[i] - r.Skip
		if n <= 0 || (r.Count > 0 && n > r.Count) {
			continue
		}
		delay, err = r.Delay, r.Err
		break
	}
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (f *Faulty) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := f.check(ctx, OpReadAt, name); err != nil {
		return err
	}
	return f.Store.ReadAt(ctx, name, p, off)
}

func (f *Faulty) Get(ctx context.Context, name string) ([]byte, Version, error) {
	if err := f.check(ctx, OpGet, name); err != nil {
		return nil, 0, err
	}
	return f.Store.Get(ctx, name)
}

func (f *Faulty) Put(ctx context.Context, name string, data []byte) (Version, error) {
	if err := f.check(ctx, OpPut, name); err != nil {
		return 0, err
	}
	return f.Store.Put(ctx, name, data)
}

func (f *Faulty) Create(ctx context.Context, name string, data []byte) (Version, error) {
	if err := f.check(ctx, OpCreate, name); err != nil {
		return 0, err
	}
	return f.Store.Create(ctx, name, data)
}

func (f *Faulty) Swap(ctx context.Context, name string, data []byte, old Version) (Version, error) {
	if err := f.check(ctx, OpSwap, name); err != nil {
		return 0, err
	}
	return f.Store.Swap(ctx, name, data, old)
}

func (f *Faulty) Delete(ctx context.Context, name string) error {
	if err := f.check(ctx, OpDelete, name); err != nil {
		return err
	}
	return f.Store.Delete(ctx, name)
}

func (f *Faulty) Stat(ctx context.Context, name string) (Info, error) {
	if err := f.check(ctx, OpStat, name); err != nil {
		return Info{}, err
	}
	return f.Store.Stat(ctx, name)
}

func (f *Faulty) List(ctx context.Context, prefix string, fn func(Info) error) error {
	if err := f.check(ctx, OpList, prefix); err != nil {
		return err
	}
	return f.Store.List(ctx, prefix, fn)
}

func (f *Faulty) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := f.check(ctx, OpWriteAt, name); err != nil {
		return err
	}
	w, ok := f.Store.(RangeWriter)
	if !ok {
		return ErrUnsupport
	}
	return w.WriteAt(ctx, name, p, off)
}

func (f *Faulty) Sync(ctx context.Context, name string) error {
	if err := f.check(ctx, OpSync, name); err != nil {
		return err
	}
	s, ok := f.Store.(Syncer)
	if !ok {
		return ErrUnsupport
	}
	return s.Sync(ctx, name)
}
