//go:build ceph

package rados

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"
	"syscall"

	"github.com/ceph/go-ceph/rados"
	"golang.org/x/sync/errgroup"

	"github.com/archipelago-go/archip/internal/objstore"
)

// The catalog's index. RADOS lists a namespace by walking every object of
// the pool (each placement group is scanned and filtered by namespace), so
// a listing of a catalog directory by namespace costs the whole pool. Each
// directory D of the catalog (cat/, cat/name/, cat/child/P/, ...) has
// instead an index: omap keys, in D's namespace, on the index objects
// D#00.. (names no object can take), one key per entry of D, the entry's
// name relative to D: an object's last component, or a directory's with
// its slash (cat/child/ holds P/). An omap is ordered, and read after a
// key with a bound, so listing D costs its entries (a page, its page):
// nothing else of the pool.
//
// A directory of the catalog's second level (cat/name/, cat/id/,
// cat/child/: every create writes one of them) spreads its keys over
// indexShards objects by a hash of the key, so that no single object takes
// every create; a listing merges the shards in key order. A deeper one
// (the children of one volume) has one index object.
//
// Order of writes, and what a crash or a stalled writer leaves:
//   - A write that may create an object (Create, Put, WriteAt, Copy) sets
//     its key first, then writes, then reads the key back and sets it again
//     if it is gone. A directory's key in its parent is set before the
//     directory's marker (markDirs), once.
//   - A delete deletes the object, then removes the key, then stats the
//     object and sets the key again if the object exists.
//   - Once the object is written or deleted, the steps after it run even
//     if the caller's context is canceled: skipping a check is the crash
//     below, without a crash.
//
// So every object has its key once its creator's call returned: were it
// without, the last change of its key would be a removal by a delete; had
// that delete's stat come after the object's create, it would have seen
// the object and set the key again; had it come before, the create came
// after the removal, and its read-back found the key gone and set it. A
// crash, or a creator that fails, leaves at most a key whose object is
// absent (a ghost): List stats every key and skips those, ListNames may
// pass them (objstore.NameLister allows absent names). A stalled writer
// that wakes up late can only set a key (a ghost at worst) or remove one
// whose object a create made since: that create's read-back, or the
// removing delete's own stat, sets it again before either returns
// (TestIndexDeleteRacesCreate). One crash is not covered: a delete and a
// create of the same name at once, and the one whose check was to set the
// key again dies just before it; the object is then read, written and
// deleted by name as any other, but not listed until the index is built
// again (delete the marker below: the next listing builds it) or gc
// repairs it (RepairIndex).
//
// Stores written before the index (no key anywhere) are
// indexed on first use: the first listing of the catalog that finds no
// marker (cat/#indexed, in cat/'s namespace) walks the pool once, sets
// the keys of every catalog object and marker found, then writes the
// marker. Writers set keys whether or not the marker exists, so objects
// created during that walk are indexed too. Binaries older than the index
// (catalog format 2) must not write the store afterwards: what they create
// has no key. Package catalog's upgrade to format 3 (now 4) repairs the index
// (RepairIndex) and then swaps the catalog's marker, which they refuse;
// one already running still creates objects without keys until restarted,
// which gc's RepairIndex covers.
const indexShards = 32

// indexMarker is the key, in cat/'s namespace, of the object whose
// existence says that every catalog object of the store has its key.
const indexMarker = catPrefix + "#indexed"

// indexValue is every key's value: the keys alone matter.
var indexValue = []byte{1}

// indexRef is one index object: its namespace and key.
type indexRef struct{ ns, oid string }

// shards returns how many index objects the directory dir has.
func shards(dir string) int {
	if strings.Count(dir, "/") == 2 {
		return indexShards
	}
	return 1
}

// indexOf returns the index object of dir that holds key.
func (s *Store) indexOf(dir, key string) indexRef {
	n := shards(dir)
	i := 0
	if n > 1 {
		h := fnv.New32a()
		h.Write([]byte(key))
		i = int(h.Sum32() % uint32(n))
	}
	return s.shard(dir, i)
}

