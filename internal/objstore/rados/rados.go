//go:build ceph

// Package rados is the Ceph RADOS backend: rados://POOL?conf=PATH&id=CLIENT&namespace=NS.
//
// It uses what RADOS has natively: whole-object replace (write_full),
// exclusive create, compare-and-swap as a compound write operation that
// asserts the object's version, in-place ranged writes that create sparse
// objects, and copies made by the OSDs (copy_from) for copy-on-write. A
// write is durable when RADOS acknowledges it (the OSDs have it on stable
// storage in every replica), so the store is no objstore.Syncer: a flush
// has nothing to sync, where a Sync would cost a round trip per object.
// It is an objstore.Fencer: Fence blocklists another client (as RBD does
// when it breaks an exclusive lock), so that the OSDs refuse its writes
// (objstore.ErrFenced); the client needs the mon capability to run "osd
// blocklist" (allow command "osd blocklist", or profile rbd), and without
// it FenceID says so. Versions are RADOS object versions. A full pool or cluster fails writes
// with objstore.ErrNoSpace instead of holding them (librados's default)
// and lets deletes, which free space, through. In-place writes to an
// object that queue behind one in flight go as one operation (merge.go),
// as librbd's I/O scheduler sends them.
//
// Objects live in the URL's namespace, except the catalog's (names under
// cat/), which live in a namespace per directory (NS/cat/D/, see nsOf).
// RADOS lists a namespace by walking every object of the pool, so the
// catalog's directories are listed from an ordered index of omap keys
// instead, sharded where every create writes (cat/name/, cat/id/,
// cat/child/): a listing of a volume's children or a page of names costs
// those names, not the pool. Keys are set before an object is created and
// removed after it is deleted, with a check after each against the other's
// race; a store written before the index is indexed on first listing
// (index.go, docs/format.md).
//
// It needs librados (cgo: Debian's librados-dev, and libradospp-dev and g++
// for shim.cpp) and builds only with the build tags "ceph" and, for go-ceph
// on Ceph Pacific, "pacific".
package rados

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"

	"github.com/archipelago-go/archip/internal/objstore"
)

// Store is a RADOS pool (and namespace) as an objstore.Store.
type Store struct {
	conn *rados.Conn
	// ioctxs is a pool of I/O contexts: one per operation in flight,
	// because an I/O context's "last version" is per context.
	ioctxs chan *rados.IOContext
	// data is the I/O context of the asynchronous data path (aio.go),
	// which many operations share.
	data *rados.IOContext
	// ns is the base namespace (the URL's), where every object not under
	// cat/ lives.
	ns string
	// dirsMu guards dirs: the catalog directories whose marker this
	// process has seen or written (see markDirs).
	dirsMu sync.Mutex
	dirs   map[string]bool
	// fullWalks counts the listings that walked every namespace, walks
	// every walk of the pool (a namespace's too), and indexBuilds the
	// builds of the index (tests).
	fullWalks   atomic.Int64
	walks       atomic.Int64
	indexBuilds atomic.Int64
	// indexed: the catalog's index is known to be complete (ensureIndex,
	// which holds indexMu).
	indexed atomic.Bool
	indexMu sync.Mutex
	// indexHook, if set, is called between the steps of the index's
	// protocol (tests).
	indexHook func(step, name string)
	// statHook, if set, is called at the start of each Stat (tests).
	statHook func()
	// merger merges the writes to a data object that queue up behind one
	// in flight (merge.go).
	merger *writeMerger
	// fenceMu guards fenceID and fenceErr: FenceID's answer, found once.
	fenceMu  sync.Mutex
	fenceID  string
	fenceErr error
}

var (
	_ objstore.Store         = (*Store)(nil)
	_ objstore.RangeWriter   = (*Store)(nil)
	_ objstore.Syncer        = (*Store)(nil)
	_ objstore.SyncWaiter    = (*Store)(nil)
	_ objstore.Settler       = (*Store)(nil)
	_ objstore.Copier        = (*Store)(nil)
	_ objstore.Fencer        = (*Store)(nil)
	_ objstore.NameLister    = (*Store)(nil)
	_ objstore.OrderedLister = (*Store)(nil)
)

