package move

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
	"github.com/archipelago-go/archip/internal/volume"
)

// MigrateResult says what a migration did.
type MigrateResult struct {
	From    string   `json:"from"`
	To      string   `json:"to"`
	Moved   []Result `json:"moved"`  // volumes and images moved
	Shared  int64    `json:"shared"` // blocks copied for volumes of other pools and bucket objects
	Bytes   int64    `json:"bytes"`  // bytes copied, moves included
	Seconds float64  `json:"seconds"`
}

// Migrate empties pool from into pool to, for retiring it: it moves
// every volume (with its snapshots) and image placed in from to pool to,
// finishing first any unfinished move of theirs, and again for those
// placed in from meanwhile, until a pass over the catalog moves nothing;
// then, for each volume,
// image and snapshot placed elsewhere (a snapshot is placed with its
// origin; one whose origin was removed, in the default pool), it copies
// into its own pool (to, if that is from) the blocks it references that
// from holds and its pool does not (blocks shared by reference across
// pools), and likewise for the maps of objects in buckets (their pool
// is the default one). Each pass first repairs the store's index of the
// catalog where it keeps one (objstore.RepairIndexes). After it, and a
// collection, from holds nothing any volume or object needs. It is
// resumable: a rerun skips what is done.
// progress, if set, hears each volume's name before its move.
func Migrate(ctx context.Context, m *manage.Manager, from, to string, opts Options, progress func(name string)) (MigrateResult, error) {
	begin := time.Now()
	res := MigrateResult{From: from, To: to}
	r, ok := pools.Of(m.Store)
	if !ok {
		return res, ErrNotPools
	}
	for _, p := range []string{from, to} {
		if err := known(r, p); err != nil {
			return res, err
		}
	}
	if from == to {
		return res, fmt.Errorf("%w: --from and --to are both %s", ErrThere, from)
	}
	// Passes over the catalog until one moves nothing: a volume placed
	// in from while a pass ran (by a create or clone with --pool, or
	// without one while from is the default) is moved by the next.
	var others []catalog.Record
	for pass := 1; ; pass++ {
		if pass > maxWalks {
			return res, fmt.Errorf("%w: volumes kept being placed in pool %s during the migration; make another pool the default and run it again", ErrUnsettled, from)
		}
		// The pass trusts the catalog's listing to name every volume: one
		// whose record an index lacks (RADOS: written by a binary older
		// than the index, or its uncovered crash state) would stay in from.
		if err := objstore.RepairIndexes(ctx, m.Store); err != nil {
			return res, err
		}
		var recs []catalog.Record
		others = others[:0]
		if err := m.Catalog.All(ctx, func(rec catalog.Record) error {
			if rec.Kind != catalog.KindSnapshot {
				recs = append(recs, rec)
			} else {
				// A snapshot moves with its origin; one whose origin was
				// removed has nothing that moves it, and its blocks, named
				// by the origin, stay where the origin was.
				others = append(others, rec)
			}
			return nil
		}); err != nil {
			return res, err
		}
		moved := false
		for _, rec := range recs {
			p, _, err := r.Record(ctx, rec.ID)
			if err != nil {
				return res, err
			}
			if p.From != "" { // an unfinished move: finish it first
				if progress != nil {
					progress(rec.Name)
				}
				mr, err := Move(ctx, m, rec.Name, p.Pool, opts)
				if err != nil {
					return res, fmt.Errorf("%s: finishing its move to %s: %w", rec.Name, p.Pool, err)
				}
				res.Bytes += mr.Bytes
				moved = true
			}
			pool, _, err := r.Placement(ctx, rec.ID)
			if err != nil {
				return res, err
			}
			if pool != from {
				others = append(others, rec)
				continue
			}
			if progress != nil {
				progress(rec.Name)
			}
			mr, err := Move(ctx, m, rec.Name, to, opts)
			if err != nil {
				return res, fmt.Errorf("%s: %w", rec.Name, err)
			}
			res.Moved = append(res.Moved, mr)
			res.Bytes += mr.Bytes
			moved = true
		}
		if !moved {
			break
		}
	}
	for _, rec := range others {
		owner := rec.ID
		if rec.Kind == catalog.KindSnapshot && !rec.Origin.IsZero() {
			owner = rec.Origin // a snapshot's pool is its origin's (package gc)
		}
		pool, _, err := r.Placement(ctx, owner)
		if err != nil {
			return res, err
		}
		if pool == from {
			// A snapshot of a removed origin in the default pool, which
			// is still from: its copies in to must be there when from is
			// retired (with the default set to another pool first, as
			// docs/pools.md says, gc then finds them in their home).
			pool = to
		}
		names, err := referenced(ctx, m, rec.ID)
		if err != nil {
			return res, err
		}
		if err := res.copyShared(ctx, r, from, pool, names, opts); err != nil {
			return res, fmt.Errorf("%s: copying the blocks it shares from %s into its pool %s: %w", rec.Name, from, pool, err)
		}
	}
	// The maps of objects in buckets and of uploaded parts: no record
	// places them, so gc takes the default pool for their home.
	var maps []blockmap.ID
	if err := bucket.Roots(ctx, m.Store, func(id blockmap.ID) { maps = append(maps, id) }); err != nil {
		return res, err
	}
	home := r.PoolNames()[0]
	if home == from {
		home = to
	}
	for _, id := range maps {
		names, err := referenced(ctx, m, id)
		if errors.Is(err, volume.ErrNotFound) {
			continue // an object deleted meanwhile
		}
		if err != nil {
			return res, err
		}
		if err := res.copyShared(ctx, r, from, home, names, opts); err != nil {
			return res, fmt.Errorf("bucket object map %s: copying its blocks from %s into %s: %w", id, from, home, err)
		}
	}
	res.Seconds = time.Since(begin).Seconds()
	return res, nil
}

// copyShared copies into pool to those of names that pool from holds.
func (res *MigrateResult) copyShared(ctx context.Context, r *pools.Router, from, to string, names []string, opts Options) error {
	c := copier{r: r, to: to, opts: opts, report: func(Progress) {}, start: time.Now()}
	var need []string
	for _, n := range names {
		if ok, err := r.Holds(ctx, from, n); err != nil {
			return err
		} else if ok {
			need = append(need, n)
		}
	}
	_, err := c.walk(ctx, 1, need)
	res.Shared += c.copied.Load()
	res.Bytes += c.bytes.Load()
	return err
}
