package volume

import (
	"container/list"
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"weak"

	"github.com/archipelago-go/archip/internal/objstore"
)

// handleCache keeps up to max objects open, least recently used first out,
// for backends that implement objstore.HandleOpener. Descriptors are a
// process's resource, not a volume's: a cache that opens one while the
// process's caches hold more than processHandles closes its own least
// recently used (down to minHandles); and an open that fails for want of
// a descriptor (EMFILE, ENFILE) closes the idle handles of every cache in
// the process and is tried again. So many open volumes (or a low
// RLIMIT_NOFILE) cost reopens, not I/O errors. It is sound here
// because no object a volume reads or writes is replaced while in use:
// content blocks never change, and private blocks are written in place by
// their one owner; a deleted object is forgotten before it is deleted.
type handleCache struct {
	opener objstore.HandleOpener
	lazy   objstore.LazyCreator // nil: getLazy creates as get does
	max    int

	mu    sync.Mutex // guards m and lru
	m     map[string]*cachedHandle
	lru   *list.List // of *cachedHandle, most recent at the front
	done  bool
	self  weak.Pointer[handleCache] // its key in caches
	nopen *atomic.Int64             // its handles not closed, in cachedHandles
}

type cachedHandle struct {
	name     string
	h        objstore.Handle
	writable bool
	refs     int  // users now; closed when 0 and out of the cache
	gone     bool // out of the cache
	elem     *list.Element
}

// caches is every handleCache not yet closed, for shedIdle; weakly, so
// that a volume dropped without Close is still collected.
var caches struct {
	sync.Mutex
	m map[weak.Pointer[handleCache]]bool
}

func newHandleCache(o objstore.HandleOpener, max int) *handleCache {
	c := &handleCache{opener: o, max: handleBudget(max, fdLimit()), m: map[string]*cachedHandle{}, lru: list.New(), nopen: new(atomic.Int64)}
	w := weak.Make(c)
	c.self = w
	caches.Lock()
	defer caches.Unlock()
	if caches.m == nil {
		caches.m = map[weak.Pointer[handleCache]]bool{}
	}
	caches.m[w] = true
	runtime.AddCleanup(c, collected, cacheKey{w, c.nopen})
	return c
}

type cacheKey struct {
	w    weak.Pointer[handleCache]
	open *atomic.Int64
}

// collected forgets a cache dropped without close (its handles are
// closed by their finalizers, if they have any).
func collected(k cacheKey) {
	unregister(k.w)
	cachedHandles.Add(-k.open.Swap(0))
}

func unregister(w weak.Pointer[handleCache]) {
	caches.Lock()
	defer caches.Unlock()
	delete(caches.m, w)
}

// handleBudget is how many handles one cache keeps: most, or a quarter of
// the process's descriptor limit (0: unknown) if that is fewer (but at
// least 16), so that a few volumes fit before any has to shed.
func handleBudget(most int, limit uint64) int {
	if limit > 0 && uint64(most) > limit/4 {
		return int(max(limit/4, 16))
	}
	return most
}

// processHandles is how many handles the caches of a process keep open
// between them (0: no bound): half its descriptors, the other half left
// to what opens files outside them.
var processHandles atomic.Int64

// cachedHandles is how many handles the caches now have open.
var cachedHandles atomic.Int64

func init() { processHandles.Store(int64(fdLimit() / 2)) }

// shedIdle closes the handles no one is using in every cache of the
// process, and says how many it closed.
func shedIdle() int {
	caches.Lock()
	defer caches.Unlock()
	n := 0
	for w := range caches.m {
		c := w.Value()
		if c == nil {
			continue
		}
		c.mu.Lock()
		for e := c.lru.Back(); e != nil; {
			ch, prev := e.Value.(*cachedHandle), e.Prev()
			if ch.refs == 0 {
				c.dropLocked(ch)
				n++
			}
			e = prev
		}
		c.mu.Unlock()
	}
	return n
}

func outOfFDs(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// open opens name, shedding idle handles while descriptors run out.
func (c *handleCache) open(ctx context.Context, name string, writable, lazy bool) (objstore.Handle, error) {
	for try := 0; ; try++ {
		var h objstore.Handle
		var err error
		if lazy && c.lazy != nil {
			h, err = c.lazy.OpenHandleLazy(ctx, name)
		} else {
			h, err = c.opener.OpenHandle(ctx, name, writable, writable)
		}
		// Other opens may take the descriptors shed: a few tries.
		if err == nil || !outOfFDs(err) || try == 3 || shedIdle() == 0 && try > 0 {
			return h, err
		}
	}
}

// get returns an open handle for name; the caller must put it back.
func (c *handleCache) get(ctx context.Context, name string, writable bool) (*cachedHandle, error) {
	return c.getAs(ctx, name, writable, false)
}

// getLazy is get of a writable handle whose object, if it creates it, is
// durable only once synced (objstore.LazyCreator): for private blocks,
// which no stored map names before the flush that syncs them.
func (c *handleCache) getLazy(ctx context.Context, name string) (*cachedHandle, error) {
	return c.getAs(ctx, name, true, true)
}

func (c *handleCache) getAs(ctx context.Context, name string, writable, lazy bool) (*cachedHandle, error) {
	c.mu.Lock()
	if ch := c.m[name]; ch != nil && (ch.writable || !writable) {
		ch.refs++
		c.lru.MoveToFront(ch.elem)
		c.mu.Unlock()
		return ch, nil
	}
	c.mu.Unlock()
	h, err := c.open(ctx, name, writable, lazy)
	if err != nil {
		return nil, err
	}
	c.nopen.Add(1)
	cachedHandles.Add(1)
	ch := &cachedHandle{name: name, h: h, writable: writable, refs: 1}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		ch.gone = true // not cached: closed on put
		return ch, nil
	}
	if old := c.m[name]; old != nil {
		c.dropLocked(old)
	}
	c.m[name] = ch
	ch.elem = c.lru.PushFront(ch)
	for c.lru.Len() > c.max || c.lru.Len() > minHandles && overBudget() {
		c.dropLocked(c.lru.Back().Value.(*cachedHandle))
	}
	return ch, nil
}

func (c *handleCache) put(ch *cachedHandle) {
	c.mu.Lock()
	ch.refs--
	closeIt := ch.refs == 0 && ch.gone
	c.mu.Unlock()
	if closeIt {
		c.closeHandle(ch)
	}
}

// dropLocked takes ch out of the cache; it is closed once unused.
func (c *handleCache) dropLocked(ch *cachedHandle) {
	if ch.gone {
		return
	}
	ch.gone = true
	delete(c.m, ch.name)
	c.lru.Remove(ch.elem)
	if ch.refs == 0 {
		c.closeHandle(ch)
	}
}

func (c *handleCache) closeHandle(ch *cachedHandle) {
	ch.h.Close()
	c.nopen.Add(-1)
	cachedHandles.Add(-1)
}

// minHandles is how many handles a cache keeps however many the process
// has open.
const minHandles = 16

// overBudget says whether the process's caches hold more handles than
// processHandles.
func overBudget() bool {
	b := processHandles.Load()
	return b > 0 && cachedHandles.Load() > b
}

// forget drops name, before the object is deleted.
func (c *handleCache) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch := c.m[name]; ch != nil {
		c.dropLocked(ch)
	}
}

// close drops everything.
func (c *handleCache) close() {
	unregister(c.self)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	for _, ch := range c.m {
		c.dropLocked(ch)
	}
}
