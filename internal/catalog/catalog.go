// Package catalog maps names to volume IDs and records lineage: which
// volume a snapshot was taken from, which snapshot or image a clone came
// from.
//
// Format 4 (this package) keeps one object per name, so that the cost of
// every single-name operation does not depend on how many names there
// are (format 2's layout), and every writer keeps the store's list index
// where it has one (objstore's RADOS store does since format 3, its file
// store since format 4, and each lists the catalog from it; this package
// writes through the store, which keeps it):
//
//   - cat/name/<name>: the record (JSON). It is the commit point of every
//     operation: a name exists iff its record exists and is valid (see
//     the rename states below). Created with create-if-absent, changed by
//     compare-and-swap, deleted by conditional delete
//     (objstore.Store.DeleteVersion), each on that record alone.
//   - cat/id/<id>: a hint {"name": ...} for lookups by ID.
//   - cat/child/<parent id>/<child id>: an empty hint, the lineage index:
//     a clone under its Parent, a snapshot under its Origin.
//   - catalog: the format marker {"format":4,"records":[]}. Format 1 kept
//     every record in this one object; formats 2 and 3 are format 4's
//     layout, by binaries that may not keep the index (2: none; 3: RADOS's
//     only). Binaries refuse a marker of a later format than theirs. A
//     store of format 1, 2 or 3 is upgraded on first use (Upgrade): the
//     index is repaired before the marker says 4.
//
// Hints are written before the record they describe and deleted after
// it, and every reader verifies a hint against the record it names, so a
// crash leaves at most stale hints, which readers ignore and the garbage
// collector deletes (StaleHint).
//
// A rename moves a record from one name to another in steps, each a
// conditional write of one record; readers never write, and see exactly
// one valid name per ID in every intermediate state. Mutating operations
// (Create, Rename, Remove) that meet a rename left half done by a crash
// finish it if it was committed and undo it if not. docs/format.md lists
// the steps and the state each crash leaves.
package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// ObjectName is the format marker (formats 2 to 4), or the whole catalog
// of a format 1 store.
const ObjectName = "catalog"

// Format is the catalog format this package writes.
const Format = 4

// Object name prefixes of formats 2 and 3.
const (
	NamePrefix  = "cat/name/"
	IDPrefix    = "cat/id/"
	ChildPrefix = "cat/child/"
)

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

// stored is a record as kept in cat/name/<name>, with the state of a
// rename it takes part in (empty outside one). The old name's record
// carries RenamingTo (intent, then Moved once committed), the new one's
// RenamedFrom (Pending until the commit is acknowledged in it); both carry
// the rename's random Token.
type stored struct {
	Record
	RenamingTo  string `json:"renaming_to,omitempty"`
	Moved       bool   `json:"moved,omitempty"`
	RenamedFrom string `json:"renamed_from,omitempty"`
	Pending     bool   `json:"pending,omitempty"`
	Token       string `json:"rename_token,omitempty"`
	// Upgrading: written by an upgrade from format 1 and not yet
	// confirmed by it. The upgrade confirms every record before it ends,
	// so a record still marked once it has ended is one an upgrader that
	// woke up late wrote for a name removed or renamed since: no name
	// (see Upgrade).
	Upgrading bool `json:"upgrading,omitempty"`
}

// Errors. Test with errors.Is.
var (
	ErrNotFound = errors.New("catalog: no volume, snapshot or image of that name")
	ErrExists   = errors.New("catalog: name already in use")
	ErrBadName  = errors.New("catalog: invalid name")
	ErrCorrupt  = errors.New("catalog: corrupt catalog object")
	ErrInUse    = errors.New("catalog: in use")
	// ErrBusy: an operation kept meeting concurrent changes of the same
	// names; running it again normally succeeds.
	ErrBusy = errors.New("catalog: the names keep changing under this operation; run it again")
)

// MaxNameLen bounds names.
const MaxNameLen = 128

// maxTries bounds the rounds of one operation against concurrent changes.
const maxTries = 100

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