// contexts is how many operations run at once on one Store.
const contexts = 32

// Open connects to the pool named by u (rados://POOL?conf=&id=&namespace=).
func Open(ctx context.Context, u *url.URL) (*Store, error) {
	pool := u.Host
	if pool == "" {
		return nil, fmt.Errorf("%w: %q names no pool; use rados://POOL?conf=/etc/ceph/ceph.conf", objstore.ErrBadURL, u.String())
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "conf", "id", "namespace":
		default:
			return nil, fmt.Errorf("%w: unknown parameter %q in %q (known: conf, id, namespace)", objstore.ErrBadURL, k, u.String())
		}
	}
	id := q.Get("id")
	if id == "" {
		id = "admin"
	}
	conn, err := rados.NewConnWithUser(id)
	if err != nil {
		return nil, fmt.Errorf("rados: %w", err)
	}
	if conf := q.Get("conf"); conf != "" {
		err = conn.ReadConfigFile(conf)
	} else {
		err = conn.ReadDefaultConfigFile()
	}
	if err != nil {
		return nil, fmt.Errorf("rados: read config: %w", err)
	}
	if err := conn.Connect(); err != nil {
		return nil, fmt.Errorf("rados: connect: %w", err)
	}
	s := &Store{conn: conn, ioctxs: make(chan *rados.IOContext, contexts), ns: q.Get("namespace"), dirs: map[string]bool{}}
	for i := 0; i <= contexts; i++ {
		ioctx, err := conn.OpenIOContext(pool)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("rados: open pool %q: %w", pool, mapErr(err))
		}
		ioctx.SetNamespace(s.ns)
		// On a full pool or cluster, librados holds writes until space
		// comes back, deletes included. With full-try they are sent:
		// deletes (what frees space) go through and writes fail with
		// ENOSPC or EDQUOT, which the volume engine reports as such.
		if err := ioctx.SetPoolFullTry(); err != nil {
			ioctx.Destroy()
			s.Close()
			return nil, fmt.Errorf("rados: %w", err)
		}
		if i == contexts {
			s.data = ioctx
		} else {
			s.ioctxs <- ioctx
		}
	}
	s.merger = newWriteMerger(mergeLimit, func(name string, ext []extent, done func(error)) error {
		return aioSubmit(s.data, name, ext, done)
	})
	return s, nil
}

// with checks name and runs fn with an I/O context of its own, set to
// the namespace of name.
func (s *Store) with(ctx context.Context, name string, fn func(*rados.IOContext) error) error {
	if err := objstore.ValidName(name); err != nil {
		return err
	}
	return s.withNS(ctx, s.nsOf(name), fn)
}

