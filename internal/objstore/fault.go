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
	// ErrAfter runs the call first and then returns Err: a write that
	// took effect though its caller hears that it failed (an operation
	// timeout that fired after the store had applied it).
	ErrAfter bool
	// Hook, if set, is called before each matching call, after Delay,
	// without Faulty's lock held; it may block (to hold a call in
	// flight) or act on the store meanwhile (to simulate a stall during
	// which others write).
	Hook func(ctx context.Context, op Op, name string)
}

// Faulty wraps a Store and injects errors and latency by rules, for
// tests: a full disk (ErrNoSpace on put), a lost object, a slow backend.
// It is a Wrapper offering the capabilities of the store it wraps except
// those that would take I/O past its rules (CapCopy, CapHandles,
// CapLend, CapLazyCreate): callers then fall back to the calls it checks.
type Faulty struct {
	Store

	mu    sync.Mutex // guards rules and seen
	rules []Rule
	seen  []int // matching calls per rule so far
}

var (
	_ Wrapper = (*Faulty)(nil)
	_ Fencer  = (*Faulty)(nil)
)

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

// check applies the first matching rule. It returns the error to give
// instead of running the call and, with ErrAfter, the error to give after
// running it.
func (f *Faulty) check(ctx context.Context, op Op, name string) (before, after error) {
	f.mu.Lock()
	var delay time.Duration
	var err error
	var errAfter bool
	var hook func(context.Context, Op, string)
	for i, r := range f.rules {
		if (r.Op != "" && r.Op != op) || !strings.HasPrefix(name, r.Prefix) {
			continue
		}
		f.seen[i]++
		n := f.seen[i] - r.Skip
		if n <= 0 || (r.Count > 0 && n > r.Count) {
			continue
		}
		delay, err, errAfter, hook = r.Delay, r.Err, r.ErrAfter, r.Hook
		break
	}
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err(), nil
		}
	}
	if hook != nil {
		hook(ctx, op, name)
	}
	if errAfter {
		return nil, err
	}
	return err, nil
}

func (f *Faulty) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	before, after := f.check(ctx, OpReadAt, name)
	if before != nil {
		return before
	}
	return orAfter(f.Store.ReadAt(ctx, name, p, off), after)
}

func (f *Faulty) Get(ctx context.Context, name string) ([]byte, Version, error) {
	before, after := f.check(ctx, OpGet, name)
	if before != nil {
		return nil, 0, before
	}
	b, v, err := f.Store.Get(ctx, name)
	if err = orAfter(err, after); err != nil {
		return nil, 0, err
	}
	return b, v, nil
}

func (f *Faulty) Put(ctx context.Context, name string, data []byte) (Version, error) {
	before, after := f.check(ctx, OpPut, name)
	if before != nil {
		return 0, before
	}
	v, err := f.Store.Put(ctx, name, data)
	return withVersion(v, err, after)
}

func (f *Faulty) Create(ctx context.Context, name string, data []byte) (Version, error) {
	before, after := f.check(ctx, OpCreate, name)
	if before != nil {
		return 0, before
	}
	v, err := f.Store.Create(ctx, name, data)
	return withVersion(v, err, after)
}

func (f *Faulty) Swap(ctx context.Context, name string, data []byte, old Version) (Version, error) {
	before, after := f.check(ctx, OpSwap, name)
	if before != nil {
		return 0, before
	}
	v, err := f.Store.Swap(ctx, name, data, old)
	return withVersion(v, err, after)
}

func (f *Faulty) Delete(ctx context.Context, name string) error {
	before, after := f.check(ctx, OpDelete, name)
	if before != nil {
		return before
	}
	return orAfter(f.Store.Delete(ctx, name), after)
}

func (f *Faulty) DeleteVersion(ctx context.Context, name string, old Version) error {
	before, after := f.check(ctx, OpDelete, name)
	if before != nil {
		return before
	}
	return orAfter(f.Store.DeleteVersion(ctx, name, old), after)
}

func (f *Faulty) Stat(ctx context.Context, name string) (Info, error) {
	before, after := f.check(ctx, OpStat, name)
	if before != nil {
		return Info{}, before
	}
	in, err := f.Store.Stat(ctx, name)
	if err = orAfter(err, after); err != nil {
		return Info{}, err
	}
	return in, nil
}

func (f *Faulty) List(ctx context.Context, prefix string, fn func(Info) error) error {
	before, after := f.check(ctx, OpList, prefix)
	if before != nil {
		return before
	}
	return orAfter(f.Store.List(ctx, prefix, fn), after)
}

// ListNamesAfter forwards to the wrapped store's ordered listing, with
// the rules of OpList.
func (f *Faulty) ListNamesAfter(ctx context.Context, prefix, after string, fn func(string) error) error {
	before, afterErr := f.check(ctx, OpList, prefix)
	if before != nil {
		return before
	}
	ol, ok := AsOrderedLister(f.Store)
	if !ok {
		return ErrUnsupport
	}
	return orAfter(ol.ListNamesAfter(ctx, prefix, after, fn), afterErr)
}

// ListNames forwards to the wrapped store's listing of names (or its
// List), with the rules of OpList.
func (f *Faulty) ListNames(ctx context.Context, prefix string, fn func(string) error) error {
	before, after := f.check(ctx, OpList, prefix)
	if before != nil {
		return before
	}
	return orAfter(ListNames(ctx, f.Store, prefix, fn), after)
}

func (f *Faulty) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	before, after := f.check(ctx, OpWriteAt, name)
	if before != nil {
		return before
	}
	w, ok := AsRangeWriter(f.Store)
	if !ok {
		return ErrUnsupport
	}
	return orAfter(w.WriteAt(ctx, name, p, off), after)
}

func (f *Faulty) Sync(ctx context.Context, name string) error {
	before, after := f.check(ctx, OpSync, name)
	if before != nil {
		return before
	}
	s, ok := AsSyncer(f.Store)
	if !ok {
		return ErrUnsupport
	}
	return orAfter(s.Sync(ctx, name), after)
}

// orAfter is the call's own error, or else the ErrAfter rule's.
func orAfter(err, after error) error {
	if err != nil {
		return err
	}
	return after
}

// withVersion is orAfter for calls that return a version, which a
// failure hides.
func withVersion(v Version, err, after error) (Version, error) {
	if err = orAfter(err, after); err != nil {
		return 0, err
	}
	return v, nil
}

// FreshStat is the wrapped store's.
func (f *Faulty) FreshStat() bool { return FreshStat(f.Store) }

// Unwrap returns the wrapped store.
func (f *Faulty) Unwrap() Store { return f.Store }

// Capabilities are the wrapped store's but for those that would bypass
// the rules.
func (f *Faulty) Capabilities() Caps {
	return CapabilitiesOf(f.Store) &^ (CapCopy | CapHandles | CapLend | CapLazyCreate)
}

// FenceID is the wrapped store's.
func (f *Faulty) FenceID(ctx context.Context) (string, error) {
	fc, ok := AsFencer(f.Store)
	if !ok {
		return "", ErrUnsupport
	}
	return fc.FenceID(ctx)
}

// Fence forwards to the wrapped store, with the rules of OpFence (whose
// name is the fenced id).
func (f *Faulty) Fence(ctx context.Context, id string) error {
	before, after := f.check(ctx, OpFence, id)
	if before != nil {
		return before
	}
	fc, ok := AsFencer(f.Store)
	if !ok {
		return ErrUnsupport
	}
	return orAfter(fc.Fence(ctx, id), after)
}