// Catalog reads and updates the catalog of one store. It is safe for
// concurrent use, also by several processes and hosts on one store.
type Catalog struct {
	store objstore.Store
	// Hold, if set, holds garbage collections off while a rename creates
	// the record of its new name (package manage sets it to a gc hold): a
	// collection lists the records while renames go on, and must not miss
	// an ID whose record both appears and disappears during its listing.
	// If release reports an error (the hold was lost: the rename stalled
	// past it), the rename undoes itself and fails with that error.
	Hold func(ctx context.Context) (release func() error, err error)
	// ready: this process saw the store at format 4 with nothing left to
	// upgrade (formats only go forward).
	ready atomic.Bool
	// Upgraded, if set, hears of an upgrade that an operation made before
	// it ran (not Upgrade called itself), so that a command can tell what
	// an upgrade from format 2 asks of the operator (see Upgrade).
	Upgraded func(UpgradeReport)
	// asIs: an upgrade from format 2 failed in this process; operations
	// that only read read format 2 as it is without trying again (on
	// RADOS each try walks the pool), those that write still try.
	asIs atomic.Bool
}

// New returns the catalog of s.
func New(s objstore.Store) *Catalog { return &Catalog{store: s} }

// Names may hold '@', object names may not: '_' is written "__" and '@'
// "_a" (a component-wise encoding, so the encoding of a prefix of a name
// is a prefix of the name's encoding).
var nameEncoder = strings.NewReplacer("_", "__", "@", "_a")

func encodeName(name string) string { return nameEncoder.Replace(name) }

// decodeName reverses encodeName; ok is false for what it never makes.
func decodeName(enc string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(enc); i++ {
		if enc[i] != '_' {
			b.WriteByte(enc[i])
			continue
		}
		if i++; i == len(enc) {
			return "", false
		}
		switch enc[i] {
		case '_':
			b.WriteByte('_')
		case 'a':
			b.WriteByte('@')
		default:
			return "", false
		}
	}
	return b.String(), true
}

func recordName(name string) string { return NamePrefix + encodeName(name) }
func idHint(id blockmap.ID) string  { return IDPrefix + id.String() }
func childHint(parent, child blockmap.ID) string {
	return ChildPrefix + parent.String() + "/" + child.String()
}

// DecodeRecord parses the content of cat/name/<name>. It accepts only
// well-formed records (ErrCorrupt otherwise).
func DecodeRecord(name string, b []byte) (*Record, error) {
	s, err := decodeStored(name, b)
	if err != nil {
		return nil, err
	}
	return &s.Record, nil
}

func decodeStored(name string, b []byte) (*stored, error) {
	var s stored
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: record %q: %v", ErrCorrupt, name, err)
	}
	if err := checkRecord(&s.Record); err != nil {
		return nil, err
	}
	if s.Name != name {
		return nil, fmt.Errorf("%w: record %q holds the name %q", ErrCorrupt, name, s.Name)
	}
	bad := false
	switch {
	case s.RenamingTo != "" && s.RenamedFrom != "":
		bad = true
	case s.RenamingTo != "":
		bad = ValidName(s.RenamingTo) != nil || s.RenamingTo == s.Name || s.Token == "" || s.Pending
	case s.RenamedFrom != "":
		bad = ValidName(s.RenamedFrom) != nil || s.RenamedFrom == s.Name || s.Token == "" || s.Moved
	default:
		bad = s.Token != "" || s.Moved || s.Pending
	}
	if bad || s.Upgrading && (s.RenamingTo != "" || s.RenamedFrom != "") {
		return nil, fmt.Errorf("%w: record %q has an invalid rename state", ErrCorrupt, name)
	}
	return &s, nil
}

func checkRecord(r *Record) error {
	if ValidName(r.Name) != nil || r.ID.IsZero() {
		return fmt.Errorf("%w: bad record %q", ErrCorrupt, r.Name)
	}
	switch r.Kind {
	case KindVolume, KindSnapshot, KindImage:
	default:
		return fmt.Errorf("%w: record %q has kind %q", ErrCorrupt, r.Name, r.Kind)
	}
	return nil
}

func encodeStored(s *stored) []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // plain data
	}
	return b
}

// get reads the stored record of name (ErrNotFound if absent).
func (c *Catalog) get(ctx context.Context, name string) (*stored, objstore.Version, error) {
	b, v, err := c.store.Get(ctx, recordName(name))
	if objstore.IsNotExist(err) {
		return nil, 0, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return nil, 0, err
	}
	s, err := decodeStored(name, b)
	return s, v, err
}

// view decides, without writing, whether s (read at name) is a valid
// name: a record outside a rename; the old name of a rename not yet
// committed; the new name of a committed one. Exactly one record of an
// ID is valid in every state a rename goes through.
func (c *Catalog) view(ctx context.Context, s *stored) (bool, error) {
	switch {
	case s.Upgrading:
		// Callers upgraded first (ensure): the upgrade has ended.
		return false, nil
	case s.RenamingTo != "":
		return !s.Moved, nil
	case s.Pending:
		a, _, err := c.get(ctx, s.RenamedFrom)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return a.Moved && a.RenamingTo == s.Name && a.Token == s.Token && a.ID == s.ID, nil
	}
	return true, nil
}

