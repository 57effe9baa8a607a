package pools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// The placement of a volume, in the metadata backend; package pools is
// the only one that builds or parses these names:
//
//	place/<id>    JSON {"pool":NAME}: the pool of volume <id>'s new private blocks
//	              (with "from":OLD while it moves from pool OLD, and
//	              "cancel":true if that move cancels one to OLD, docs/pools.md)
//
// A volume without a record is in the default pool. Package gc deletes a
// record whose volume's head is gone.
const placePrefix = "place/"

// PlacementPrefix is the prefix of every placement record's name.
const PlacementPrefix = placePrefix

// PlacementName returns the name of volume id's placement record.
func PlacementName(id blockmap.ID) string { return placePrefix + id.String() }

// ParsePlacementName returns the volume of a placement record's name.
func ParsePlacementName(name string) (blockmap.ID, bool) {
	s, ok := strings.CutPrefix(name, placePrefix)
	if !ok {
		return blockmap.ID{}, false
	}
	id, err := blockmap.ParseID(s)
	if err != nil || PlacementName(id) != name {
		return blockmap.ID{}, false
	}
	return id, true
}

type placeRecord struct {
	Pool string `json:"pool"`
	// From: the volume is moving from this pool to Pool (docs/pools.md,
	// "Moving a volume"); its blocks may be in either.
	From string `json:"from,omitempty"`
	// Cancel: the move is a cancel of a move from Pool to From.
	Cancel bool `json:"cancel,omitempty"`
}

// Record is a volume's placement record: its pool and, while it moves,
// the pool it moves from.
type Record struct {
	Pool string
	From string // "" unless a move is in progress
	// Cancel: the move in progress cancels one from Pool to From (a
	// rerun of the cancel finishes it rather than undoing it).
	Cancel bool
}

// ParseRecord decodes the content of a placement record.
func ParseRecord(b []byte) (Record, error) {
	var rec placeRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return Record{}, fmt.Errorf("%w: pools: placement record: %v", objstore.ErrCorrupt, err)
	}
	return Record{Pool: rec.Pool, From: rec.From, Cancel: rec.Cancel && rec.From != ""}, nil
}

func encodeRecord(rec Record) []byte {
	b, _ := json.Marshal(placeRecord{Pool: rec.Pool, From: rec.From, Cancel: rec.Cancel && rec.From != ""})
	return b
}

// ErrNoPool: a pool name the configuration does not have.
var ErrNoPool = errors.New("pools: no such pool")

// maxCached bounds each cache of a router (placements, blocks found
// outside their first pool); a full cache is emptied.
const maxCached = 1 << 16

// state is what a router and its views share: caches of what is in the
// store.
type state struct {
	def string // the configuration's default pool

	mu    sync.Mutex                // guards the maps
	place map[blockmap.ID]placement // volume → its record, as last read
	// placed counts the record changes this process made (Place,
	// Unplace, SwapRecord): a read of a record caches what it read only
	// if none ran meanwhile (it may have read the record from before).
	placed uint64
	loc    map[string]string // block → the pool it was last found or placed in
	// copyBufs holds the buffers of CopyTo's reads (readBlock) that are
	// free: as many as copies ran at once, at most maxFreeBufs, each of
	// a block's size. A list rather than a sync.Pool, which may drop
	// what it holds at any collection (and does at random under the
	// race detector), so that a move's allocations stay its copies in
	// flight, not one per block.
	bufMu    sync.Mutex
	copyBufs []*[]byte
}

// maxFreeBufs bounds the free buffers a Router keeps for CopyTo.
const maxFreeBufs = 16

// placement is a cached placement record: its pool ("": no record), and
// the highest epoch of the volume's private blocks asked about since it
// was read. A block of a later epoch makes the record be read again: a
// move changes the record before it makes the volume's writer reopen
// in a new epoch (docs/pools.md), so a writer's first block of that
// epoch sees the new pool.
type placement struct {
	pool  string
	epoch uint64
}

func newState(def string) *state {
	return &state{def: def, place: map[blockmap.ID]placement{}, loc: map[string]string{}}
}

func (s *state) found(name string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.loc[name]
	return p, ok
}

func (s *state) remember(name, pool string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.loc) >= maxCached {
		clear(s.loc)
	}
	s.loc[name] = pool
}

func (s *state) forget(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.loc, name)
}