// withNS runs fn with an I/O context of its own, set to namespace ns.
func (s *Store) withNS(ctx context.Context, ns string, fn func(*rados.IOContext) error) error {
	var ioctx *rados.IOContext
	select {
	case ioctx = <-s.ioctxs:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { s.ioctxs <- ioctx }()
	ioctx.SetNamespace(ns)
	return fn(ioctx)
}

// withData runs fn with the I/O context of the data path, or, for an
// object of the catalog, one of its own in the object's namespace.
func (s *Store) withData(ctx context.Context, name string, fn func(*rados.IOContext) error) error {
	if err := objstore.ValidName(name); err != nil {
		return err
	}
	if isCat(name) {
		return s.withNS(ctx, s.nsOf(name), fn)
	}
	return fn(s.data)
}

// The catalog's objects (names under cat/) live in RADOS namespaces of
// their own, one per directory. The object cat/D/K is the key cat/D/K (the
// whole name) in the namespace BASE/cat/D/ (BASE the URL's namespace; the
// whole name as the key keeps the objects of two stores apart even where
// their namespaces meet). A directory below the catalog's second level
// (cat/D/E/) has a marker in its parent directory's namespace, the key
// cat/D/E/ (an invalid object name: no object takes it), written before
// the first object in it, after its key in its parent's index (index.go).
// Markers are never deleted.
const catPrefix = "cat/"

func isCat(name string) bool { return strings.HasPrefix(name, catPrefix) }

// dirOf returns the directory of a name: up to and with its last slash.
func dirOf(name string) string { return name[:strings.LastIndexByte(name, '/')+1] }

// nsOf returns the namespace of the object (or, ending in a slash, the
// marker) name.
func (s *Store) nsOf(name string) string {
	if !isCat(name) {
		return s.ns
	}
	return s.ns + "/" + dirOf(strings.TrimSuffix(name, "/"))
}

// markDirs makes sure that the directories of name (a catalog object about
// to be created) have their keys in their parents' indexes (see index.go)
// and, deeper than cat/D/, their markers, written from the shallowest
// down, so that a directory's marker implies its parents' and its key.
func (s *Store) markDirs(ctx context.Context, name string) error {
	if !isCat(name) {
		return nil
	}
	var unmarked []string // deepest first
	for dir := dirOf(name); strings.Count(dir, "/") > 1; dir = dirOf(strings.TrimSuffix(dir, "/")) {
		s.dirsMu.Lock()
		seen := s.dirs[dir]
		s.dirsMu.Unlock()
		if seen {
			break
		}
		unmarked = append(unmarked, dir)
	}
	for i := len(unmarked) - 1; i >= 0; i-- {
		dir := unmarked[i]
		var err error
		if strings.Count(dir, "/") == 2 {
			// No marker: its key is set once per process.
			err = s.indexSet(ctx, dir)
		} else {
			// A read first: every creator in the directory checks, and a
			// write, even one that changes nothing, would queue them all
			// on the marker. One I/O context at a time: a call holding
			// one while it waits for another deadlocks with its peers.
			var marked bool
			err = s.withNS(ctx, s.nsOf(dir), func(io *rados.IOContext) error {
				_, err := statIn(io, dir)
				marked = err == nil
				if errors.Is(err, objstore.ErrNotFound) {
					return nil
				}
				return err
			})
			if err == nil && !marked {
				err = s.indexSet(ctx, dir)
			}
			if err == nil && !marked {
				err = s.withNS(ctx, s.nsOf(dir), func(io *rados.IOContext) error {
					return mapErr(io.Create(dir, rados.CreateIdempotent))
				})
			}
		}
		if err != nil {
			return err
		}
		s.dirsMu.Lock()
		if len(s.dirs) >= 1<<16 {
			clear(s.dirs)
		}
		s.dirs[dir] = true
		s.dirsMu.Unlock()
	}
	return nil
}

// code returns the errno of a RADOS error, looking inside compound
// operation errors, which do not unwrap.
func code(err error) int {
	var oe rados.OperationError
	if errors.As(err, &oe) {
		if oe.OpError != nil {
			return code(oe.OpError)
		}
		for _, se := range oe.StepErrors {
			if c := code(se); c != 0 {
				return c
			}
		}
	}
	var ce interface{ ErrorCode() int }
	if errors.As(err, &ce) {
		c := ce.ErrorCode()
		if c < 0 {
			c = -c
		}
		return c
	}
	return 0
}

// mapErr turns RADOS errors into objstore sentinels, keeping the cause.
func mapErr(err error) error {
	switch code(err) {
	case 0:
		if err == nil {
			return nil
		}
	case int(syscall.ENOENT):
		return fmt.Errorf("%w: %v", objstore.ErrNotFound, err)
	case int(syscall.EEXIST):
		return fmt.Errorf("%w: %v", objstore.ErrExists, err)
	case int(syscall.ERANGE), int(syscall.EOVERFLOW), int(syscall.ECANCELED):
		return fmt.Errorf("%w: %v", objstore.ErrConflict, err)
	case int(syscall.ENOSPC), int(syscall.EDQUOT):
		return fmt.Errorf("%w: %v", objstore.ErrNoSpace, err)
	case int(syscall.EROFS):
		return fmt.Errorf("%w: %v", objstore.ErrReadOnly, err)
	case int(syscall.ESHUTDOWN):
		// EBLOCKLISTED: another client fenced this one (Fence).
		return fmt.Errorf("%w: %v", objstore.ErrFenced, err)
	case int(syscall.ETIMEDOUT):
		// Only with "rados osd op timeout" (or mon) set in ceph.conf; by
		// default librados waits for the cluster as long as it takes.
		return fmt.Errorf("%w: %v", objstore.ErrTimeout, err)
	}
	return fmt.Errorf("rados: %w", err)
}

func (s *Store) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if off < 0 {
		return fmt.Errorf("rados: negative offset %d", off)
	}
	var n int
	err := s.withData(ctx, name, func(io *rados.IOContext) (err error) {
		n, err = aio(ctx, io, false, name, p, off)
		return err
	})
	if err != nil {
		return err
	}
	if len(p) == 0 {
		// An empty read still reports a missing object.
		_, err := s.Stat(ctx, name)
		return err
	}
	clear(p[n:]) // past the end of the object
	return nil
}

