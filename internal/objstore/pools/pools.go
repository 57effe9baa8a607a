// Package pools is a store made of several backends (docs/pools.md): one
// metadata backend, which must do compare-and-swap, holds the catalog,
// volume heads and map segments, write logs, leases and gc records; named
// data pools hold the blocks (content blocks and private blocks). It is
// also the split configuration of an S3 server without conditional
// writes: metadata on file:// or rados://, blocks on s3://.
//
// A store is named by pools:///PATH/TO/STORE.toml, a small file (see
// Config). Names are routed by blockmap.ParseName, the owner of block
// names: content and private blocks are data, everything else metadata.
// A volume may be placed in a pool (Router.Place: a record place/<id> in
// the metadata backend): its private blocks go there. Data names are
// looked up in their first pool (where the block was last found if
// outside its first pool, else the volume's for a private block, else
// the default pool), then in the others in the order of the file; a new block goes to its first pool. A
// view (Router.View) makes another pool the default, for an import. With
// one pool none of that costs a request. A move (package move) changes a
// placement with compare-and-swap (Router.SwapRecord) and copies blocks
// between pools (Router.CopyTo); a process reads a placement again for a
// volume's new epoch.
//
// Capabilities are those every part that a name of the capability may
// reach has (Open): RangeWriter only if every part writes in place (the
// volume engine writes private blocks, data, and write logs, metadata),
// Syncer with it if any part needs a sync, Copier if every pool copies,
// Lender if every pool lends, FreshStat if every part's Stat is fresh.
// The router is no Fencer and no HandleOpener. It lists in order
// (OrderedLister) with any parts: the catalog from the metadata backend's
// ordered listing where it has one, other names by sorting.
package pools

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"os"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// Router is the store of a configuration: Open returns it wrapped in a
// type that has exactly its capabilities (objstore.Store is what it
// returns, as the capabilities depend on the backends). Of finds it.
type Router struct {
	meta  objstore.Store
	pools []objstore.Store // lookup order: the default pool first
	names []string         // the pools' names, in lookup order
	// noCAS[i]: pool i cannot create-if-absent (objstore.CASChecker):
	// createIn emulates it.
	noCAS  []bool
	tags   []objstore.Version // tags[i]: pool i's versions are xored with it (poolTag)
	orders [][]int            // orders[i]: the lookup order that starts at pool i
	isData func(name string) bool
	// mayHoldData reports whether a name under a prefix can be a block.
	mayHoldData func(prefix string) bool
	st          *state // shared with views
	view        bool   // a view (View): Close closes nothing
	// logsInMeta: writers keep their logged writes in the metadata
	// backend (Config.Logs; KeepsLogIndex).
	logsInMeta bool
}

// isData reports whether name is a block, by its owner's parser.
func isData(name string) bool {
	switch blockmap.ParseName(name).Kind {
	case blockmap.ContentObject, blockmap.PrivateObject:
		return true
	}
	return false
}

// Opener opens a backend from its URL (objstore.Registry.Open).
type Opener func(ctx context.Context, raw string, opts objstore.OpenOptions) (objstore.Store, error)

// OpenURL opens the store a pools:// URL names: the configuration file at
// its path, whose backends open opens.
func OpenURL(ctx context.Context, u *url.URL, open Opener, opts objstore.OpenOptions) (objstore.Store, error) {
	p, err := objstore.FilePath(u)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("%w: pools: reading the configuration %s: %v", objstore.ErrBadURL, p, err)
	}
	c, err := ParseConfig(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, p)
	}
	return Open(ctx, c, open, opts)
}

// Open opens every backend of c. It refuses a metadata backend that
// cannot compare-and-swap (objstore.CASChecker), such as an S3 server
// without conditional writes, which is fine as a data pool.
func Open(ctx context.Context, c Config, open Opener, opts objstore.OpenOptions) (s objstore.Store, err error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: pools: bad configuration: %w", objstore.ErrBadURL, err)
	}
	var opened []objstore.Store
	defer func() {
		if err != nil {
			for _, s := range opened {
				s.Close()
			}
		}
	}()
	meta, err := open(ctx, c.Metadata, opts)
	if err != nil {
		return nil, fmt.Errorf("pools: opening the metadata store: %w", err)
	}
	opened = append(opened, meta)
	if err := objstore.CheckCAS(meta); err != nil {
		return nil, fmt.Errorf("pools: the metadata store %s cannot hold the catalog, maps and leases (they need compare-and-swap); name a file:// or rados:// store as metadata and this one as a data pool: %w", c.Metadata, err)
	}
	def := c.DefaultPool()
	order := []Pool{}
	for _, p := range c.Pools {
		if p.Name == def {
			order = append([]Pool{p}, order...)
		} else {
			order = append(order, p)
		}
	}
	var named []Named
	for _, p := range order {
		ps, err := open(ctx, p.URL, opts)
		if err != nil {
			return nil, fmt.Errorf("pools: opening pool %s: %w", p.Name, err)
		}
		opened = append(opened, ps)
		named = append(named, Named{p.Name, ps})
	}
	s, err = New(meta, named)
	if err != nil {
		return nil, err
	}
	r, _ := Of(s)
	r.logsInMeta = c.Logs == LogsMetadata
	return s, nil
}

