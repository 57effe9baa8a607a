// Package objstore is the bottom layer: a flat namespace of named objects
// with the few operations a block store needs, and the backends that
// provide them.
//
// Vocabulary:
//   - object: a named byte string. Names are slash-separated paths of
//     components made of [A-Za-z0-9._-] (see ValidName).
//   - version: a number > 0 that names one write of an object: every
//     Put, Create and Swap gives the object a version it never had
//     before, also when it writes the same bytes again and across Delete
//     and re-Create. Versions are compared for equality only, never
//     ordered: they need not grow (S3 derives them from ETags; see
//     package s3 for the odds of a collision). Version 0 means "absent"
//     in Swap.
//
// Every method takes a context first and is safe for concurrent use. A
// method never keeps or changes a caller's buffer after it returns.
//
// Optional capabilities are small interfaces (RangeWriter, Syncer,
// FreshStater, Fencer, ...), never a scheme: S3 has no in-place write,
// files and RADOS do. Callers discover them with the helpers of caps.go
// (AsRangeWriter, FreshStat, ...), not by type assertion, so that a
// store wrapping another (a Wrapper: metrics, fault injection) offers
// exactly what it says.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Version identifies one write of an object; compare versions with ==
// only (see the package doc). 0 means absent.
type Version uint64

// Info describes one object.
type Info struct {
	Name    string
	Size    int64
	Version Version
	ModTime time.Time
}

// Store is what every backend implements.
//
// Errors of writes (Put, Create, Swap, Delete, DeleteVersion): a write that returns one
// of the sentinel errors below that says why it was refused (ErrConflict,
// ErrExists, ErrNotFound, ErrNoSpace, ErrBadName, ErrReadOnly, ErrClosed,
// ErrUnsupport) changed nothing. Any other error, ErrTimeout and context
// errors included, leaves the outcome unknown: the write may have
// happened, or may still happen later (a request in flight when the
// caller gave up), on every backend (files on NFS, RADOS, S3 alike).
// Callers that use versions must handle that: a later Swap from the old
// version then conflicts with their own write. The layers above do so by
// reading the object back on the next conflict and adopting it if it is
// exactly what they wrote: a lease holder adopts its own record (package
// lease, by instance and per-write nonce), and the volume's head swap
// re-reads and adopts its own head.
type Store interface {
	// ReadAt reads len(p) bytes from the object at offset off. Bytes past
	// the end of the object read as zeros, so a short object behaves as
	// if padded with zeros (a block store never needs short reads). It
	// returns ErrNotFound if the object does not exist.
	ReadAt(ctx context.Context, name string, p []byte, off int64) error

	// Get returns the whole object and its version, or ErrNotFound.
	Get(ctx context.Context, name string) ([]byte, Version, error)

	// Put atomically replaces the object (creating it if absent) and
	// returns its new version. When Put returns nil the new content is
	// durable: it survives a crash of the process and of the machine.
	// Readers see either the old or the new content, never a mix.
	Put(ctx context.Context, name string, data []byte) (Version, error)

	// Create is Put if the object is absent; otherwise it returns
	// ErrExists and changes nothing.
	Create(ctx context.Context, name string, data []byte) (Version, error)

	// Swap is Put if the object's current version is old (0: the object
	// must be absent). Otherwise it returns ErrConflict and changes
	// nothing. Two concurrent Swaps from the same version never both
	// succeed, also when they run on different hosts sharing the store.
	// After an error other than ErrConflict (or another refusal, see
	// above) the swap may have happened: the object may now hold data at
	// a version the caller was not told.
	Swap(ctx context.Context, name string, data []byte, old Version) (Version, error)

	// Delete removes the object durably. It returns ErrNotFound if the
	// object does not exist.
	Delete(ctx context.Context, name string) error

	// DeleteVersion is Delete if the object's current version is old.
	// Otherwise it returns ErrConflict (ErrNotFound if the object is
	// absent) and changes nothing. Two concurrent DeleteVersions, or a
	// DeleteVersion and a Swap, from the same version never both
	// succeed, and an object created again after the version was read is
	// never deleted by it. After an error other than ErrConflict or
	// ErrNotFound (or another refusal, see above) the delete may have
	// happened.
	DeleteVersion(ctx context.Context, name string, old Version) error

	// Stat returns the object's Info or ErrNotFound.
	Stat(ctx context.Context, name string) (Info, error)

	// List calls fn for every object whose name starts with prefix, in
	// no particular order. Objects created or deleted during the walk
	// may or may not be seen. An error from fn stops the walk and is
	// returned.
	List(ctx context.Context, prefix string, fn func(Info) error) error

	// Close releases resources. The store must not be used afterwards.
	Close() error
}

