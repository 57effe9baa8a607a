package volume

import (
	"container/list"
	"context"
	"sync"

	"github.com/archipelago-go/archip/internal/objstore"
)

// handleCache keeps up to max objects open, least recently used first out,
// for backends that implement objstore.HandleOpener. It is sound here
// because no object a volume reads or writes is replaced while in use:
// content blocks never change, and private blocks are written in place by
// their one owner; a deleted object is forgotten before it is deleted.
type handleCache struct {
	opener objstore.HandleOpener
	max    int

	mu   sync.Mutex // guards m and lru
	m    map[string]*cachedHandle
	lru  *list.List // of *cachedHandle, most recent at the front
	done bool
}

type cachedHandle struct {
	name     string
	h        objstore.Handle
	writable bool
	refs     int  // users now; closed when 0 and out of the cache
	gone     bool // out of the cache
	elem     *list.Element
}

func newHandleCache(o objstore.HandleOpener, max int) *handleCache {
	return &handleCache{opener: o, max: max, m: map[string]*cachedHandle{}, lru: list.New()}
}

// get returns an open handle for name; the caller must put it back.
func (c *handleCache) get(ctx context.Context, name string, writable bool) (*cachedHandle, error) {
	c.mu.Lock()
	if ch := c.m[name]; ch != nil && (ch.writable || !writable) {
		ch.refs++
		c.lru.MoveToFront(ch.elem)
		c.mu.Unlock()
		return ch, nil
	}
	c.mu.Unlock()
	h, err := c.opener.OpenHandle(ctx, name, writable, writable)
	if err != nil {
		return nil, err
	}
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
	for c.lru.Len() > c.max {
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
		ch.h.Close()
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
		ch.h.Close()
	}
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
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	for _, ch := range c.m {
		c.dropLocked(ch)
	}
}