// Named is an open data pool.
type Named struct {
	Name  string
	Store objstore.Store
}

// New builds the store of a metadata backend and data pools, the default
// pool first (Open with stores already open). It owns them: its Close
// closes them.
func New(meta objstore.Store, pools []Named) (objstore.Store, error) {
	if len(pools) == 0 {
		return nil, fmt.Errorf("%w: pools: no data pool", objstore.ErrBadURL)
	}
	if err := objstore.CheckCAS(meta); err != nil {
		return nil, fmt.Errorf("pools: the metadata store cannot hold the catalog, maps and leases (they need compare-and-swap); name a file:// or rados:// store as metadata and this one as a data pool: %w", err)
	}
	r := &Router{meta: meta, isData: isData, mayHoldData: blockmap.MayHoldBlocks, st: newState(pools[0].Name)}
	for _, p := range pools {
		if err := validPoolName(p.Name); err != nil {
			return nil, fmt.Errorf("%w: pools: %v", objstore.ErrBadURL, err)
		}
		if _, dup := r.index(p.Name); dup {
			return nil, fmt.Errorf("%w: pools: pool %q given twice", objstore.ErrBadURL, p.Name)
		}
		r.pools, r.names = append(r.pools, p.Store), append(r.names, p.Name)
	}
	r.noCAS = make([]bool, len(r.pools))
	for i, p := range r.pools {
		r.noCAS[i] = objstore.CheckCAS(p) != nil
		r.tags = append(r.tags, poolTag(r.names[i]))
	}
	r.orders = orders(len(r.pools))
	return r.wrap(), nil
}

// Of returns the Router of a store Open returned.
func Of(s objstore.Store) (*Router, bool) {
	for {
		if r, ok := s.(interface{ router() *Router }); ok {
			return r.router(), true
		}
		w, ok := s.(objstore.Wrapper)
		if !ok {
			return nil, false
		}
		s = w.Unwrap()
	}
}

func (r *Router) router() *Router { return r }

// KeepsLogIndex reports whether writers keep their logged writes in the
// metadata backend, in their write log's segments and index, rather than
// write them into blocks of the volume's pool at each checkpoint
// (objstore.LogIndexKeeper; Config.Logs).
func (r *Router) KeepsLogIndex() bool { return r.logsInMeta }

// PoolNames returns the pools' names in lookup order: the default first.
func (r *Router) PoolNames() []string { return append([]string(nil), r.names...) }

// Parts returns the metadata backend and each pool, each listing only
// the names routed to it (objstore.Parter).
func (r *Router) Parts() []objstore.Store {
	ps := []objstore.Store{part{r.meta, r, false}}
	for _, p := range r.pools {
		ps = append(ps, part{p, r, true})
	}
	return ps
}

var _ objstore.Parter = (*Router)(nil)

// part is one backend of a router, listing only its own names. Closing
// it does nothing: the router owns it.
type part struct {
	objstore.Store
	r    *Router
	data bool
}

func (p part) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	return p.Store.List(ctx, prefix, func(in objstore.Info) error {
		if p.r.isData(in.Name) != p.data {
			return nil
		}
		return fn(in)
	})
}

func (p part) ListNames(ctx context.Context, prefix string, fn func(string) error) error {
	return objstore.ListNames(ctx, p.Store, prefix, func(n string) error {
		if p.r.isData(n) != p.data {
			return nil
		}
		return fn(n)
	})
}

func (p part) Close() error { return nil }

// RepairIndex repairs the catalog's index of the metadata backend where it
// keeps one (objstore.RepairIndexes, gc and the catalog's upgrade reach
// it through Parts): the catalog lives there only, so a pool's part
// repairs nothing.
func (p part) RepairIndex(ctx context.Context) error {
	return p.repairIndex(ctx)
}

// ForwardsIndex says that RepairIndex repairs the metadata backend's
// (objstore.IndexForwarder).
func (part) ForwardsIndex() {}

