// Package catalog maps names to volume IDs and records lineage: which
// volume a snapshot was taken from, which snapshot or image a clone came
// from.
//
// The catalog is one object, "catalog", a JSON document updated only by
// compare-and-swap, so two hosts changing it at once never lose an update:
// the loser re-reads and retries. Names appear nowhere else (objects are
// named by ID), so a rename rewrites this one object and nothing else.
//
// Size: a record is about 200 bytes of JSON, so 10,000 volumes make a
// 2 MB catalog; every change rewrites it.
package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// ObjectName is the catalog's object.
const ObjectName = "catalog"

const format = 1

// Kind says what a name stands for.
type Kind string

const (
	KindVolume   Kind = "volume"   // writable
	KindSnapshot Kind = "snapshot" // read-only, taken from a volume
	KindImage    Kind = "image"    // read-only, imported from a file
)

// Record is one name.
type Record struct {
	Name string      `json:"name"`
	ID   blockmap.ID `json:"id"`
	Kind Kind        `json:"kind"`
	// Parent is the snapshot or image a clone was made from.
	Parent blockmap.ID `json:"parent,omitzero"`
	// Origin is the volume a snapshot was taken from.
	Origin  blockmap.ID `json:"origin,omitzero"`
	Created time.Time   `json:"created"`
}

// ReadOnly reports whether the record names a snapshot or an image.
func (r *Record) ReadOnly() bool { return r.Kind != KindVolume }

// Doc is the catalog's content.
type Doc struct {
	Format  int      `json:"format"`
	Records []Record `json:"records"`
}

// Errors. Test with errors.Is.
var (
	ErrNotFound = errors.New("catalog: no volume, snapshot or image of that name")
	ErrExists   = errors.New("catalog: name already in use")
	ErrBadName  = errors.New("catalog: invalid name")
	ErrCorrupt  = errors.New("catalog: corrupt catalog object")
	ErrInUse    = errors.New("catalog: in use")
)

// MaxNameLen bounds names.
const MaxNameLen = 128

// ValidName checks a volume, snapshot or image name: 1 to 128 bytes of
// letters, digits and . _ - @, starting with a letter or digit.
func ValidName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: %q (length must be 1..%d)", ErrBadName, name, MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != '-' && c != '@')) {
			return fmt.Errorf("%w: %q (use letters, digits and . _ - @, starting with a letter or digit)", ErrBadName, name)
		}
	}
	return nil
}

// ByName returns the record called name.
func (d *Doc) ByName(name string) (*Record, error) {
	for i := range d.Records {
		if d.Records[i].Name == name {
			return &d.Records[i], nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
}

// ByID returns the record of id, or nil.
func (d *Doc) ByID(id blockmap.ID) *Record {
	for i := range d.Records {
		if d.Records[i].ID == id {
			return &d.Records[i]
		}
	}
	return nil
}

// Children returns the clones made from id and the snapshots taken of
// it, by name.
func (d *Doc) Children(id blockmap.ID) []Record {
	var out []Record
	for _, r := range d.Records {
		if r.Parent == id || r.Origin == id {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Add inserts r after checking its name.
func (d *Doc) Add(r Record) error {
	if err := ValidName(r.Name); err != nil {
		return err
	}
	if _, err := d.ByName(r.Name); err == nil {
		return fmt.Errorf("%w: %q", ErrExists, r.Name)
	}
	d.Records = append(d.Records, r)
	return nil
}

// Remove deletes the record called name and returns it.
func (d *Doc) Remove(name string) (Record, error) {
	for i, r := range d.Records {
		if r.Name == name {
			d.Records = append(d.Records[:i], d.Records[i+1:]...)
			return r, nil
		}
	}
	return Record{}, fmt.Errorf("%w: %q", ErrNotFound, name)
}

// Rename changes a record's name.
func (d *Doc) Rename(old, new string) error {
	if err := ValidName(new); err != nil {
		return err
	}
	r, err := d.ByName(old)
	if err != nil {
		return err
	}
	if _, err := d.ByName(new); err == nil {
		return fmt.Errorf("%w: %q", ErrExists, new)
	}
	r.Name = new
	return nil
}

// Catalog reads and updates the catalog of one store.
type Catalog struct {
	store objstore.Store
}

// New returns the catalog of s.
func New(s objstore.Store) *Catalog { return &Catalog{store: s} }

// Load reads the catalog; a store without one has an empty catalog.
func (c *Catalog) Load(ctx context.Context) (*Doc, objstore.Version, error) {
	b, ver, err := c.store.Get(ctx, ObjectName)
	if objstore.IsNotExist(err) {
		return &Doc{Format: format}, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	d, err := decode(b)
	return d, ver, err
}

func decode(b []byte) (*Doc, error) {
	var d Doc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if d.Format != format {
		return nil, fmt.Errorf("%w: format %d; this program reads format %d", ErrCorrupt, d.Format, format)
	}
	seen := map[string]bool{}
	for _, r := range d.Records {
		if ValidName(r.Name) != nil || seen[r.Name] || r.ID.IsZero() {
			return nil, fmt.Errorf("%w: bad record %q", ErrCorrupt, r.Name)
		}
		seen[r.Name] = true
		switch r.Kind {
		case KindVolume, KindSnapshot, KindImage:
		default:
			return nil, fmt.Errorf("%w: record %q has kind %q", ErrCorrupt, r.Name, r.Kind)
		}
	}
	return &d, nil
}

// Update applies fn to the current catalog and stores the result with
// compare-and-swap, retrying from a fresh copy when another writer got
// there first. An error from fn aborts without a change.
func (c *Catalog) Update(ctx context.Context, fn func(d *Doc) error) error {
	for {
		d, ver, err := c.Load(ctx)
		if err != nil {
			return err
		}
		if err := fn(d); err != nil {
			return err
		}
		sort.Slice(d.Records, func(i, j int) bool { return d.Records[i].Name < d.Records[j].Name })
		b, err := json.MarshalIndent(d, "", " ")
		if err != nil {
			return err
		}
		_, err = c.store.Swap(ctx, ObjectName, b, ver)
		if errors.Is(err, objstore.ErrConflict) {
			if err := ctx.Err(); err != nil {
				return err
			}
			continue
		}
		return err
	}
}