// RangeWriter is implemented by backends that can change part of an
// object in place.
type RangeWriter interface {
	// WriteAt writes p at offset off, creating the object (sparse,
	// zero-filled) if it does not exist and extending it if needed. The
	// write is visible to readers at once but durable only after Sync of
	// the same object returns nil.
	WriteAt(ctx context.Context, name string, p []byte, off int64) error
}

// FreshStater is implemented by backends whose Stat sees every change
// made before it was called, by any host: no client-side cache answers
// it. A Stat of an object's version can then stand in for a
// compare-and-swap as the check that nobody changed it (a flush that
// writes no map checks the head so: package volume). The file store
// reports true only on a local file system: an NFS client answers a stat
// and a directory listing from its attribute cache, for up to a minute.
type FreshStater interface {
	FreshStat() bool
}

// Fencer is implemented by backends that can fence a client: make the
// store itself refuse every later operation of another connection, so
// that a writer that was taken over (a paused process, a broken lease)
// cannot land anything after the taker starts (RADOS: the OSD blocklist,
// as RBD does on an exclusive-lock takeover). Package lease records the
// holder's FenceID in its lease and fences it before taking the lease
// over from a holder that did not release it; package volume then skips
// the head check of a flush that changed no map entry (docs/leases.md).
type Fencer interface {
	// FenceID returns the identity of this connection, as Fence takes
	// it. An error says why this connection cannot take part in fencing;
	// callers then keep their own checks. It wraps ErrUnsupport when that
	// lasts (RADOS: the client lacks the capability to blocklist); any
	// other error is passing (the store did not answer): ask again later.
	FenceID(ctx context.Context) (string, error)
	// Fence makes the store refuse every operation of the connection id
	// (ErrFenced) that reaches an object after an operation this
	// connection sends once Fence has returned. An operation of id that
	// an object served before that is unaffected (it happened before).
	// The fence is not forever (its backend documents how long it
	// lasts): it must outlast any stall of the fenced process.
	Fence(ctx context.Context, id string) error
}

// Lender is implemented by backends that can hand over the buffers a
// read arrived in instead of copying them into the caller's (RADOS).
type Lender interface {
	// ReadLend reads up to n bytes of the object at off and calls fn with
	// them, in order, in one or more buffers that are valid only until fn
	// returns. Past the object's end there are fewer bytes (a sparse
	// object reads short: the rest is zeros). It returns ErrNotFound,
	// without calling fn, if the object does not exist, and fn's error if
	// fn fails.
	ReadLend(ctx context.Context, name string, off int64, n int, fn func(bufs [][]byte) error) error
}

// Syncer is implemented by backends whose WriteAt is not durable by
// itself.
type Syncer interface {
	// Sync makes every completed WriteAt to the object durable. It
	// returns ErrNotFound if the object does not exist.
	Sync(ctx context.Context, name string) error
}

// SyncWaiter is implemented by Syncers whose Sync only waits for the
// object's writes in flight, answering true (RADOS: a write returns once
// librados has its bytes, and is durable once the OSDs acknowledge it).
// Such a Sync costs no more after an object grew than after a write in
// place, so package volume writes no zeros ahead of a log's tail there;
// and it returns nil at once for an object with no write in flight,
// without looking whether the object exists.
type SyncWaiter interface {
	SyncWaitsOnly() bool
}

// InodeSyncer is implemented by Syncers whose Sync of an object written
// in place also writes its inode, synchronously, whenever a write moved
// the object's modification time, answering true: the file store on
// ext4 without a journal, where fdatasync writes the inode's block with
// the data (a journaled file system commits a change of times later, on
// its own). The time moves once per clock tick, so one file written and
// synced many times a tick (a raw image) pays it once per tick, and each
// of many files written in turn pays it at every sync. Package volume
// then sends small writes scattered over a volume's blocks to its write
// log (one file) instead of into their blocks.
type InodeSyncer interface {
	SyncWritesInode() bool
}

