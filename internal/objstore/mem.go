package objstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"
)

// Mem is an in-memory Store for tests and for mem:// URLs. It implements
// every capability. A Mem made by NewCrashable also remembers what was
// made durable, so that Crash can return the store a restart would find.
type Mem struct {
	crashable bool
	// Now gives objects their modification times (default time.Now);
	// tests that age objects set it before use.
	Now func() time.Time

	// mu guards every field below.
	mu     sync.Mutex
	objs   map[string]*memObj
	vers   map[string]Version // last version ever given to a name; survives Delete
	closed bool
}

type memObj struct {
	data    []byte
	ver     Version
	modTime time.Time

	// Crashable stores only: the content a crash would leave, and the
	// WriteAts since the last Sync, in order.
	durable []byte
	pending []memWrite
	shared  bool // durable and data share one array: copy data before a write
}

type memWrite struct {
	off  int64
	data []byte
}

var (
	_ Store        = (*Mem)(nil)
	_ RangeWriter  = (*Mem)(nil)
	_ Syncer       = (*Mem)(nil)
	_ HandleOpener = (*Mem)(nil)
	_ Copier       = (*Mem)(nil)
	_ FreshStater  = (*Mem)(nil)
)

// NewMem returns an empty in-memory store.
func NewMem() *Mem {
	return &Mem{objs: map[string]*memObj{}, vers: map[string]Version{}, Now: time.Now}
}

// NewCrashable returns an empty in-memory store whose Crash method
// simulates a machine crash.
func NewCrashable() *Mem {
	m := NewMem()
	m.crashable = true
	return m
}

func (m *Mem) lock(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	return nil
}

func (m *Mem) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := checkRange(p, off); err != nil {
		return err
	}
	if err := m.lock(name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	o := m.objs[name]
	if o == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	readPadded(o.data, p, off)
	return nil
}

func (m *Mem) Get(ctx context.Context, name string) ([]byte, Version, error) {
	if err := m.lock(name); err != nil {
		return nil, 0, err
	}
	defer m.mu.Unlock()
	o := m.objs[name]
	if o == nil {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return append([]byte(nil), o.data...), o.ver, nil
}

// putLocked stores data as the new content of name.
func (m *Mem) putLocked(name string, data []byte) Version {
	v := m.vers[name] + 1
	m.vers[name] = v
	o := &memObj{data: append([]byte(nil), data...), ver: v, modTime: m.Now()}
	if m.crashable {
		o.durable, o.shared = o.data, true
	}
	m.objs[name] = o
	return v
}

func (m *Mem) Put(ctx context.Context, name string, data []byte) (Version, error) {
	if err := m.lock(name); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	return m.putLocked(name, data), nil
}

func (m *Mem) Create(ctx context.Context, name string, data []byte) (Version, error) {
	if err := m.lock(name); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	if m.objs[name] != nil {
		return 0, fmt.Errorf("%w: %s", ErrExists, name)
	}
	return m.putLocked(name, data), nil
}

func (m *Mem) Swap(ctx context.Context, name string, data []byte, old Version) (Version, error) {
	if err := m.lock(name); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	var cur Version
	if o := m.objs[name]; o != nil {
		cur = o.ver
	}
	if cur != old {
		return 0, fmt.Errorf("%w: %s is at version %d, not %d", ErrConflict, name, cur, old)
	}
	return m.putLocked(name, data), nil
}

func (m *Mem) Delete(ctx context.Context, name string) error {
	if err := m.lock(name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if m.objs[name] == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	delete(m.objs, name)
	return nil
}

func (m *Mem) DeleteVersion(ctx context.Context, name string, old Version) error {
	if err := m.lock(name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	o := m.objs[name]
	if o == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if o.ver != old {
		return fmt.Errorf("%w: %s is at version %d, not %d", ErrConflict, name, o.ver, old)
	}
	delete(m.objs, name)
	return nil
}

func (m *Mem) Stat(ctx context.Context, name string) (Info, error) {
	if err := m.lock(name); err != nil {
		return Info{}, err
	}
	defer m.mu.Unlock()
	o := m.objs[name]
	if o == nil {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return Info{Name: name, Size: int64(len(o.data)), Version: o.ver, ModTime: o.modTime}, nil
}

func (m *Mem) List(ctx context.Context, prefix string, fn func(Info) error) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	var infos []Info
	for name, o := range m.objs {
		if strings.HasPrefix(name, prefix) {
			infos = append(infos, Info{Name: name, Size: int64(len(o.data)), Version: o.ver, ModTime: o.modTime})
		}
	}
	m.mu.Unlock()
	for _, in := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(in); err != nil {
			return err
		}
	}
	return nil
}

// ListNamesAfter lists in order (OrderedLister).
func (m *Mem) ListNamesAfter(ctx context.Context, prefix, after string, fn func(string) error) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	var names []string
	for name := range m.objs {
		if strings.HasPrefix(name, prefix) && name > after {
			names = append(names, name)
		}
	}
	m.mu.Unlock()
	sort.Strings(names)
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(n); err != nil {
			return err
		}
	}
	return nil
}

