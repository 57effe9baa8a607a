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
//
// A volume without a record is in the default pool. Package gc deletes a
// record whose volume's head is gone.
const placePrefix = "place/"

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

	mu    sync.Mutex             // guards the maps
	place map[blockmap.ID]string // volume → pool ("": no record)
	// placed counts Place and Unplace calls: a read of a record caches
	// what it read only if none ran meanwhile (it may have read the
	// record from before).
	placed uint64
	loc    map[string]string // block → the pool it was last found or placed in
}

func newState(def string) *state {
	return &state{def: def, place: map[blockmap.ID]string{}, loc: map[string]string{}}
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
// process and volume: Place writes it before the volume gets any block
// (right after it is created), and a move (docs/pools.md) will change it
// under its own protocol.
func (r *Router) placement(ctx context.Context, id blockmap.ID) (string, error) {
	r.st.mu.Lock()
	p, ok := r.st.place[id]
	gen := r.st.placed
	r.st.mu.Unlock()
	if ok {
		return p, nil
	}
	b, _, err := r.meta.Get(ctx, PlacementName(id))
	switch {
	case objstore.IsNotExist(err):
		p = ""
	case err != nil:
		return "", fmt.Errorf("pools: reading the placement of volume %s: %w", id, err)
	default:
		var rec placeRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			return "", fmt.Errorf("%w: pools: placement of volume %s: %v", objstore.ErrCorrupt, id, err)
		}
		p = rec.Pool
	}
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	if r.st.placed != gen {
		return p, nil
	}
	if len(r.st.place) >= maxCached {
		clear(r.st.place)
	}
	r.st.place[id] = p
	return p, nil
}

// Place records pool as volume id's: its new private blocks go there,
// and lookups of its blocks start there. Call it before the volume is
// written (right after creating it).
func (r *Router) Place(ctx context.Context, id blockmap.ID, pool string) error {
	if _, ok := r.index(pool); !ok {
		return fmt.Errorf("%w: %q (this store has %s)", ErrNoPool, pool, strings.Join(r.names, ", "))
	}
	b, _ := json.Marshal(placeRecord{Pool: pool})
	if _, err := r.meta.Put(ctx, PlacementName(id), b); err != nil {
		return fmt.Errorf("pools: recording the placement of volume %s: %w", id, err)
	}
	r.st.mu.Lock()
	r.st.place[id] = pool
	r.st.placed++
	r.st.mu.Unlock()
	return nil
}

// Placement returns volume id's pool: its record's (recorded), else the
// default.
func (r *Router) Placement(ctx context.Context, id blockmap.ID) (pool string, recorded bool, err error) {
	p, err := r.placement(ctx, id)
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
	v.pools, v.names, v.noCAS, v.tags = nil, nil, nil, nil
	for _, j := range r.orders[i] {
		v.pools, v.names, v.noCAS = append(v.pools, r.pools[j]), append(v.names, r.names[j]), append(v.noCAS, r.noCAS[j])
		v.tags = append(v.tags, r.tags[j])
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