// getIn reads the whole object in one operation, so the data and the
// version belong together.
func getIn(io *rados.IOContext, name string) ([]byte, objstore.Version, error) {
	buf := make([]byte, 64<<10)
	for {
		op := rados.CreateReadOp()
		step := op.Read(0, buf)
		err := op.Operate(io, name, rados.OperationNoFlag)
		op.Release()
		if err != nil {
			return nil, 0, mapErr(err)
		}
		if step.BytesRead < int64(len(buf)) {
			v, err := io.GetLastVersion()
			if err != nil {
				return nil, 0, mapErr(err)
			}
			return buf[:step.BytesRead], objstore.Version(v), nil
		}
		buf = make([]byte, 4*len(buf))
	}
}

func (s *Store) Get(ctx context.Context, name string) (b []byte, v objstore.Version, err error) {
	err = s.with(ctx, name, func(io *rados.IOContext) error {
		b, v, err = getIn(io, name)
		return err
	})
	return b, v, err
}

// write runs a compound write operation and returns the new version.
func (s *Store) write(ctx context.Context, name string, build func(*rados.WriteOp)) (v objstore.Version, err error) {
	err = s.with(ctx, name, func(io *rados.IOContext) error {
		op := rados.CreateWriteOp()
		defer op.Release()
		build(op)
		if err := op.Operate(io, name, rados.OperationNoFlag); err != nil {
			return mapErr(err)
		}
		lv, err := io.GetLastVersion()
		v = objstore.Version(lv)
		return mapErr(err)
	})
	return v, err
}

// replace sets the object's whole content. NB: go-ceph cannot write an
// empty buffer and has no truncate step, so an empty replacement removes
// and re-creates the object in the same atomic operation.
func replace(op *rados.WriteOp, data []byte) {
	if len(data) == 0 {
		op.Remove()
		op.Create(rados.CreateIdempotent)
		return
	}
	op.WriteFull(data)
}

func (s *Store) Put(ctx context.Context, name string, data []byte) (v objstore.Version, err error) {
	err = s.creating(ctx, name, func() (err error) {
		v, err = s.write(ctx, name, func(op *rados.WriteOp) {
			op.Create(rados.CreateIdempotent)
			replace(op, data)
		})
		return err
	})
	return v, err
}

func (s *Store) Create(ctx context.Context, name string, data []byte) (v objstore.Version, err error) {
	err = s.creating(ctx, name, func() (err error) {
		v, err = s.write(ctx, name, func(op *rados.WriteOp) {
			op.Create(rados.CreateExclusive)
			if len(data) > 0 {
				op.WriteFull(data)
			}
		})
		return err
	})
	return v, err
}