func (m *Mem) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := checkRange(p, off); err != nil {
		return err
	}
	if err := m.lock(name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	m.writeLocked(m.objectLocked(name), p, off)
	return nil
}

// Copy creates dst with src's content; like WriteAt, durable after Sync.
func (m *Mem) Copy(ctx context.Context, src, dst string) error {
	if err := ValidName(dst); err != nil {
		return err
	}
	if err := m.lock(src); err != nil {
		return err
	}
	defer m.mu.Unlock()
	o := m.objs[src]
	if o == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, src)
	}
	if m.objs[dst] != nil {
		return fmt.Errorf("%w: %s", ErrExists, dst)
	}
	m.writeLocked(m.objectLocked(dst), o.data, 0)
	return nil
}

// objectLocked returns name's object, creating it empty if absent.
func (m *Mem) objectLocked(name string) *memObj {
	o := m.objs[name]
	if o == nil {
		v := m.vers[name] + 1
		m.vers[name] = v
		o = &memObj{ver: v, modTime: m.Now()}
		m.objs[name] = o
	}
	return o
}

func (m *Mem) writeLocked(o *memObj, p []byte, off int64) {
	end := off + int64(len(p))
	if end > int64(len(o.data)) {
		grown := make([]byte, end)
		copy(grown, o.data)
		o.data, o.shared = grown, false
	} else if o.shared {
		o.data, o.shared = append([]byte(nil), o.data...), false
	}
	copy(o.data[off:], p)
	o.modTime = m.Now()
	if m.crashable {
		o.pending = append(o.pending, memWrite{off: off, data: append([]byte(nil), p...)})
	}
}

func (m *Mem) syncLocked(o *memObj) {
	if m.crashable {
		o.durable, o.pending, o.shared = o.data, nil, true
	}
}

// OpenHandle returns a handle on name's current object.
func (m *Mem) OpenHandle(ctx context.Context, name string, create, writable bool) (Handle, error) {
	if err := m.lock(name); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	o := m.objs[name]
	if o == nil && !create {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if o == nil {
		o = m.objectLocked(name)
	}
	return &memHandle{m: m, o: o, writable: writable}, nil
}

type memHandle struct {
	m        *Mem
	o        *memObj
	writable bool
}

func (h *memHandle) ReadAt(p []byte, off int64) error {
	if err := checkRange(p, off); err != nil {
		return err
	}
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	readPadded(h.o.data, p, off)
	return nil
}

func (h *memHandle) WriteAt(p []byte, off int64) error {
	if err := checkRange(p, off); err != nil {
		return err
	}
	if !h.writable {
		return fmt.Errorf("%w: handle opened read-only", ErrReadOnly)
	}
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	h.m.writeLocked(h.o, p, off)
	return nil
}

func (h *memHandle) Sync() error {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	h.m.syncLocked(h.o)
	return nil
}

func (h *memHandle) Close() error { return nil }

func (m *Mem) Sync(ctx context.Context, name string) error {
	if err := m.lock(name); err != nil {
		return err
	}
	defer m.mu.Unlock()
	o := m.objs[name]
	if o == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	m.syncLocked(o)
	return nil
}

func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// Crash returns the store that a restart after a crash at this moment
// would find: every Put, Create, Swap and Delete that returned, every
// synced WriteAt, and a random subset (drawn from rng) of the WriteAts
// that were not synced yet, as a disk may have written some of them. An
// object that only ever had unsynced WriteAts may vanish. The receiver
// stays usable and unchanged. It panics on a store not made by
// NewCrashable, which is a bug in the test.
func (m *Mem) Crash(rng *rand.Rand) *Mem {
	if !m.crashable {
		panic("objstore: Crash on a store not made by NewCrashable")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := NewCrashable()
	n.Now = m.Now
	for name, v := range m.vers {
		n.vers[name] = v
	}
	for name, o := range m.objs {
		data := o.durable
		if data == nil && len(o.pending) > 0 && rng.IntN(2) == 0 {
			continue // created by WriteAt and never synced: lost
		}
		data = append([]byte(nil), data...)
		for _, w := range o.pending {
			if rng.IntN(2) == 0 {
				continue
			}
			if end := w.off + int64(len(w.data)); end > int64(len(data)) {
				data = append(data, make([]byte, end-int64(len(data)))...)
			}
			copy(data[w.off:], w.data)
		}
		n.objs[name] = &memObj{data: data, durable: data, ver: o.ver, modTime: o.modTime}
	}
	return n
}

// FreshStat: one process's memory has no stale view.
func (m *Mem) FreshStat() bool { return true }