// Lookup returns the record called name. It writes nothing.
func (c *Catalog) Lookup(ctx context.Context, name string) (*Record, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if err := c.ensure(ctx, false); err != nil {
		return nil, err
	}
	s, _, err := c.get(ctx, name)
	if err != nil {
		return nil, err
	}
	ok, err := c.view(ctx, s)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return &s.Record, nil
}

// ByID returns the record of id through its cat/id hint, verified. It
// writes nothing.
func (c *Catalog) ByID(ctx context.Context, id blockmap.ID) (*Record, error) {
	if err := c.ensure(ctx, false); err != nil {
		return nil, err
	}
	notFound := fmt.Errorf("%w: no name for ID %s", ErrNotFound, id)
	if id.IsZero() {
		return nil, notFound
	}
	name, _, err := c.readIDHint(ctx, id)
	if err != nil {
		return nil, err
	}
	for try := 0; try < 3 && name != ""; try++ {
		s, _, err := c.get(ctx, name)
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
			return nil, notFound
		}
		if err != nil {
			return nil, err
		}
		if s.ID != id {
			return nil, notFound
		}
		ok, err := c.view(ctx, s)
		if err != nil {
			return nil, err
		}
		if ok {
			return &s.Record, nil
		}
		// Mid-rename: the valid record is the other name.
		name = s.RenamingTo
		if name == "" {
			name = s.RenamedFrom
		}
	}
	return nil, notFound
}

// readIDHint returns the name the hint of id holds ("" if absent).
func (c *Catalog) readIDHint(ctx context.Context, id blockmap.ID) (string, objstore.Version, error) {
	b, v, err := c.store.Get(ctx, idHint(id))
	if objstore.IsNotExist(err) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, err
	}
	var h struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(b, &h) != nil || ValidName(h.Name) != nil {
		return "", v, nil // unreadable: as good as absent, and replaced on the next write
	}
	return h.Name, v, nil
}

func encodeIDHint(name string) []byte {
	b, _ := json.Marshal(struct {
		Name string `json:"name"`
	}{name})
	return b
}

// setIDHint points the hint of id at name unless it already names a valid
// record of id (a later rename's), by compare-and-swap, so that a late
// writer never replaces a newer hint.
func (c *Catalog) setIDHint(ctx context.Context, id blockmap.ID, name string) error {
	for try := 0; try < maxTries; try++ {
		cur, v, err := c.readIDHint(ctx, id)
		if err != nil || cur == name {
			return err
		}
		if cur != "" {
			s, _, err := c.get(ctx, cur)
			if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCorrupt) {
				return err
			}
			if err == nil && s.ID == id {
				if ok, err := c.view(ctx, s); err != nil || ok {
					return err
				}
			}
		}
		if _, err = c.store.Swap(ctx, idHint(id), encodeIDHint(name), v); !errors.Is(err, objstore.ErrConflict) {
			return err
		}
	}
	return ErrBusy
}