func (s *Store) shard(dir string, i int) indexRef {
	return indexRef{ns: s.ns + "/" + dir, oid: fmt.Sprintf("%s#%02d", dir, i)}
}

// entryOf returns the directory and the key of the catalog object (or,
// ending in a slash, the directory) name.
func entryOf(name string) (dir, key string) {
	dir = dirOf(strings.TrimSuffix(name, "/"))
	return dir, name[len(dir):]
}

// indexSet sets the key of name (a catalog object or directory).
func (s *Store) indexSet(ctx context.Context, name string) error {
	dir, key := entryOf(name)
	ref := s.indexOf(dir, key)
	return s.withNS(ctx, ref.ns, func(io *rados.IOContext) error {
		return mapErr(io.SetOmap(ref.oid, map[string][]byte{key: indexValue}))
	})
}

// indexHas reports whether name has its key.
func (s *Store) indexHas(ctx context.Context, name string) (has bool, err error) {
	dir, key := entryOf(name)
	ref := s.indexOf(dir, key)
	err = s.withNS(ctx, ref.ns, func(io *rados.IOContext) error {
		op := rados.CreateReadOp()
		defer op.Release()
		step := op.GetOmapValuesByKeys([]string{key})
		if err := op.Operate(io, ref.oid, rados.OperationNoFlag); err != nil {
			if code(err) == int(syscall.ENOENT) {
				return nil
			}
			return mapErr(err)
		}
		kv, err := step.Next()
		has = kv != nil
		return mapErr(err)
	})
	return has, err
}

// indexRm removes the key of name.
func (s *Store) indexRm(ctx context.Context, name string) error {
	dir, key := entryOf(name)
	ref := s.indexOf(dir, key)
	return s.withNS(ctx, ref.ns, func(io *rados.IOContext) error {
		err := io.RmOmapKeys(ref.oid, []string{key})
		if code(err) == int(syscall.ENOENT) {
			return nil
		}
		return mapErr(err)
	})
}

// indexOps is the index's order of writes (see the index's doc), shared
// with the file store's.
func (s *Store) indexOps() objstore.IndexOps {
	return objstore.IndexOps{
		Set: s.indexSet,
		Has: s.indexHas,
		Rm:  s.indexRm,
		Exists: func(ctx context.Context, name string) (bool, error) {
			_, err := s.Stat(ctx, name)
			if objstore.IsNotExist(err) {
				return false, nil
			}
			return err == nil, err
		},
		Hook: s.indexHook,
	}
}

// creating runs write, which may create the catalog object name, in the
// index's order: the directories' keys and markers, the key, write, and
// the key read back (see the index's doc).
func (s *Store) creating(ctx context.Context, name string, write func() error) error {
	if err := objstore.ValidName(name); err != nil {
		return err
	}
	if !isCat(name) {
		return write()
	}
	if err := s.markDirs(ctx, name); err != nil {
		return err
	}
	return s.indexOps().Write(ctx, name, write)
}

// deleted removes the key of name, whose object a delete removed, and
// sets it again if the object exists by then (see the index's doc).
func (s *Store) deleted(ctx context.Context, name string) error {
	if !isCat(name) {
		return nil
	}
	return s.indexOps().Deleted(ctx, name)
}

// ensureIndex makes sure the store's catalog is indexed: on a store
// written before the index, it builds it (see the index's doc).
func (s *Store) ensureIndex(ctx context.Context) error {
	if s.indexed.Load() {
		return nil
	}
	// One check (and build) at a time in this process.
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	if s.indexed.Load() {
		return nil
	}
	_, err := s.statNS(ctx, s.ns+"/"+catPrefix, indexMarker)
	if err == nil {
		s.indexed.Store(true)
		return nil
	}
	if !objstore.IsNotExist(err) {
		return err
	}
	s.indexBuilds.Add(1)
	if _, _, err := s.setAllKeys(ctx); err != nil {
		return err
	}
	err = s.withNS(ctx, s.ns+"/"+catPrefix, func(io *rados.IOContext) error {
		return mapErr(io.Create(indexMarker, rados.CreateIdempotent))
	})
	if err != nil {
		return fmt.Errorf("rados: index the catalog: %w", err)
	}
	s.indexed.Store(true)
	return nil
}