func (p part) repairIndex(ctx context.Context) error {
	if p.data {
		return nil
	}
	return objstore.RepairIndexes(ctx, p.Store)
}

// order returns the pools' indexes in the lookup order of name (a
// block): the pool it was last found in first for a block found outside
// its first pool, else its owner's pool first for a private block of a
// placed volume, else the default pool first. The slice is shared: do not
// change it.
func (r *Router) order(ctx context.Context, name string) ([]int, error) {
	return r.orderOf(ctx, name, true)
}

// newOrder is name's order without where it was last found: its first
// pool is where a new object of that name goes (a copy remembered in a
// pool that gc has emptied since says nothing of where new blocks go).
func (r *Router) newOrder(ctx context.Context, name string) ([]int, error) {
	return r.orderOf(ctx, name, false)
}

func (r *Router) orderOf(ctx context.Context, name string, remembered bool) ([]int, error) {
	if len(r.pools) == 1 {
		return r.orders[0], nil
	}
	if i, ok := r.st.found(name); ok && remembered {
		if j, ok := r.index(i); ok {
			return r.orders[j], nil
		}
	}
	n := blockmap.ParseName(name)
	if n.Kind == blockmap.PrivateObject {
		pool, err := r.placement(ctx, n.Volume, n.Entry.Epoch())
		if err != nil {
			return nil, err
		}
		if i, ok := r.index(pool); ok {
			return r.orders[i], nil
		}
	}
	return r.orders[0], nil
}

// index returns the index of the named pool in r's order.
func (r *Router) index(pool string) (int, bool) {
	for i, n := range r.names {
		if n == pool {
			return i, true
		}
	}
	return 0, false
}

// find calls fn on each pool in name's lookup order until fn returns
// other than ErrNotFound, and returns that, or the last ErrNotFound.
func (r *Router) find(ctx context.Context, name string, fn func(s objstore.Store) error) error {
	return r.findIndex(ctx, name, func(i int) error { return fn(r.pools[i]) })
}

// findIndex is find with the pools' indexes.
func (r *Router) findIndex(ctx context.Context, name string, fn func(i int) error) error {
	order, err := r.order(ctx, name)
	if err != nil {
		return err
	}
	for k, i := range order {
		if err = fn(i); !objstore.IsNotExist(err) {
			if k > 0 && err == nil {
				r.st.remember(name, r.names[i])
			}
			return err
		}
		if k == 0 && len(order) > 1 {
			r.st.forget(name)
		}
	}
	return err
}

// locateIndex returns the index of the first pool in name's lookup
// order that holds it, or of the first pool of that order if none does
// (the place of a new object).
func (r *Router) locateIndex(ctx context.Context, name string) (int, error) {
	if len(r.pools) == 1 {
		return 0, nil
	}
	if p, ok := r.st.found(name); ok {
		// NB: trusted without a Stat, so that each in-place write to a
		// block does not cost one: only a writer's own epoch's blocks
		// are written in place, and they stay in its pool (a move
		// reopens the writer in a new epoch before it copies, and gc
		// keeps every copy in a volume's pool, docs/pools.md).
		if i, ok := r.index(p); ok {
			return i, nil
		}
	}
	order, err := r.newOrder(ctx, name)
	if err != nil {
		return 0, err
	}
	at := order[0]
	for _, i := range order {
		_, err := r.pools[i].Stat(ctx, name)
		if err == nil {
			at = i
			break
		}
		if !objstore.IsNotExist(err) {
			return 0, err
		}
	}
	r.st.remember(name, r.names[at])
	return at, nil
}

// at returns pool i, or the metadata backend for -1.
func (r *Router) at(i int) objstore.Store {
	if i < 0 {
		return r.meta
	}
	return r.pools[i]
}

// target returns the store a write of name goes to.
func (r *Router) target(ctx context.Context, name string) (objstore.Store, error) {
	if !r.isData(name) {
		return r.meta, nil
	}
	i, err := r.locateIndex(ctx, name)
	if err != nil {
		return nil, err
	}
	return r.pools[i], nil
}

// newIndex returns the index of the pool a new block name goes to, or
// an error wrapping exists if another pool holds it.
func (r *Router) newIndex(ctx context.Context, name string, exists error) (int, error) {
	order, err := r.newOrder(ctx, name)
	if err != nil {
		return 0, err
	}
	for _, i := range order[1:] {
		_, err := r.pools[i].Stat(ctx, name)
		if err == nil {
			return 0, fmt.Errorf("%w: pools: %s (in pool %s)", exists, name, r.names[i])
		}
		if !objstore.IsNotExist(err) {
			return 0, err
		}
	}
	return order[0], nil
}

