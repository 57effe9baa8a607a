package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
)

// addPoolFlag adds --pool, the data pool of what the command makes.
func addPoolFlag(c *cobra.Command, pool *string, what string) {
	c.Flags().StringVar(pool, "pool", "", "the data pool of "+what+", on a store of several pools (pools:///FILE; default: the store's default pool)")
}

// poolRouter returns the router of m's store for --pool (nil without
// it), or a usage error if the store has no such pool.
func poolRouter(m *manage.Manager, pool string) (*pools.Router, error) {
	if pool == "" {
		return nil, nil
	}
	r, ok := pools.Of(m.Store)
	if !ok {
		return nil, usageError{errors.New("--pool needs a store of several pools (--store pools:///FILE; docs/pools.md); this store is one backend")}
	}
	for _, n := range r.PoolNames() {
		if n == pool {
			return r, nil
		}
	}
	return nil, usageError{fmt.Errorf("--pool %s: %w (this store has %s)", pool, pools.ErrNoPool, strings.Join(r.PoolNames(), ", "))}
}

// place records the pool of a volume just made; a failure leaves it in
// the default pool.
func place(ctx context.Context, r *pools.Router, id blockmap.ID, name, pool string) error {
	if r == nil {
		return nil
	}
	if err := r.Place(ctx, id, pool); err != nil {
		return fmt.Errorf("%s was made, but its placement in pool %s failed, so its new blocks go to the default pool: %w", name, pool, err)
	}
	return nil
}

// placement returns the pool of the volume, snapshot or image name on a
// store of several pools ("" on one backend): a snapshot's blocks are
// its origin's, named by the origin's id, so its pool is the origin's.
// from is the pool it moves from while a move is unfinished.
func placement(ctx context.Context, m *manage.Manager, name string) (pool, from string, err error) {
	r, ok := pools.Of(m.Store)
	if !ok {
		return "", "", nil
	}
	rec, err := m.Lookup(ctx, name)
	if err != nil {
		return "", "", err
	}
	id := rec.ID
	if rec.Kind == catalog.KindSnapshot && !rec.Origin.IsZero() {
		id = rec.Origin
	}
	p, _, err := r.Placement(ctx, id)
	if err != nil {
		return "", "", err
	}
	pr, _, err := r.Record(ctx, id)
	return p, pr.From, err
}

// unplace deletes the placement record of a volume about to be removed
// (gc deletes those a failure leaves): it returns what to call after the
// removal.
func unplace(ctx context.Context, m *manage.Manager, name string) func() {
	r, ok := pools.Of(m.Store)
	if !ok {
		return func() {}
	}
	rec, err := m.Lookup(ctx, name)
	if err != nil {
		return func() {}
	}
	return func() { r.Unplace(ctx, rec.ID) }
}

// poolStats is what one data pool stores.
type poolStats struct {
	Name    string `json:"name"`
	Default bool   `json:"default"`
	Objects int64  `json:"objects"`
	Bytes   int64  `json:"bytes"`
}

// statsPerPool lists each data pool of m's store (nil on one backend).
func statsPerPool(ctx context.Context, m *manage.Manager) ([]poolStats, error) {
	r, ok := pools.Of(m.Store)
	if !ok {
		return nil, nil
	}
	var out []poolStats
	for i, p := range r.Pools() {
		ps := poolStats{Name: p.Name, Default: i == 0}
		err := p.Store.List(ctx, "", func(in objstore.Info) error {
			ps.Objects++
			ps.Bytes += in.Size
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("listing pool %s: %w", p.Name, err)
		}
		out = append(out, ps)
	}
	return out, nil
}
