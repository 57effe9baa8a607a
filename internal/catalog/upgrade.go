package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/archipelago-go/archip/internal/objstore"
)

// marker is the content of the catalog object of a store of format 2 to
// 4. It keeps format 1's shape, so that binaries refuse a store of a
// later format than theirs: format 1 ones with "format 2; this program
// reads format 1", format 2 ones with "format 4; this program reads
// formats 1 and 2 (a newer archip wrote it: use that)", format 3 ones
// with "format 4; this program reads formats 1 to 3 (...)".
//
// Upgrading (non-nil while an upgrade from format 1 is under way, only
// ever at format 2) holds the records of the format 1 catalog being
// upgraded: the first step of an upgrade swaps the format 1 document for
// this, which stops binaries of format 1 from changing it, and a later
// step clears it once every record exists in format 2. Every process of
// this format finishes an upgrade under way before any other catalog
// operation.
type marker struct {
	Format    int      `json:"format"`
	Records   []Record `json:"records"`
	Upgrading []Record `json:"upgrading,omitempty"`
}

func encodeMarker(m marker) []byte {
	if m.Records == nil {
		m.Records = []Record{}
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// decodeCatalog parses the catalog object: format 1 (records in
// Records), 2 (Records empty, Upgrading while upgrading from 1), 3 or 4
// (Records and Upgrading empty).
func decodeCatalog(b []byte) (*marker, error) {
	var d marker
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	switch d.Format {
	case 1:
		if d.Upgrading != nil {
			return nil, fmt.Errorf("%w: format 1 with records being upgraded", ErrCorrupt)
		}
	case 2, 3, Format:
		if len(d.Records) > 0 {
			return nil, fmt.Errorf("%w: format %d with records in the catalog object", ErrCorrupt, d.Format)
		}
		if d.Format > 2 && d.Upgrading != nil {
			return nil, fmt.Errorf("%w: format %d with records being upgraded", ErrCorrupt, d.Format)
		}
	default:
		return nil, fmt.Errorf("%w: format %d; this program reads formats 1 to %d (a newer archip wrote it: use that)", ErrCorrupt, d.Format, Format)
	}
	seen := map[string]bool{}
	for _, r := range append(d.Records, d.Upgrading...) {
		if err := checkRecord(&r); err != nil {
			return nil, err
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("%w: two records %q", ErrCorrupt, r.Name)
		}
		seen[r.Name] = true
	}
	return &d, nil
}

// UpgradeReport says what Upgrade did.
type UpgradeReport struct {
	From     int `json:"from_format"` // the format found (0: no catalog yet)
	To       int `json:"to_format"`
	Upgraded int `json:"records_upgraded"` // records moved out of a format 1 catalog
}

// Upgrade brings the store's catalog to format 4: idempotent, and safe
// to run from several processes at once and alongside binaries of
// earlier formats (which then refuse the store).  Every other operation
// of this package upgrades first too; this is the explicit form.
//
// Format 1 goes to 2 (each record into its own object), then 2 to 4, or
// 3 to 4. The step from 2 repairs the store's list indexes
// (objstore.RepairIndexes: RADOS's, the file store's), so that they name
// every record a binary of format 2 wrote without its key, and only then
// swaps the marker; the step from 3 repairs the file store's alone
// (objstore.RepairFileIndexes: binaries of format 3 kept RADOS's index,
// not the file store's). A process of an older format that checked the
// format before that swap (a running archip serve) still writes without
// keys until it is restarted; gc repairs the indexes before it trusts a
// listing, and a repair (archip gc) lists what such a process wrote.
func (c *Catalog) Upgrade(ctx context.Context) (UpgradeReport, error) {
	rep := UpgradeReport{To: Format}
	first := true
	for try := 0; try < maxTries; try++ {
		b, v, err := c.store.Get(ctx, ObjectName)
		if objstore.IsNotExist(err) {
			if first {
				rep.From = 0
			}
			// A file store has no index marker until a repair (binaries
			// of format 3 may write its catalog first): on a store
			// without records, the repair is cheap, and marks it.
			if err := objstore.RepairFileIndexes(ctx, c.store); err != nil {
				return rep, fmt.Errorf("catalog: creating the catalog: repairing the store's index: %w", err)
			}
			_, err = c.store.Create(ctx, ObjectName, encodeMarker(marker{Format: Format}))
			if errors.Is(err, objstore.ErrExists) {
				first = false
				continue
			}
			if err == nil {
				c.ready.Store(true)
			}
			return rep, err
		}
		if err != nil {
			return rep, err
		}
		d, err := decodeCatalog(b)
		if err != nil {
			return rep, err
		}
		if first {
			rep.From = d.Format
			first = false
		}
		switch {
		case d.Format == 1:
			// Freeze the format 1 records in the catalog object: from
			// here on nobody changes them, and old binaries refuse the
			// store. A format 1 writer that got there first makes this
			// conflict: read again.
			m := marker{Format: 2, Upgrading: d.Records}
			if m.Upgrading == nil {
				m.Upgrading = []Record{}
			}
			if _, err := c.store.Swap(ctx, ObjectName, encodeMarker(m), v); err != nil && !errors.Is(err, objstore.ErrConflict) {
				return rep, err
			}
		case d.Upgrading != nil:
			stale := false
			changed := func() (bool, error) {
				_, cv, err := c.store.Get(ctx, ObjectName)
				return cv != v, err
			}
			for _, r := range d.Upgrading {
				// Only while the upgrade is still under way: a record
				// created after another process finished it, for a
				// name removed or renamed since, would bring that name
				// back. The record is created marked Upgrading, which
				// is no name once the upgrade has ended, and confirmed
				// only if the upgrade was still under way after it was
				// created: the process that ends the upgrade confirms
				// every record first, so a record created after that
				// stays marked whenever this process stalls.
				if stale, err = changed(); err != nil {
					return rep, err
				} else if stale {
					break
				}
				if err = c.upgradeRecord(ctx, r); err != nil {
					return rep, fmt.Errorf("catalog: upgrading %q (run archip store upgrade again): %w", r.Name, err)
				}
				if stale, err = changed(); err != nil {
					return rep, err
				} else if stale {
					break
				}
				if err = c.confirmRecord(ctx, r); err != nil {
					return rep, fmt.Errorf("catalog: upgrading %q (run archip store upgrade again): %w", r.Name, err)
				}
			}
			if stale {
				continue
			}
			_, err := c.store.Swap(ctx, ObjectName, encodeMarker(marker{Format: 2}), v)
			if err == nil {
				rep.Upgraded = len(d.Upgrading)
			} else if !errors.Is(err, objstore.ErrConflict) {
				return rep, err
			}
		case d.Format == 2 || d.Format == 3:
			// Every writer of format 4 keeps the indexes; the repair makes
			// them name what writers of older formats wrote before the
			// swap.
			repair := objstore.RepairIndexes
			if d.Format == 3 {
				repair = objstore.RepairFileIndexes
			}
			if err := repair(ctx, c.store); err != nil {
				return rep, fmt.Errorf("catalog: upgrading to format %d: repairing the store's index (run archip store upgrade again): %w", Format, err)
			}
			if _, err := c.store.Swap(ctx, ObjectName, encodeMarker(marker{Format: Format}), v); err != nil && !errors.Is(err, objstore.ErrConflict) {
				return rep, fmt.Errorf("catalog: upgrading to format %d: swapping the format marker (the store stays at format %d; run archip store upgrade again once it is writable): %w", Format, d.Format, err)
			}
		default:
			c.ready.Store(true)
			return rep, nil
		}
	}
	return rep, ErrBusy
}

// confirmRecord clears the Upgrading mark of r's record (upgradeRecord
// made it).
func (c *Catalog) confirmRecord(ctx context.Context, r Record) error {
	for try := 0; try < maxTries; try++ {
		s, v, err := c.get(ctx, r.Name)
		if err != nil || !s.Upgrading || s.ID != r.ID {
			return err
		}
		_, err = c.store.Swap(ctx, recordName(r.Name), encodeStored(&stored{Record: s.Record}), v)
		if !errors.Is(err, objstore.ErrConflict) {
			return err
		}
	}
	return ErrBusy
}

// upgradeRecord creates r's hints and record (marked Upgrading) if
// absent. Only upgraders write records while the upgrade is under way,
// all from the same frozen list, so a record already there is r. The ID
// hint is created only if absent: one there already names r, or (after
// the upgrade, for an upgrader that woke up late) the name a rename gave
// the ID since.
func (c *Catalog) upgradeRecord(ctx context.Context, r Record) error {
	if _, _, err := c.store.Get(ctx, recordName(r.Name)); err == nil {
		return nil
	} else if !objstore.IsNotExist(err) {
		return err
	}
	if !r.Parent.IsZero() {
		if _, err := c.store.Put(ctx, childHint(r.Parent, r.ID), nil); err != nil {
			return err
		}
	}
	if !r.Origin.IsZero() {
		if _, err := c.store.Put(ctx, childHint(r.Origin, r.ID), nil); err != nil {
			return err
		}
	}
	if _, err := c.store.Create(ctx, idHint(r.ID), encodeIDHint(r.Name)); err != nil && !errors.Is(err, objstore.ErrExists) {
		return err
	}
	_, err := c.store.Create(ctx, recordName(r.Name), encodeStored(&stored{Record: r, Upgrading: true}))
	if errors.Is(err, objstore.ErrExists) {
		err = nil
	}
	return err
}

// ensure makes sure the store is at format 4 before an operation: once
// per process (formats only go forward). A store without a catalog
// object is empty; write creates the marker then, before the first
// record.
func (c *Catalog) ensure(ctx context.Context, write bool) error {
	if c.ready.Load() || !write && c.asIs.Load() {
		return nil
	}
	b, _, err := c.store.Get(ctx, ObjectName)
	if objstore.IsNotExist(err) && !write {
		return nil
	}
	readable := false // the layout this format reads, without an upgrade
	if err == nil {
		d, err := decodeCatalog(b)
		if err != nil {
			return err
		}
		if d.Format == Format && d.Upgrading == nil {
			c.ready.Store(true)
			return nil
		}
		readable = (d.Format == 2 || d.Format == 3) && d.Upgrading == nil
	} else if !objstore.IsNotExist(err) {
		return err
	}
	rep, err := c.Upgrade(ctx)
	if err == nil && rep.From != 0 && rep.From < rep.To && c.Upgraded != nil {
		c.Upgraded(rep)
	}
	if err != nil && !write && readable && ctx.Err() == nil {
		// Formats 2 and 3 are format 4's layout: an operation that
		// only reads reads it as binaries of those formats do, on a store this process
		// cannot write (read-only, or read-only credentials) or whose
		// upgrade failed; the next command, and the next write of this
		// process, try the upgrade again.
		c.asIs.Store(true)
		return nil
	}
	return err
}

// LegacyRecords returns the records that the catalog object itself still
// holds (format 1, or an upgrade under way), without upgrading: what a
// collection must count among its roots besides every record under
// NamePrefix. Read it before listing the records: an upgrade writes all
// the records before it empties the catalog object.
func (c *Catalog) LegacyRecords(ctx context.Context) ([]Record, error) {
	b, _, err := c.store.Get(ctx, ObjectName)
	if objstore.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	d, err := decodeCatalog(b)
	if err != nil {
		return nil, err
	}
	return append(d.Records, d.Upgrading...), nil
}