// Settler is implemented by backends whose writes return before the
// backend has them and whose failed writes leave nothing of themselves
// (RADOS: a write returns once sent; an operation the OSDs refuse leaves
// the object as it was). A read after such a failure reads the object's
// old bytes, so whatever copies an object's bytes elsewhere (package
// volume's checkpoints, the retirement of an object, a new object the map
// is about to name) settles it first. Elsewhere a returned write is
// readable whatever happens to its durability (a file's page cache), and
// there is nothing to settle.
type Settler interface {
	// Settle waits for the writes to name that returned before it was
	// called and returns the error of any of them that failed (or of an
	// earlier one: see the backend). It makes nothing durable that a
	// Sync would not.
	Settle(ctx context.Context, name string) error
}

// Copier is implemented by backends that can copy an object without
// moving its data through this process (copy_file_range on files).
type Copier interface {
	// Copy creates dst with src's content. It returns ErrNotFound if src
	// does not exist and ErrExists if dst does. Like WriteAt, the copy is
	// visible at once and durable after Sync of dst.
	Copy(ctx context.Context, src, dst string) error
}

// Handle is an open object. Reads and writes through it reach the object
// as it was when opened, also after the name is replaced (Put) or
// deleted: use handles only for objects that are not replaced while
// open, such as content blocks (immutable) and private blocks (written in
// place by their one owner). A Handle is safe for concurrent use.
type Handle interface {
	// ReadAt reads len(p) bytes at off; bytes past the end read as zeros.
	ReadAt(p []byte, off int64) error
	// WriteAt writes p at off, extending the object if needed; durable
	// after Sync (of the handle or of the object's name).
	WriteAt(p []byte, off int64) error
	Sync() error
	Close() error
}

// UncachedReader is implemented by handles that can read around the
// host's page cache (the file store: O_DIRECT), for a reader that streams
// immutable data out once, whose copy into the cache would cost CPU for
// nothing. Where it cannot (alignment, the file system), ReadAtUncached
// reads as ReadAt does.
type UncachedReader interface {
	ReadAtUncached(p []byte, off int64) error
}

// ReadAtUncached reads through h's ReadAtUncached if it has one, else
// its ReadAt.
func ReadAtUncached(h Handle, p []byte, off int64) error {
	if u, ok := h.(UncachedReader); ok {
		return u.ReadAtUncached(p, off)
	}
	return h.ReadAt(p, off)
}

// HandleOpener is implemented by backends that can keep objects open, so
// that repeated I/O to one object skips finding it each time.
type HandleOpener interface {
	// OpenHandle opens the object. With create an absent object is
	// created empty; without it an absent object is ErrNotFound. writable
	// handles allow WriteAt.
	OpenHandle(ctx context.Context, name string, create, writable bool) (Handle, error)
}

// LazyCreator is implemented by backends on which creating an object
// costs syncs of its own that a later Sync of the object can do instead
// (the file store: a created object is a file linked into a directory
// made for it, and each entry needs a directory fsync to survive a
// crash). Only for objects that nothing references before their writer
// syncs them (a volume's private blocks, which no stored map names before
// the flush that syncs them); never for objects read by name without
// such a reference (heads, maps, logs, catalog records, leases).
type LazyCreator interface {
	// OpenHandleLazy is OpenHandle(ctx, name, true, true), except that
	// an object it creates is durable, its existence as well as its
	// data, only once a Sync of it (by name, or through any handle on
	// it, from this store) has returned nil. Until then a crash may
	// leave the object absent, or present with any part of its data
	// (empty, short, zeros where writes were).
	OpenHandleLazy(ctx context.Context, name string) (Handle, error)
	// ForgetLazy drops what the store keeps of the creates of names
	// that no Sync has made durable yet, for a caller that will not
	// rely on them (a writer that discards its unflushed writes, whose
	// objects are left to a garbage collection). A later Sync of such an
	// object makes its data durable, not its creation.
	ForgetLazy(names []string)
}