// placement returns the pool of volume id's record ("" without one), from
// the cache or the metadata backend. NB: a record is read once per
// process and volume, and again for a private block of an epoch later
// than any asked about since (epoch; 0 for none): Place writes it before
// the volume gets any block (right after it is created), and a move
// changes it, then makes the writer reopen in a new epoch.
func (r *Router) placement(ctx context.Context, id blockmap.ID, epoch uint64) (string, error) {
	r.st.mu.Lock()
	c, ok := r.st.place[id]
	if ok && epoch > c.epoch {
		ok = false
	}
	gen := r.st.placed
	r.st.mu.Unlock()
	if ok {
		return c.pool, nil
	}
	rec, _, err := r.Record(ctx, id)
	if err != nil {
		return "", err
	}
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	if r.st.placed != gen {
		return rec.Pool, nil
	}
	if len(r.st.place) >= maxCached {
		clear(r.st.place)
	}
	c, ok = r.st.place[id]
	if ok && c.epoch > epoch {
		// A read for a later epoch cached meanwhile: it may have begun
		// after a move's record swap, and this one before it.
		return rec.Pool, nil
	}
	r.st.place[id] = placement{rec.Pool, epoch}
	return rec.Pool, nil
}

// Record reads volume id's placement record, and its version (0 and a
// zero Record without one), for a move's compare-and-swap (SwapRecord).
func (r *Router) Record(ctx context.Context, id blockmap.ID) (Record, objstore.Version, error) {
	b, v, err := r.meta.Get(ctx, PlacementName(id))
	if objstore.IsNotExist(err) {
		return Record{}, 0, nil
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("pools: reading the placement of volume %s: %w", id, err)
	}
	rec, err := ParseRecord(b)
	if err != nil {
		return Record{}, 0, fmt.Errorf("volume %s: %w", id, err)
	}
	return rec, v, nil
}

// SwapRecord replaces volume id's placement record of version old (0:
// none) by rec, with compare-and-swap (objstore.ErrConflict if it
// changed), and returns the new version. For a move (docs/pools.md):
// this process sees the new pool at once, others for the volume's next
// epoch.
func (r *Router) SwapRecord(ctx context.Context, id blockmap.ID, rec Record, old objstore.Version) (objstore.Version, error) {
	for _, p := range []string{rec.Pool, rec.From} {
		if _, ok := r.index(p); !ok && (p != "" || p == rec.Pool) {
			return 0, fmt.Errorf("%w: %q (this store has %s)", ErrNoPool, p, strings.Join(r.names, ", "))
		}
	}
	v, err := r.meta.Swap(ctx, PlacementName(id), encodeRecord(rec), old)
	if err != nil {
		return 0, fmt.Errorf("pools: changing the placement of volume %s: %w", id, err)
	}
	r.st.mu.Lock()
	c := r.st.place[id]
	r.st.place[id] = placement{rec.Pool, c.epoch}
	r.st.placed++
	r.st.mu.Unlock()
	return v, nil
}

// Place records pool as volume id's: its new private blocks go there,
// and lookups of its blocks start there. Call it before the volume is
// written (right after creating it).
func (r *Router) Place(ctx context.Context, id blockmap.ID, pool string) error {
	if _, ok := r.index(pool); !ok {
		return fmt.Errorf("%w: %q (this store has %s)", ErrNoPool, pool, strings.Join(r.names, ", "))
	}
	if _, err := r.meta.Put(ctx, PlacementName(id), encodeRecord(Record{Pool: pool})); err != nil {
		return fmt.Errorf("pools: recording the placement of volume %s: %w", id, err)
	}
	r.st.mu.Lock()
	c := r.st.place[id]
	r.st.place[id] = placement{pool, c.epoch}
	r.st.placed++
	r.st.mu.Unlock()
	return nil
}

// Placement returns volume id's pool: its record's (recorded), else the
// default.
func (r *Router) Placement(ctx context.Context, id blockmap.ID) (pool string, recorded bool, err error) {
	p, err := r.placement(ctx, id, 0)
	if err != nil {
		return "", false, err
	}
	if p == "" {
		return r.st.def, false, nil
	}
	return p, true, nil
}

// Pools returns the pools' names in the configuration's lookup order
// (the default first), each with its store as a part (it lists only
// blocks; its Delete removes only its own copy).
func (r *Router) Pools() []Named {
	var ps []Named
	for i, n := range r.names {
		ps = append(ps, Named{n, part{r.pools[i], r, true}})
	}
	return ps
}

// Unplace deletes volume id's placement record, if any (after the volume
// is removed; gc deletes those a removal left).
func (r *Router) Unplace(ctx context.Context, id blockmap.ID) error {
	err := r.meta.Delete(ctx, PlacementName(id))
	r.st.mu.Lock()
	delete(r.st.place, id)
	r.st.placed++
	r.st.mu.Unlock()
	if err != nil && !objstore.IsNotExist(err) {
		return err
	}
	return nil
}

// View returns the store with pool first for blocks that have no
// placement of their own (an import's content blocks): it shares r's
// backends, and its Close closes nothing.
func (r *Router) View(pool string) (objstore.Store, error) {
	i, ok := r.index(pool)
	if !ok {
		return nil, fmt.Errorf("%w: %q (this store has %s)", ErrNoPool, pool, strings.Join(r.names, ", "))
	}
	v := *r
	v.view = true
	v.pools, v.names, v.noCAS = nil, nil, nil
	for _, j := range r.orders[i] {
		v.pools, v.names, v.noCAS = append(v.pools, r.pools[j]), append(v.names, r.names[j]), append(v.noCAS, r.noCAS[j])
	}
	v.orders = orders(len(v.pools))
	return v.wrap(), nil
}