func (r *Router) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if !r.isData(name) {
		return r.meta.ReadAt(ctx, name, p, off)
	}
	return r.find(ctx, name, func(s objstore.Store) error { return s.ReadAt(ctx, name, p, off) })
}

// poolTag returns what the versions of pool name's blocks are xored
// with (tag): each backend numbers the writes of a name on its own (the
// first write of a name is version 1 in a file store and in another), so
// a version read from a copy in one pool must not match a write in
// another, or a DeleteVersion or Swap from the version of a deleted copy
// would change the block created again elsewhere. The tag depends only
// on the pool's name, so every process and view agrees on it; its top bit
// keeps a tagged version of a counter from being 0 (absent).
func poolTag(name string) objstore.Version {
	h := fnv.New64a()
	h.Write([]byte(name))
	return objstore.Version(h.Sum64() | 1<<63)
}

// tag converts between the versions of pool i and the router's (xor:
// its own inverse). 0, absent, stays 0.
func (r *Router) tag(i int, v objstore.Version) objstore.Version {
	if v == 0 {
		return 0
	}
	return v ^ r.tags[i]
}

func (r *Router) Get(ctx context.Context, name string) (b []byte, v objstore.Version, err error) {
	if !r.isData(name) {
		return r.meta.Get(ctx, name)
	}
	err = r.findIndex(ctx, name, func(i int) error {
		b, v, err = r.pools[i].Get(ctx, name)
		v = r.tag(i, v)
		return err
	})
	return b, v, err
}

func (r *Router) Stat(ctx context.Context, name string) (in objstore.Info, err error) {
	if !r.isData(name) {
		return r.meta.Stat(ctx, name)
	}
	err = r.findIndex(ctx, name, func(i int) error {
		in, err = r.pools[i].Stat(ctx, name)
		in.Version = r.tag(i, in.Version)
		return err
	})
	return in, err
}

func (r *Router) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if !r.isData(name) {
		return r.meta.Put(ctx, name, data)
	}
	i, err := r.locateIndex(ctx, name)
	if err != nil {
		return 0, err
	}
	v, err := r.pools[i].Put(ctx, name, data)
	return r.tag(i, v), err
}

func (r *Router) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if !r.isData(name) {
		return r.meta.Create(ctx, name, data)
	}
	i, err := r.newIndex(ctx, name, objstore.ErrExists)
	if err != nil {
		return 0, err
	}
	v, err := r.createIn(ctx, i, name, data)
	return r.tag(i, v), err
}

// createIn creates a block in pool i. On a pool without create-if-absent
// (an S3 server without conditional writes) it is a Stat, then a Put if
// the block is absent: sound for content blocks only, which are named by
// the hash of their bytes, so two creators racing both store the same
// bytes. A private block is refused there (ErrUnsupport): its writer
// replaces it whole with Put, and a writer taken over may still do so
// late, so a Put between the Stat and the Put would be overwritten.
// Nothing creates private blocks (the volume engine puts them, and only
// a store with in-place writes, which such a pool is not, copies them).
func (r *Router) createIn(ctx context.Context, i int, name string, data []byte) (objstore.Version, error) {
	p := r.pools[i]
	if !r.noCAS[i] {
		return p.Create(ctx, name, data)
	}
	if blockmap.ParseName(name).Kind != blockmap.ContentObject {
		return 0, fmt.Errorf("%w: pools: pool %s has no conditional writes, so only content blocks can be created there, not %s", objstore.ErrUnsupport, r.names[i], name)
	}
	_, err := p.Stat(ctx, name)
	if err == nil {
		return 0, fmt.Errorf("%w: pools: %s", objstore.ErrExists, name)
	}
	if !objstore.IsNotExist(err) {
		return 0, err
	}
	return p.Put(ctx, name, data)
}

func (r *Router) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	if !r.isData(name) {
		return r.meta.Swap(ctx, name, data, old)
	}
	var i int
	var err error
	if old == 0 {
		i, err = r.newIndex(ctx, name, objstore.ErrConflict)
	} else {
		i, err = r.locateIndex(ctx, name)
	}
	if err != nil {
		return 0, err
	}
	v, err := r.pools[i].Swap(ctx, name, data, r.tag(i, old))
	return r.tag(i, v), err
}