func (s *Store) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	if old == 0 {
		v, err := s.Create(ctx, name, data)
		if errors.Is(err, objstore.ErrExists) {
			err = fmt.Errorf("%w: %s exists", objstore.ErrConflict, name)
		}
		return v, err
	}
	v, err := s.write(ctx, name, func(op *rados.WriteOp) {
		op.AssertVersion(uint64(old))
		replace(op, data)
	})
	if objstore.IsNotExist(err) {
		err = fmt.Errorf("%w: %s does not exist", objstore.ErrConflict, name)
	}
	return v, err
}

func (s *Store) Delete(ctx context.Context, name string) error {
	if err := s.with(ctx, name, func(io *rados.IOContext) error { return mapErr(io.Delete(name)) }); err != nil {
		return err
	}
	return s.deleted(ctx, name)
}

// DeleteVersion removes the object under the same version assertion as
// Swap, in one atomic operation: the OSD applies both or neither.
func (s *Store) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	if old == 0 {
		_, err := s.Stat(ctx, name)
		if err == nil {
			return fmt.Errorf("%w: %s exists", objstore.ErrConflict, name)
		}
		return err
	}
	_, err := s.write(ctx, name, func(op *rados.WriteOp) {
		op.AssertExists() // else the version assertion answers EOVERFLOW
		op.AssertVersion(uint64(old))
		op.Remove()
	})
	if err != nil {
		return err
	}
	return s.deleted(ctx, name)
}

func statIn(io *rados.IOContext, name string) (objstore.Info, error) {
	// A read operation that asserts existence gives the version.
	op := rados.CreateReadOp()
	op.AssertExists()
	err := op.Operate(io, name, rados.OperationNoFlag)
	op.Release()
	if err != nil {
		return objstore.Info{}, mapErr(err)
	}
	v, err := io.GetLastVersion()
	if err != nil {
		return objstore.Info{}, mapErr(err)
	}
	st, err := io.Stat(name)
	if err != nil {
		return objstore.Info{}, mapErr(err)
	}
	return objstore.Info{Name: name, Size: int64(st.Size), Version: objstore.Version(v), ModTime: st.ModTime}, nil
}

// FreshStat: a stat is answered by the object's OSD, never a cache.
func (s *Store) FreshStat() bool { return true }

func (s *Store) Stat(ctx context.Context, name string) (in objstore.Info, err error) {
	if s.statHook != nil {
		s.statHook()
	}
	err = s.with(ctx, name, func(io *rados.IOContext) error {
		in, err = statIn(io, name)
		return err
	})
	return in, err
}

// List walks the objects of the base namespace, whose cost is that of
// the pool (RADOS has no index by name, and lists a namespace by walking
// every object of the pool), whatever the prefix. Under cat/ it reads the
// catalog's index instead (index.go): the cost is that of the names
// listed. It stats each name, and passes only the objects that exist.
func (s *Store) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	names, err := s.listNames(ctx, prefix)
	if err != nil {
		return err
	}
	return s.statEach(ctx, names, fn)
}

// ListNames is List without the stat of each object (objstore.NameLister):
// the names the walk or the index finds, some of which may be deleted by
// now (or, from the index, never created: see index.go).
func (s *Store) ListNames(ctx context.Context, prefix string, fn func(string) error) error {
	return s.ListNamesAfter(ctx, prefix, "", fn)
}