// Errors. Test for them with errors.Is; backends wrap them with context.
var (
	ErrNotFound  = errors.New("objstore: object not found")
	ErrExists    = errors.New("objstore: object already exists")
	ErrConflict  = errors.New("objstore: version conflict")
	ErrNoSpace   = errors.New("objstore: no space left on the store")
	ErrBadName   = errors.New("objstore: invalid object name")
	ErrCorrupt   = errors.New("objstore: corrupt object")
	ErrClosed    = errors.New("objstore: store is closed")
	ErrBadURL    = errors.New("objstore: invalid store URL")
	ErrReadOnly  = errors.New("objstore: store is read-only")
	ErrUnsupport = errors.New("objstore: operation not supported by this backend")
	// ErrTimeout: the store did not answer in time (a backend configured
	// with an operation timeout). Whether a write took effect is unknown,
	// and it may still take effect after ErrTimeout was returned.
	ErrTimeout = errors.New("objstore: the store did not answer in time")
	// ErrFenced: another client fenced this connection (Fencer) when it
	// took over a lease this one held; the store refuses its operations
	// from now on. Whether an earlier attempt of the refused write
	// landed before the fence is unknown. Restart the process: it
	// connects again under a new identity.
	ErrFenced = errors.New("objstore: this connection was fenced by another client that took over its lease; it can write nothing more (restart the process to connect again)")
)

// IsNotExist reports whether err means an object does not exist.
func IsNotExist(err error) bool { return errors.Is(err, ErrNotFound) }

// MaxNameLen bounds object names.
const MaxNameLen = 512

// ValidName reports whether name is a valid object name: 1 to MaxNameLen
// bytes, components separated by single slashes, each component made of
// [A-Za-z0-9._-] and neither "." nor "..".
func ValidName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: %q (length must be 1..%d)", ErrBadName, name, MaxNameLen)
	}
	for _, c := range strings.Split(name, "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("%w: %q (empty, . or .. component)", ErrBadName, name)
		}
		for i := 0; i < len(c); i++ {
			b := c[i]
			ok := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' ||
				b == '.' || b == '_' || b == '-'
			if !ok {
				return fmt.Errorf("%w: %q (byte %q not allowed)", ErrBadName, name, b)
			}
		}
	}
	return nil
}

// NameLister is implemented by backends whose List costs more per object
// than its name (the file store reads each object's directory, RADOS
// stats each object): a listing of names only skips that.
type NameLister interface {
	// ListNames calls fn with the name of every object whose name starts
	// with prefix, each at most once, in no particular order. Every
	// object that exists during the whole walk is named; one created or
	// deleted during it may or may not be; and names of absent objects
	// may come too (deleted ones whose space is not reclaimed yet, ones
	// being created): a caller reads what it needs and takes ErrNotFound
	// for absent. An error from fn stops the walk and is returned.
	ListNames(ctx context.Context, prefix string, fn func(name string) error) error
}

// OrderedLister is implemented by backends that list names in order and
// can start after a name, so that a page of a long listing costs the page
// (RADOS's and the file store's catalog index; package catalog's paged
// list uses it).
type OrderedLister interface {
	// ListNamesAfter is NameLister.ListNames restricted to the names
	// greater than after, which it passes to fn in byte order, as fn takes
	// them: a caller that has what it wants returns an error from fn
	// (and ignores it) to stop early.
	ListNamesAfter(ctx context.Context, prefix, after string, fn func(name string) error) error
}