// RepairIndex sets the key of every catalog object of the pool, at the
// cost of a walk of the pool, as the index's build does: it repairs the
// state the index's order of writes leaves uncovered (see above) and the
// objects of binaries older than the index. gc runs it before it reads
// the catalog, whose listing it trusts to name every volume: an object
// made after the walk began has its key, or is young. It also removes
// the ghosts it finds (keys of absent objects, which crashed or canceled
// creators leave and every listing would read again), each as a delete
// does: the key removed, then the object's stat, and the key set again
// if the object exists by then.
func (s *Store) RepairIndex(ctx context.Context) error {
	if err := s.ensureIndex(ctx); err != nil {
		return err
	}
	keys, refs, err := s.setAllKeys(ctx)
	if err != nil {
		return err
	}
	for _, ref := range refs {
		dir := strings.TrimPrefix(ref.ns, s.ns+"/")
		var ghosts []string
		for after := ""; ; {
			var got []string
			err := s.withNS(ctx, ref.ns, func(io *rados.IOContext) error {
				return io.ListOmapValues(ref.oid, after, "", 1000, func(k string, _ []byte) { got = append(got, k) })
			})
			if code(err) == int(syscall.ENOENT) {
				break
			}
			if err != nil {
				return fmt.Errorf("rados: repair the catalog's index: %w", mapErr(err))
			}
			for _, k := range got {
				if _, ok := keys[ref][k]; !ok && !strings.HasSuffix(k, "/") {
					ghosts = append(ghosts, dir+k)
				}
			}
			if len(got) < 1000 {
				break
			}
			after = got[len(got)-1]
		}
		for _, name := range ghosts {
			if err := s.deleted(ctx, name); err != nil {
				return fmt.Errorf("rados: repair the catalog's index: %w", err)
			}
		}
	}
	return nil
}

// setAllKeys walks the pool and sets the key of every catalog object and
// directory marker found. It returns the keys it set, and the index
// objects it found.
func (s *Store) setAllKeys(ctx context.Context) (map[indexRef]map[string][]byte, []indexRef, error) {
	keys := map[indexRef]map[string][]byte{}
	var refs []indexRef
	add := func(name string) {
		for {
			dir, key := entryOf(name)
			ref := s.indexOf(dir, key)
			if keys[ref] == nil {
				keys[ref] = map[string][]byte{}
			}
			keys[ref][key] = indexValue
			if dir == catPrefix {
				return
			}
			name = dir
		}
	}
	err := s.walk(ctx, rados.AllNamespaces, func(ns, key string) {
		if !isCat(key) || s.nsOf(key) != ns {
			return
		}
		if strings.HasSuffix(key, "/") {
			if objstore.ValidName(strings.TrimSuffix(key, "/")) == nil {
				add(key)
			}
		} else if objstore.ValidName(key) == nil {
			add(key)
		} else if dir := dirOf(key); s.shardOf(dir, key[len(dir):]) {
			refs = append(refs, indexRef{ns: ns, oid: key})
		}
	})
	if err != nil {
		return nil, nil, err
	}
	for ref, m := range keys {
		batch := map[string][]byte{}
		flush := func() error {
			err := s.withNS(ctx, ref.ns, func(io *rados.IOContext) error { return mapErr(io.SetOmap(ref.oid, batch)) })
			if err != nil {
				return fmt.Errorf("rados: index the catalog: %w", err)
			}
			batch = map[string][]byte{}
			return nil
		}
		for k, v := range m {
			batch[k] = v
			if len(batch) == 1000 {
				if err := flush(); err != nil {
					return nil, nil, err
				}
			}
		}
		if len(batch) > 0 {
			if err := flush(); err != nil {
				return nil, nil, err
			}
		}
	}
	return keys, refs, nil
}