// Children returns the valid records whose Parent or Origin is id, by
// name. It writes nothing.
func (c *Catalog) Children(ctx context.Context, id blockmap.ID) ([]Record, error) {
	ids, err := c.ChildIDs(ctx, id)
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, cid := range ids {
		r, err := c.ByID(ctx, cid)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if r.Parent == id || r.Origin == id {
			out = append(out, *r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ChildIDs returns, unverified and in no order, the IDs the child hints of
// id name: every volume made from id that has a record, and removed ones
// from which something made remains (see dropHints), and maybe stale
// ones (a create that did not finish). It writes nothing.
func (c *Catalog) ChildIDs(ctx context.Context, id blockmap.ID) ([]blockmap.ID, error) {
	if err := c.ensure(ctx, false); err != nil {
		return nil, err
	}
	prefix := ChildPrefix + id.String() + "/"
	var ids []blockmap.ID
	err := c.store.List(ctx, prefix, func(in objstore.Info) error {
		if cid, err := blockmap.ParseID(strings.TrimPrefix(in.Name, prefix)); err == nil {
			ids = append(ids, cid)
		}
		return nil
	})
	return ids, err
}

// Create adds the record r (its Name checked) and the hints that find it
// by ID and lineage. ErrExists if the name is taken.
func (c *Catalog) Create(ctx context.Context, r Record) error {
	return c.create(ctx, r, false)
}

// CreateHinted is Create for a record whose hints Hints has written.
func (c *Catalog) CreateHinted(ctx context.Context, r Record) error {
	return c.create(ctx, r, true)
}

// Hints writes the hints of the record r (its ID hint and lineage hint),
// which Create writes before the record: a caller that knows the ID of
// a new object before the object exists (volume.Volume.SnapshotAs) writes
// them meanwhile, then creates the record with CreateHinted. Hints of a
// record never created are stale hints (see the package comment); the
// caller drops them with DropHints.
func (c *Catalog) Hints(ctx context.Context, r Record) error {
	if err := ValidName(r.Name); err != nil {
		return err
	}
	if err := checkRecord(&r); err != nil {
		return err
	}
	if err := c.ensure(ctx, true); err != nil {
		return err
	}
	// The hints at once: each is a durable write, and they only need to
	// be there before the record.
	var g errgroup.Group
	for _, h := range hintNames(r)[1:] {
		g.Go(func() error { _, err := c.store.Put(ctx, h, nil); return err })
	}
	g.Go(func() error { _, err := c.store.Put(ctx, idHint(r.ID), encodeIDHint(r.Name)); return err })
	return g.Wait()
}

// DropHints deletes the hints Hints wrote for a record of a new ID that
// was not created (best effort: a leftover is a stale hint).
func (c *Catalog) DropHints(ctx context.Context, r Record) {
	for _, h := range hintNames(r) {
		c.store.Delete(ctx, h)
	}
}

// hintNames returns the names of r's hints, its ID hint first.
func hintNames(r Record) []string {
	hints := []string{idHint(r.ID)}
	for _, p := range []blockmap.ID{r.Parent, r.Origin} {
		if !p.IsZero() {
			hints = append(hints, childHint(p, r.ID))
		}
	}
	return hints
}

func (c *Catalog) create(ctx context.Context, r Record, hinted bool) error {
	if !hinted {
		if err := c.Hints(ctx, r); err != nil {
			return err
		}
	} else {
		if err := ValidName(r.Name); err != nil {
			return err
		}
		if err := checkRecord(&r); err != nil {
			return err
		}
		if err := c.ensure(ctx, true); err != nil {
			return err
		}
	}
	b := encodeStored(&stored{Record: r})
	for try := 0; try < maxTries; try++ {
		_, err := c.store.Create(ctx, recordName(r.Name), b)
		if !errors.Is(err, objstore.ErrExists) {
			return err
		}
		// Taken, unless by what a crashed rename left: settle that.
		if _, _, err := c.settle(ctx, r.Name); errors.Is(err, ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		// The hints of a fresh ID are nobody else's.
		c.DropHints(ctx, r)
		return fmt.Errorf("%w: %q", ErrExists, r.Name)
	}
	return ErrBusy
}

// settle reads the record of name and brings a rename it takes part in
// to an end (finishing it if committed, undoing it if not), then returns
// the record if name is valid: outside any rename, or at most with a
// RenamedFrom whose old name is gone (ErrNotFound otherwise).
func (c *Catalog) settle(ctx context.Context, name string) (*stored, objstore.Version, error) {
	for try := 0; try < maxTries; try++ {
		s, v, err := c.get(ctx, name)
		if err != nil {
			return nil, 0, err
		}
		switch {
		case s.Upgrading:
			// Written by an upgrader that woke up after the upgrade
			// (which callers finished first) ended: no name.
			err = c.store.DeleteVersion(ctx, recordName(name), v)
		case s.RenamingTo != "" && !s.Moved:
			err = c.rollBack(ctx, s, v)
		case s.RenamingTo != "":
			err = c.finish(ctx, s, v)
		case s.RenamedFrom != "":
			var a *stored
			var va objstore.Version
			a, va, err = c.get(ctx, s.RenamedFrom)
			ours := err == nil && a.RenamingTo == s.Name && a.Token == s.Token && a.ID == s.ID
			switch {
			case err != nil && !errors.Is(err, ErrNotFound):
			case ours && a.Moved:
				err = c.finish(ctx, a, va)
			case ours:
				err = c.rollBack(ctx, a, va)
			case s.Pending:
				// Its old name never committed: it is no name.
				err = c.store.DeleteVersion(ctx, recordName(name), v)
			default:
				_, err = c.store.Swap(ctx, recordName(name), encodeStored(&stored{Record: s.Record}), v)
			}
		default:
			return s, v, nil
		}
		if err != nil && !errors.Is(err, objstore.ErrConflict) && !objstore.IsNotExist(err) {
			return nil, 0, err
		}
	}
	return nil, 0, ErrBusy
}

// rollBack undoes the uncommitted rename a (intent, version va) started:
// it clears the intent, then deletes the new name's pending record.
func (c *Catalog) rollBack(ctx context.Context, a *stored, va objstore.Version) error {
	if _, err := c.store.Swap(ctx, recordName(a.Name), encodeStored(&stored{Record: a.Record}), va); err != nil {
		return err
	}
	b, vb, err := c.get(ctx, a.RenamingTo)
	if err == nil && b.Pending && b.Token == a.Token && b.RenamedFrom == a.Name {
		err = c.store.DeleteVersion(ctx, recordName(b.Name), vb)
	}
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, objstore.ErrConflict) && !objstore.IsNotExist(err) {
		return err
	}
	return nil
}

// finish completes the committed rename a (moved, version va): the ID
// hint, the new record no longer pending, the old one deleted, the new
// one's RenamedFrom cleared. Each step is conditional and idempotent.
func (c *Catalog) finish(ctx context.Context, a *stored, va objstore.Version) error {
	for try := 0; ; try++ {
		if try == maxTries {
			return ErrBusy
		}
		b, vb, err := c.get(ctx, a.RenamingTo)
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
			break // removed or renamed on since: a is only a leftover
		}
		if err != nil {
			return err
		}
		if b.RenamedFrom != a.Name || b.Token != a.Token || b.ID != a.ID {
			break // acknowledged and cleared already
		}
		if err := c.setIDHint(ctx, a.ID, b.Name); err != nil {
			return err
		}
		if !b.Pending {
			break
		}
		nb := *b
		nb.Pending = false
		if _, err := c.store.Swap(ctx, recordName(b.Name), encodeStored(&nb), vb); err != nil && !errors.Is(err, objstore.ErrConflict) {
			return err
		}
	}
	// The new record is no longer pending: the old one may go.
	err := c.store.DeleteVersion(ctx, recordName(a.Name), va)
	if err != nil && !errors.Is(err, objstore.ErrConflict) && !objstore.IsNotExist(err) {
		return err
	}
	b, vb, err := c.get(ctx, a.RenamingTo)
	if err == nil && b.RenamedFrom == a.Name && b.Token == a.Token && !b.Pending {
		_, err = c.store.Swap(ctx, recordName(b.Name), encodeStored(&stored{Record: b.Record}), vb)
	}
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, objstore.ErrConflict) {
		return err
	}
	return nil
}

func newToken() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Rename changes a record's name; the ID and every hint by ID stay. The
// steps (see docs/format.md): intent on the old record, pending record
// at the new name, commit on the old record (moved), then the clean-up
// that finish does.
func (c *Catalog) Rename(ctx context.Context, old, new string) error {
	if err := ValidName(old); err != nil {
		return err
	}
	if err := ValidName(new); err != nil {
		return err
	}
	if err := c.ensure(ctx, true); err != nil {
		return err
	}
	for try := 0; try < maxTries; try++ {
		s, v, err := c.settle(ctx, old)
		if err != nil {
			return err
		}
		if old == new {
			return fmt.Errorf("%w: %q", ErrExists, new)
		}
		if s.RenamedFrom != "" {
			continue // settle clears it
		}
		a := *s
		a.RenamingTo, a.Token = new, newToken()
		va, err := c.store.Swap(ctx, recordName(old), encodeStored(&a), v)
		if errors.Is(err, objstore.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		b := stored{Record: s.Record, RenamedFrom: old, Pending: true, Token: a.Token}
		b.Name = new
		if err := c.createPending(ctx, &b); err != nil {
			// Taken, or the hold on collections lost: undo (what is
			// left if the undo fails is undone by the next settle).
			rerr := c.rollBack(ctx, &a, va)
			undone := errors.Is(rerr, objstore.ErrConflict) || objstore.IsNotExist(rerr)
			if errors.Is(err, ErrExists) {
				if undone {
					// Someone settled old meanwhile (and may have
					// renamed it to new): new being taken says
					// nothing about old any more.
					continue
				}
				if rerr != nil {
					return rerr
				}
			}
			return err
		}
		m := a
		m.Moved = true
		vm, err := c.store.Swap(ctx, recordName(old), encodeStored(&m), va)
		if errors.Is(err, objstore.ErrConflict) || objstore.IsNotExist(err) {
			// Undone by a concurrent settle, which may have looked
			// for the pending record before it existed: delete it,
			// since no settle of the old name will (this token's
			// rename can no longer commit).
			if err := c.dropPending(ctx, &b); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		return c.finish(ctx, &m, vm)
	}
	return ErrBusy
}

// dropPending deletes b, a rename's pending record, if it is still
// there as written.
func (c *Catalog) dropPending(ctx context.Context, b *stored) error {
	cur, v, err := c.get(ctx, b.Name)
	if err == nil && cur.Pending && cur.Token == b.Token {
		err = c.store.DeleteVersion(ctx, recordName(b.Name), v)
	}
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, objstore.ErrConflict) && !objstore.IsNotExist(err) {
		return err
	}
	return nil
}

// createPending creates the new name's record of a rename, holding
// collections off (Hold) while it does. ErrExists if the name is taken
// by anything but this rename's own pending record. If the hold turns
// out lost (the rename stalled past it, and a collection ran), it fails
// with the hold's error: the collection may have listed the records
// before the new one and may read the old one after the rename deleted
// it, so the rename must not go on.
func (c *Catalog) createPending(ctx context.Context, b *stored) (err error) {
	if c.Hold != nil {
		release, herr := c.Hold(ctx)
		if herr != nil {
			return herr
		}
		defer func() {
			if rerr := release(); err == nil && rerr != nil {
				err = fmt.Errorf("catalog: renaming to %q: it was undone, run it again: %w", b.Name, rerr)
			}
		}()
	}
	for try := 0; try < maxTries; try++ {
		_, err := c.store.Create(ctx, recordName(b.Name), encodeStored(b))
		if !errors.Is(err, objstore.ErrExists) {
			return err
		}
		cur, _, err := c.get(ctx, b.Name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if cur.Pending && cur.Token == b.Token {
			return nil
		}
		// A leftover of a crashed rename does not hold the name.
		if _, _, err := c.settle(ctx, b.Name); errors.Is(err, ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		return fmt.Errorf("%w: %q", ErrExists, b.Name)
	}
	return ErrBusy
}

// Remove deletes the record called name (conditionally on the version it
// read, so never a record someone else just wrote) and then its hints,
// and returns it.
func (c *Catalog) Remove(ctx context.Context, name string) (Record, error) {
	return c.remove(ctx, name, blockmap.ID{})
}

// RemoveID deletes the record of id, whatever its name; ErrNotFound if
// there is none.
func (c *Catalog) RemoveID(ctx context.Context, id blockmap.ID) (Record, error) {
	for try := 0; try < maxTries; try++ {
		r, err := c.ByID(ctx, id)
		if err != nil {
			return Record{}, err
		}
		rec, err := c.remove(ctx, r.Name, id)
		if !errors.Is(err, ErrNotFound) {
			return rec, err
		}
	}
	return Record{}, ErrBusy
}

// RemoveRecord deletes the record of r.ID: at r.Name if it is still
// there, else wherever its ID hint finds it (renamed since); ErrNotFound
// if there is none. For undoing an operation that created r: its hints
// may be gone (a collection deletes those older than its grace period
// that no record points back at, and the record may have come later).
func (c *Catalog) RemoveRecord(ctx context.Context, r Record) (Record, error) {
	rec, err := c.remove(ctx, r.Name, r.ID)
	if !errors.Is(err, ErrNotFound) {
		return rec, err
	}
	return c.RemoveID(ctx, r.ID)
}

func (c *Catalog) remove(ctx context.Context, name string, want blockmap.ID) (Record, error) {
	if err := ValidName(name); err != nil {
		return Record{}, err
	}
	if err := c.ensure(ctx, true); err != nil {
		return Record{}, err
	}
	for try := 0; try < maxTries; try++ {
		s, v, err := c.settle(ctx, name)
		if err != nil {
			return Record{}, err
		}
		if !want.IsZero() && s.ID != want {
			return Record{}, fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		if s.RenamedFrom != "" {
			continue // settle clears it
		}
		err = c.store.DeleteVersion(ctx, recordName(name), v)
		if errors.Is(err, objstore.ErrConflict) || objstore.IsNotExist(err) {
			continue
		}
		if err != nil {
			return Record{}, err
		}
		c.dropHints(ctx, &s.Record)
		return s.Record, nil
	}
	return Record{}, ErrBusy
}

// dropHints deletes the ID hint of a removed record, best effort: what is
// left is stale, and the garbage collector deletes it. The record's child
// hints stay: while anything made from the removed volume remains, they
// are the way down to it from the volumes it was made from (ChildIDs);
// the garbage collector deletes them after that.
func (c *Catalog) dropHints(ctx context.Context, r *Record) {
	if cur, v, err := c.readIDHint(ctx, r.ID); err == nil && cur == r.Name {
		c.store.DeleteVersion(ctx, idHint(r.ID), v)
	}
}

// ListOptions select a page of records.
type ListOptions struct {
	Prefix string // names that start with it
	After  string // names after it (a Page's Next)
	Limit  int    // at most this many; 0: all
}

// Page is one page of a listing.
type Page struct {
	Records []Record
	// Next continues the listing (ListOptions.After); empty at the end.
	Next string
}

// List returns the valid records selected, in name order (the byte
// order of the stored names, which is that of the names except that @
// sorts between _ and a). A store that lists in order from a name on
// (objstore.OrderedLister: RADOS, S3, the file store, pools over any of
// them) lists the names of the page only;
// another lists the names under the prefix (objstore.ListNames) and sorts
// them, which costs the names of the prefix, not their records or
// metadata. It reads the records of the page only, and writes nothing.
func (c *Catalog) List(ctx context.Context, opts ListOptions) (Page, error) {
	var p Page
	next, err := c.Walk(ctx, opts, opts.Limit, func(recs []Record) error {
		p.Records = append(p.Records, recs...)
		return nil
	})
	p.Next = next
	return p, err
}

// errEnough stops an ordered listing that has the names it wants.
var errEnough = errors.New("catalog: enough names")

// nameSource returns the next names (decoded, valid, under the prefix and
// after opts.After) of a listing, up to n, in order, and whether no name
// follows them.
type nameSource func(n int) ([]string, bool, error)

// names returns the name source of a listing (see List).
func (c *Catalog) names(ctx context.Context, opts ListOptions) (nameSource, error) {
	prefix := NamePrefix + encodeName(opts.Prefix)
	after := ""
	if opts.After != "" {
		after = recordName(opts.After)
	}
	keep := func(object string) (string, bool) {
		n, ok := decodeName(strings.TrimPrefix(object, NamePrefix))
		return n, ok && object > after && strings.HasPrefix(n, opts.Prefix) && ValidName(n) == nil
	}
	if ol, ok := objstore.AsOrderedLister(c.store); ok {
		// One name more than asked is read and kept, so that whether a
		// name follows is known without asking the store again.
		var ahead []string
		cursor, done := after, false
		return func(want int) ([]string, bool, error) {
			for len(ahead) <= want && !done {
				err := ol.ListNamesAfter(ctx, prefix, cursor, func(object string) error {
					cursor = object
					if n, ok := keep(object); ok {
						ahead = append(ahead, n)
					}
					if len(ahead) > want {
						return errEnough
					}
					return nil
				})
				if err != nil && !errors.Is(err, errEnough) {
					return nil, false, err
				}
				done = err == nil
			}
			k := min(want, len(ahead))
			names := ahead[:k:k]
			ahead = ahead[k:]
			return names, done && len(ahead) == 0, nil
		}, nil
	}
	var objects []string
	err := objstore.ListNames(ctx, c.store, prefix, func(object string) error {
		if _, ok := keep(object); ok {
			objects = append(objects, object)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(objects)
	return func(want int) ([]string, bool, error) {
		k := min(want, len(objects))
		names := make([]string, k)
		for i, o := range objects[:k] {
			names[i], _ = decodeName(strings.TrimPrefix(o, NamePrefix))
		}
		objects = objects[k:]
		return names, len(objects) == 0, nil
	}, nil
}

// Walk calls fn with the valid records opts selects, in name order (see
// List), pageSize at a time (0: all at once; the first page holds at most
// FirstPage, so that a caller that shows pages as they come shows the
// first one soon), and returns the token that continues after the last
// record passed to fn (empty when none is left). It lists the names as it
// goes, walkBatch at a time at most (all at once from a store that lists
// in no order), and reads the records of a page several at a time. It
// writes nothing. It is no snapshot: see docs/format.md for what a rename
// during a listing shows (the ID once at most).
func (c *Catalog) Walk(ctx context.Context, opts ListOptions, pageSize int, fn func([]Record) error) (string, error) {
	if err := c.ensure(ctx, false); err != nil {
		return "", err
	}
	source, err := c.names(ctx, opts)
	if err != nil {
		return "", err
	}
	var page []Record
	total, lastName := 0, ""
	size := pageSize // of the page being filled
	if pageSize > FirstPage {
		size = FirstPage
	}
	// IDs listed: a rename that commits while the listing goes on must
	// not show a volume again under its new name.
	listed := map[blockmap.ID]bool{}
	flush := func() error {
		if len(page) == 0 {
			return nil
		}
		err := fn(page)
		page, size = nil, pageSize
		return err
	}
	for last := false; !last; {
		// Read what the page (and the limit) still lacks, at once.
		want := walkBatch
		if size > 0 {
			want = min(want, size-len(page))
		}
		if opts.Limit > 0 {
			want = min(want, opts.Limit-total)
		}
		var names []string
		names, last, err = source(want)
		if err != nil {
			return "", err
		}
		recs, err := c.readValid(ctx, names)
		if err != nil {
			return "", err
		}
		for _, r := range recs {
			if r == nil || listed[r.ID] {
				continue
			}
			listed[r.ID] = true
			page = append(page, r.Record)
			total, lastName = total+1, r.Name
			if size > 0 && len(page) == size {
				if err := flush(); err != nil {
					return "", err
				}
			}
		}
		if opts.Limit > 0 && total == opts.Limit && !last {
			return lastName, flush()
		}
	}
	return "", flush()
}

// FirstPage bounds the first page of a Walk.
const FirstPage = 100

// walkBatch bounds the names a walk reads at once; walkReaders reads
// them in parallel (one store round trip each: on RADOS, a page of 1000
// read one by one takes most of a second).
const (
	walkBatch   = 1000
	walkReaders = 16
)

// readValid reads the records of names in parallel and returns, in the
// same order, each valid one, nil for those absent or not valid. A record
// it found not valid (mid-rename) it reads again after the others, in
// name order: read in parallel, a rename's new name could be read before
// the commit and its old one after, which would show the volume under
// neither (TestListDuringRename).
func (c *Catalog) readValid(ctx context.Context, names []string) ([]*stored, error) {
	out := make([]*stored, len(names))
	again := make([]bool, len(names))
	read := func(k int) error {
		s, _, err := c.get(ctx, names[k])
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ok, err := c.view(ctx, s)
		if ok && err == nil {
			out[k] = s
		}
		again[k] = !ok
		return err
	}
	var g errgroup.Group
	g.SetLimit(walkReaders)
	for k := range names {
		g.Go(func() error { return read(k) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for k := range names {
		if again[k] {
			if err := read(k); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// All calls fn with every valid record, in name order.
func (c *Catalog) All(ctx context.Context, fn func(Record) error) error {
	_, err := c.Walk(ctx, ListOptions{}, 1000, func(recs []Record) error {
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}

// Scan calls fn with every record stored under NamePrefix, valid or not
// (a rename's other half included), without upgrading: for the garbage
// collector, whose roots are every ID any record names, and for store
// statistics. A record deleted during the scan may or may not be seen.
func (c *Catalog) Scan(ctx context.Context, fn func(Record) error) error {
	var names []string
	err := objstore.ListNames(ctx, c.store, NamePrefix, func(object string) error {
		if n, ok := decodeName(strings.TrimPrefix(object, NamePrefix)); ok && ValidName(n) == nil {
			names = append(names, n)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, n := range names {
		s, _, err := c.get(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(s.Record); err != nil {
			return err
		}
	}
	return nil
}

// ParseHint recognizes the object name of a hint: cat/id/<id> (parent
// zero) or cat/child/<parent>/<id>.
func ParseHint(object string) (id, parent blockmap.ID, ok bool) {
	if rest, found := strings.CutPrefix(object, IDPrefix); found {
		id, err := blockmap.ParseID(rest)
		return id, blockmap.ID{}, err == nil
	}
	if rest, found := strings.CutPrefix(object, ChildPrefix); found {
		ps, cs, found := strings.Cut(rest, "/")
		p, err1 := blockmap.ParseID(ps)
		c, err2 := blockmap.ParseID(cs)
		return c, p, found && err1 == nil && err2 == nil
	}
	return blockmap.ID{}, blockmap.ID{}, false
}

// Objects returns the names of the objects that stand for r in the
// store: its record and its hints.
func Objects(r Record) []string {
	out := []string{recordName(r.Name), idHint(r.ID)}
	for _, p := range []blockmap.ID{r.Parent, r.Origin} {
		if !p.IsZero() {
			out = append(out, childHint(p, r.ID))
		}
	}
	return out
}