// SortedNamesAfter lists the names under prefix (ListNames), sorts them
// and passes those greater than after to fn, in order: an OrderedLister's
// answer for names it keeps no order of, at the cost of every name.
func SortedNamesAfter(ctx context.Context, s Store, prefix, after string, fn func(string) error) error {
	var names []string
	if err := ListNames(ctx, s, prefix, func(n string) error {
		if n > after {
			names = append(names, n)
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Strings(names)
	for _, n := range names {
		if err := fn(n); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// ListNames lists the names under prefix: NameLister's if s has it,
// else List's.
func ListNames(ctx context.Context, s Store, prefix string, fn func(name string) error) error {
	if l, ok := AsNameLister(s); ok {
		return l.ListNames(ctx, prefix, fn)
	}
	return s.List(ctx, prefix, func(in Info) error { return fn(in.Name) })
}

// StatEach calls fn with the Info of each named object, skipping those
// deleted since they were listed: List for backends whose listing gives
// names only.
func StatEach(ctx context.Context, s Store, names []string, fn func(Info) error) error {
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		in, err := s.Stat(ctx, n)
		if IsNotExist(err) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(in); err != nil {
			return err
		}
	}
	return nil
}

// readPadded copies obj[off:] into p and zero-fills the rest: the ReadAt
// contract for in-memory copies.
func readPadded(obj, p []byte, off int64) {
	n := 0
	if off < int64(len(obj)) {
		n = copy(p, obj[off:])
	}
	clear(p[n:])
}

// checkRange validates a ReadAt/WriteAt range.
func checkRange(p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) < off {
		return fmt.Errorf("objstore: bad range offset %d length %d", off, len(p))
	}
	return nil
}

// CASChecker is implemented by backends that may lack compare-and-swap
// (an S3 server without conditional writes): CheckCAS returns nil if
// Create, Swap and DeleteVersion work, else an error wrapping
// ErrUnsupport that says why and what to do. A backend without the
// method always has them. Stores that hold metadata (catalog, maps,
// leases) need them; stores of blocks only do not (package pools).
type CASChecker interface {
	CheckCAS() error
}

// CheckCAS returns s's CheckCAS if it has one, else nil.
func CheckCAS(s Store) error {
	if c, ok := s.(CASChecker); ok {
		return c.CheckCAS()
	}
	return nil
}

// Parter is implemented by stores made of several backends (package
// pools). Each part is a Store that lists only the objects kept in it,
// and whose Delete removes only its own copy: a caller that must act on
// each stored copy of a name (gc's sweep, which judges each copy's age)
// walks the parts instead of the whole.
type Parter interface {
	Parts() []Store
}

// LogIndexKeeper is a store of several backends (Parter) that says
// whether its writers may keep a write log index: a writer that logs in
// segments checkpoints by storing the log's index (its logged data stays
// in the segments, which a store of several backends keeps in its
// metadata backend) instead of writing the data into blocks.
type LogIndexKeeper interface {
	KeepsLogIndex() bool
}

// KeepsLogIndex reports whether writers on s may keep a write log index:
// on a store of one backend always; on one of several (Parter) only if
// it says so (LogIndexKeeper), since the index keeps a volume's written
// data out of the pool its blocks go to.
func KeepsLogIndex(s Store) bool {
	for t := s; ; {
		if k, ok := t.(LogIndexKeeper); ok {
			return k.KeepsLogIndex()
		}
		if _, ok := t.(Parter); ok {
			return false
		}
		w, ok := t.(Wrapper)
		if !ok {
			return true
		}
		t = w.Unwrap()
	}
}

// IndexRepairer is a store whose listing of some names reads an index
// that its writers keep beside the objects (RADOS and the file store:
// the catalog's names), and that a crash, or a binary older than the index, may
// leave without a name's key. RepairIndex makes the index name exactly
// the objects there are.
type IndexRepairer interface {
	RepairIndex(ctx context.Context) error
}

// RepairIndexes repairs the index of s, of each of its parts, where it
// keeps one (looking through wrappers), before a caller trusts a listing
// to name every object: gc's mark, the catalog's upgrade.
func RepairIndexes(ctx context.Context, s Store) error {
	for _, p := range Parts(s) {
		for t := p; ; {
			if r, ok := t.(IndexRepairer); ok {
				if skipRepair(ctx, r) {
					break
				}
				if err := r.RepairIndex(ctx); err != nil {
					return err
				}
				break
			}
			w, ok := t.(Wrapper)
			if !ok {
				break
			}
			t = w.Unwrap()
		}
	}
	return nil
}

// Parts returns s's parts if it has some, else s alone.
func Parts(s Store) []Store {
	for t := s; ; {
		if p, ok := t.(Parter); ok {
			return p.Parts()
		}
		w, ok := t.(Wrapper)
		if !ok {
			return []Store{s}
		}
		t = w.Unwrap()
	}
}