// ListNamesAfter is ListNames in byte order from after on
// (objstore.OrderedLister). Under cat/ it reads the index as fn takes the
// names, so a page costs the page; elsewhere it walks and sorts.
func (s *Store) ListNamesAfter(ctx context.Context, prefix, after string, fn func(string) error) error {
	if isCat(prefix) {
		return s.listIndex(ctx, prefix, after, fn)
	}
	names, err := s.listNames(ctx, prefix)
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, n := range names {
		if n <= after {
			continue
		}
		if err := fn(n); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// listNames returns the names List lists (see List).
func (s *Store) listNames(ctx context.Context, prefix string) ([]string, error) {
	var names []string
	if !isCat(prefix) {
		err := s.walk(ctx, s.ns, func(ns, key string) {
			if strings.HasPrefix(key, prefix) && !isCat(key) && objstore.ValidName(key) == nil {
				names = append(names, key)
			}
		})
		if err != nil {
			return nil, err
		}
	}
	if isCat(prefix) || strings.HasPrefix(catPrefix, prefix) {
		err := s.listIndex(ctx, prefix, "", func(n string) error {
			names = append(names, n)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return names, nil
}

// listStats is how many objects a listing stats at once.
const listStats = contexts / 2

// statEach is objstore.StatEach with listStats stats in flight: one by
// one, the round trip of each makes a listing of many names slow. fn is
// called one at a time.
func (s *Store) statEach(ctx context.Context, names []string, fn func(objstore.Info) error) error {
	if len(names) < 2 {
		return objstore.StatEach(ctx, s, names, fn)
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	type result struct {
		in  objstore.Info
		err error
	}
	next := make(chan string)
	out := make(chan result)
	go func() {
		defer close(next)
		for _, n := range names {
			select {
			case next <- n:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range min(listStats, len(names)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range next {
				in, err := s.Stat(ctx, n)
				select {
				case out <- result{in, err}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(out) }()
	defer func() {
		// No stat may outlive the call: the store may be closed next.
		cancel()
		for range out {
		}
	}()
	for r := range out {
		if objstore.IsNotExist(r.err) {
			continue
		}
		if r.err != nil {
			return r.err
		}
		if err := fn(r.in); err != nil {
			return err
		}
	}
	return parent.Err()
}

// walk calls fn with the namespace and key of every object of namespace
// ns (or of the pool, with rados.AllNamespaces).
func (s *Store) walk(ctx context.Context, ns string, fn func(ns, key string)) error {
	s.walks.Add(1)
	if ns == rados.AllNamespaces {
		s.fullWalks.Add(1)
	}
	return s.withNS(ctx, ns, func(io *rados.IOContext) error {
		it, err := io.Iter()
		if err != nil {
			return mapErr(err)
		}
		defer it.Close()
		for it.Next() {
			fn(it.Namespace(), it.Value())
		}
		return mapErr(it.Err())
	})
}

func (s *Store) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	if off < 0 {
		return fmt.Errorf("rados: negative offset %d", off)
	}
	if err := objstore.ValidName(name); err != nil {
		return err
	}
	return s.creating(ctx, name, func() error {
		if len(p) == 0 {
			return s.with(ctx, name, func(io *rados.IOContext) error { return mapErr(io.Create(name, rados.CreateIdempotent)) })
		}
		if !isCat(name) {
			return s.merger.WriteAt(ctx, name, p, off)
		}
		return s.withData(ctx, name, func(io *rados.IOContext) error {
			_, err := aio(ctx, io, true, name, p, off)
			return err
		})
	})
}

// Sync waits for the writes to name in flight (WriteAt returns once
// librados has a data object's bytes, not once the OSDs have them
// durable: writeMerger) and returns the first error any of them had,
// and every later Sync of name does too. Writes to catalog objects are
// durable when WriteAt returns. Sync does not look whether name exists:
// with no write in flight it returns nil at once.
func (s *Store) Sync(ctx context.Context, name string) error {
	if err := objstore.ValidName(name); err != nil {
		return err
	}
	if isCat(name) {
		return nil
	}
	return s.merger.Sync(ctx, name)
}

// Settle is Sync (objstore.Settler): a write that failed after it
// returned left the object as it was.
func (s *Store) Settle(ctx context.Context, name string) error { return s.Sync(ctx, name) }

// SyncWaitsOnly reports that Sync only waits (objstore.SyncWaiter).
func (s *Store) SyncWaitsOnly() bool { return true }

// mergeLimit bounds one merged write (writeMerger): a block's size.
const mergeLimit = 4 << 20

// FenceExpiry is how long Fence keeps a client blocklisted. A fenced
// client's operations must stay refused for as long as that client may
// still send one it issued before the fence: a process paused with writes
// queued (a paused VM, whose clock stops, so that its lease still looks
// valid to it when it wakes) sends them when it resumes, and a flush that
// trusts the fence reports them durable without checking the map. So the
// entry must outlast the longest pause a host may come back from; a week
// is far beyond RBD's default (an hour), and an entry costs the OSD map a
// few dozen bytes, once per takeover, for that week.
const FenceExpiry = 7 * 24 * time.Hour

// FenceID returns this connection's address, which "ceph osd blocklist
// add" takes. It first checks, once, that this client may blocklist
// (removing an address that is not blocklisted changes nothing): without
// the mon capability (allow command "osd blocklist", or profile rbd) it
// answers why, wrapping objstore.ErrUnsupport, and callers keep checking
// the map head instead. Only that answer is kept: any other failure is
// returned, and the next call asks again.
func (s *Store) FenceID(ctx context.Context) (string, error) {
	s.fenceMu.Lock()
	defer s.fenceMu.Unlock()
	if s.fenceID != "" || s.fenceErr != nil {
		return s.fenceID, s.fenceErr
	}
	addr, err := s.conn.GetAddrs()
	if err == nil {
		err = s.blocklist("rm", "127.0.0.1:0/1", 0)
	}
	if c := code(err); c == int(syscall.EACCES) || c == int(syscall.EPERM) {
		s.fenceErr = fmt.Errorf("%w: rados: this client cannot fence others (give it the mon capability 'allow command \"osd blocklist\"', or 'profile rbd'): %v", objstore.ErrUnsupport, err)
		return "", s.fenceErr
	}
	if err != nil {
		// Not kept: the monitors did not answer (a mon op timeout), or
		// the connection's address is not known yet.
		return "", fmt.Errorf("rados: find this client's fence identity: %w", mapErr(err))
	}
	s.fenceID = addr
	return addr, nil
}

// Fence blocklists the client at addr for FenceExpiry, then waits until
// this client has the OSD map that says so. Every operation this client
// sends afterwards carries that map's epoch, and an OSD serves an
// operation only once its own map has reached the operation's epoch; so
// once an operation of this client has reached an object, every later one
// of the fenced client there is refused (EBLOCKLISTED, objstore.ErrFenced).
func (s *Store) Fence(ctx context.Context, addr string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if addr == "" {
		return fmt.Errorf("rados: fence: no client address")
	}
	if err := s.blocklist("add", addr, FenceExpiry); err != nil {
		return fmt.Errorf("rados: fence %s: %w", addr, err)
	}
	if err := s.conn.WaitForLatestOSDMap(); err != nil {
		return fmt.Errorf("rados: fence %s: wait for the OSD map: %w", addr, mapErr(err))
	}
	return nil
}

// blocklist runs the mon command "osd blocklist op addr [expire]".
func (s *Store) blocklist(op, addr string, expire time.Duration) error {
	cmd := map[string]any{"prefix": "osd blocklist", "blocklistop": op, "addr": addr}
	if expire > 0 {
		cmd["expire"] = json.Number(fmt.Sprintf("%.1f", expire.Seconds())) // a real: an integer is refused
	}
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	_, info, err := s.conn.MonCommand(b)
	if err != nil {
		if info != "" {
			return fmt.Errorf("%w (%s)", err, info)
		}
		return err
	}
	return nil
}

func (s *Store) Close() error {
	if s.merger != nil {
		s.merger.drain()
	}
	if s.data != nil {
		s.data.Destroy()
		s.data = nil
	}
	for {
		select {
		case io := <-s.ioctxs:
			io.Destroy()
		default:
			if s.conn != nil {
				s.conn.Shutdown()
				s.conn = nil
			}
			return nil
		}
	}
}