// orders returns, for each pool index i, the lookup order that starts
// at i and goes on in the configuration's order.
func orders(n int) [][]int {
	o := make([][]int, n)
	for i := range o {
		o[i] = append(o[i], i)
		for j := 0; j < n; j++ {
			if j != i {
				o[i] = append(o[i], j)
			}
		}
	}
	return o
}

// Holds reports whether the named pool holds a copy of block name.
func (r *Router) Holds(ctx context.Context, pool, name string) (bool, error) {
	i, ok := r.index(pool)
	if !ok {
		return false, fmt.Errorf("%w: %q (this store has %s)", ErrNoPool, pool, strings.Join(r.names, ", "))
	}
	_, err := r.pools[i].Stat(ctx, name)
	if objstore.IsNotExist(err) {
		return false, nil
	}
	return err == nil, err
}

// CopyTo makes the named pool hold a copy of block name, for a move
// (docs/pools.md): unless it holds one, it copies the first copy found in
// the other pools (in the configuration's order) with create-if-absent,
// so that a block shared by many volumes is copied once and a rerun
// skips it. The block must be immutable: a content block, or a private
// block of a sealed epoch. It returns the bytes copied (0: the pool held
// it), and objstore.ErrNotFound if no pool holds the block.
func (r *Router) CopyTo(ctx context.Context, name, pool string) (int64, error) {
	if !r.isData(name) {
		return 0, fmt.Errorf("pools: %s is no block", name)
	}
	t, ok := r.index(pool)
	if !ok {
		return 0, fmt.Errorf("%w: %q (this store has %s)", ErrNoPool, pool, strings.Join(r.names, ", "))
	}
	_, err := r.pools[t].Stat(ctx, name)
	if err == nil {
		return 0, nil
	}
	if !objstore.IsNotExist(err) {
		return 0, err
	}
	var b []byte
	var bp *[]byte
	err = fmt.Errorf("%w: pools: %s", objstore.ErrNotFound, name)
	for i, p := range r.pools {
		if i == t {
			continue
		}
		var gerr error
		b, bp, gerr = r.st.readBlock(ctx, p, name)
		if gerr == nil {
			err = nil
			break
		}
		if !objstore.IsNotExist(gerr) {
			return 0, gerr
		}
	}
	if err != nil {
		return 0, err
	}
	_, err = r.createIn(ctx, t, name, b)
	if err == nil || errors.Is(err, objstore.ErrExists) {
		// The write is over: the store keeps no reference to b. After
		// another error it may (an S3 upload cut short may still be
		// reading its body), so the buffer is left to the collector.
		r.st.putBuf(bp)
	}
	if errors.Is(err, objstore.ErrExists) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return int64(len(b)), nil
}

// maxCopyBuf bounds the blocks CopyTo reads into a buffer of copyBufs
// (blockmap.MaxBlockShift); a larger object is read with Get.
const maxCopyBuf = 32 << 20

// readBlock reads the whole block name from store p for CopyTo: into a
// buffer of s.copyBufs (bp, for putBuf once the copy is written) unless
// it is larger than any block. The copies of a move, one per block,
// would otherwise each allocate the block anew (a Get's buffer), which
// a 4 GiB move paid in allocation, zeroing and collection
// (docs/benchmarks.md, "Moving a volume between pools"). The stat gives
// the size: CopyTo copies only immutable blocks, so the read that
// follows finds the same bytes (or none, if gc deleted the block: then
// ReadAt reports it missing, as Get would).
func (s *state) readBlock(ctx context.Context, p objstore.Store, name string) (b []byte, bp *[]byte, err error) {
	in, err := p.Stat(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	if in.Size < 0 || in.Size > maxCopyBuf {
		b, _, err = p.Get(ctx, name)
		return b, nil, err
	}
	s.bufMu.Lock()
	if n := len(s.copyBufs); n > 0 {
		bp = s.copyBufs[n-1]
		s.copyBufs = s.copyBufs[:n-1]
	}
	s.bufMu.Unlock()
	if bp == nil || int64(cap(*bp)) < in.Size {
		nb := make([]byte, in.Size)
		bp = &nb
	}
	b = (*bp)[:in.Size]
	if err := p.ReadAt(ctx, name, b, 0); err != nil {
		s.putBuf(bp)
		return nil, nil, err
	}
	return b, bp, nil
}

// putBuf gives a buffer of readBlock back (nil: none).
func (s *state) putBuf(bp *[]byte) {
	if bp == nil {
		return
	}
	s.bufMu.Lock()
	if len(s.copyBufs) < maxFreeBufs {
		s.copyBufs = append(s.copyBufs, bp)
	}
	s.bufMu.Unlock()
}