// shardOf reports whether key, in directory dir, names one of dir's index
// objects (dir#00..).
func (s *Store) shardOf(dir, key string) bool {
	for i := range shards(dir) {
		if dir+key == s.shard(dir, i).oid {
			return true
		}
	}
	return false
}

func (s *Store) statNS(ctx context.Context, ns, key string) (in objstore.Info, err error) {
	err = s.withNS(ctx, ns, func(io *rados.IOContext) error {
		in, err = statIn(io, key)
		return err
	})
	return in, err
}

// indexBatch is how many keys a listing first reads of each index
// object; it reads more at a time as it goes on, up to 1000.
var indexBatch = 64

// listIndex calls fn, in byte order, with the catalog names under prefix
// (which starts with cat/, or is a prefix of it) greater than after, from
// the index.
func (s *Store) listIndex(ctx context.Context, prefix, after string, fn func(string) error) error {
	if err := s.ensureIndex(ctx); err != nil {
		return err
	}
	dir, filter := catPrefix, ""
	if isCat(prefix) {
		dir, filter = dirOf(prefix), prefix[len(dirOf(prefix)):]
	}
	return s.listDir(ctx, dir, filter, after, fn)
}

// listDir lists the directory dir (its keys starting with filter), and
// the directories in it, in order: a directory's names all start with its
// key, which sorts among its parent's keys where they do.
func (s *Store) listDir(ctx context.Context, dir, filter, after string, fn func(string) error) error {
	start := ""
	if strings.HasPrefix(after, dir) {
		start = after[len(dir):]
		if i := strings.IndexByte(start, '/'); i >= 0 {
			// after is inside the directory start[:i+1]: start just
			// before its key, which sorts after start[:i].
			start = start[:i]
		}
	} else if after > dir {
		return nil
	}
	return s.mergeShards(ctx, dir, filter, start, func(key string) error {
		name := dir + key
		if strings.HasSuffix(key, "/") {
			if after >= name && !strings.HasPrefix(after, name) {
				return nil
			}
			return s.listDir(ctx, name, "", after, fn)
		}
		if name <= after {
			return nil
		}
		return fn(name)
	})
}

// mergeShards calls fn with the keys of dir's index after start, starting
// with filter, in order.
func (s *Store) mergeShards(ctx context.Context, dir, filter, start string, fn func(string) error) error {
	type cursor struct {
		ref  indexRef
		buf  []string
		last string
		done bool
	}
	n := shards(dir)
	cs := make([]*cursor, n)
	for i := range cs {
		cs[i] = &cursor{ref: s.shard(dir, i), last: start}
	}
	batch := indexBatch // small first: a page wants a few keys of each shard
	fill := func(c *cursor) error {
		var got []string
		err := s.withNS(ctx, c.ref.ns, func(io *rados.IOContext) error {
			return io.ListOmapValues(c.ref.oid, c.last, filter, int64(batch), func(k string, _ []byte) {
				got = append(got, k)
			})
		})
		if code(err) == int(syscall.ENOENT) {
			err = nil
		}
		if err != nil {
			return mapErr(err)
		}
		c.buf = got
		if len(got) < batch {
			c.done = true
		} else {
			c.last = got[len(got)-1]
		}
		return nil
	}
	var g errgroup.Group
	for _, c := range cs {
		g.Go(func() error { return fill(c) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var low *cursor
		for _, c := range cs {
			if len(c.buf) > 0 && (low == nil || c.buf[0] < low.buf[0]) {
				low = c
			}
		}
		if low == nil {
			return nil
		}
		key := low.buf[0]
		low.buf = low.buf[1:]
		if len(low.buf) == 0 && !low.done {
			batch = min(batch*4, 1000)
			if err := fill(low); err != nil {
				return err
			}
		}
		if err := fn(key); err != nil {
			return err
		}
	}
}