// Delete removes every copy of a block.
func (r *Router) Delete(ctx context.Context, name string) error {
	if !r.isData(name) {
		return r.meta.Delete(ctx, name)
	}
	r.st.forget(name)
	var errs []error
	found := false
	for _, p := range r.pools {
		err := p.Delete(ctx, name)
		switch {
		case err == nil:
			found = true
		case !objstore.IsNotExist(err):
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if !found {
		return fmt.Errorf("%w: pools: %s", objstore.ErrNotFound, name)
	}
	return nil
}

func (r *Router) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	if !r.isData(name) {
		return r.meta.DeleteVersion(ctx, name, old)
	}
	i, err := r.locateIndex(ctx, name)
	if err != nil {
		return err
	}
	return r.pools[i].DeleteVersion(ctx, name, r.tag(i, old))
}

// List lists each part's own names: a block held by two pools is listed
// once per copy, each with its own version.
func (r *Router) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	if err := (part{r.meta, r, false}).List(ctx, prefix, fn); err != nil {
		return err
	}
	for i, p := range r.pools {
		err := (part{p, r, true}).List(ctx, prefix, func(in objstore.Info) error {
			in.Version = r.tag(i, in.Version)
			return fn(in)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ListNames is List's walk of names only (objstore.NameLister). A block
// held by several pools is named once: a pool's names that an earlier
// pool in the configuration's order holds are skipped, at the cost of a
// Stat per block listed from the second pool on. NB: a copy deleted from
// an earlier pool after that pool's walk named it and before a later
// pool's Stat could let the name come twice; blocks change pools only by
// moves (docs/pools.md), and no caller lists blocks by names only.
func (r *Router) ListNames(ctx context.Context, prefix string, fn func(string) error) error {
	if err := (part{r.meta, r, false}).ListNames(ctx, prefix, fn); err != nil {
		return err
	}
	for k, p := range r.pools {
		err := (part{p, r, true}).ListNames(ctx, prefix, func(name string) error {
			for _, q := range r.pools[:k] {
				_, err := q.Stat(ctx, name)
				if err == nil {
					return nil
				}
				if !objstore.IsNotExist(err) {
					return err
				}
			}
			return fn(name)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ListNamesAfter is ListNames in byte order from after on
// (objstore.OrderedLister). The names of a prefix no block can have (the
// catalog's) are the metadata backend's alone: its ordered listing, where
// it has one, lists them at the cost of what is read (a page of the
// catalog, its page). Any other prefix lists every part's names and sorts
// them.
func (r *Router) ListNamesAfter(ctx context.Context, prefix, after string, fn func(string) error) error {
	if !r.mayHoldData(prefix) {
		if ol, ok := objstore.AsOrderedLister(r.meta); ok {
			return ol.ListNamesAfter(ctx, prefix, after, fn)
		}
	}
	return objstore.SortedNamesAfter(ctx, r, prefix, after, fn)
}

// Settle settles name on every part that settles (objstore.Settler),
// not only where a lookup finds it now: a write sent to one pool may
// still be in flight, or have failed, when a move has named another the
// block's pool and the object is in neither yet. A part without the
// object's writes answers at once (a RADOS store looks in its own table
// of writes in flight), and no placement is read or cached.
func (r *Router) Settle(ctx context.Context, name string) error {
	for _, s := range append([]objstore.Store{r.meta}, r.pools...) {
		if st, ok := objstore.AsSettler(s); ok {
			if err := st.Settle(ctx, name); err != nil {
				return err
			}
		}
	}
	return nil
}

// SyncWaitsOnly reports whether every part's Sync only waits
// (objstore.SyncWaiter), and some part has one: then no log needs zeros
// ahead of its tail.
func (r *Router) SyncWaitsOnly() bool {
	syncs := false
	for _, s := range append([]objstore.Store{r.meta}, r.pools...) {
		c := objstore.CapabilitiesOf(s)
		if c&objstore.CapSync != 0 {
			if c&objstore.CapSyncWaits == 0 {
				return false
			}
			syncs = true
		}
	}
	return syncs
}

// FreshStat reports whether every part's Stat is fresh
// (objstore.FreshStater).
func (r *Router) FreshStat() bool {
	for _, p := range append([]objstore.Store{r.meta}, r.pools...) {
		if !objstore.FreshStat(p) {
			return false
		}
	}
	return true
}

func (r *Router) Close() error {
	if r.view {
		return nil
	}
	var errs []error
	for _, p := range append([]objstore.Store{r.meta}, r.pools...) {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

var (
	_ objstore.Store         = (*Router)(nil)
	_ objstore.NameLister    = (*Router)(nil)
	_ objstore.OrderedLister = (*Router)(nil)
	_ objstore.FreshStater   = (*Router)(nil)
)
