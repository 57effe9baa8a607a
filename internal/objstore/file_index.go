package objstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The file store's list index of the catalog (names under cat/), so that
// a page of an ordered listing (OrderedLister) costs the page and the
// index's depth instead of every name: object directories are spread over
// hash fan-out directories, in no order.
//
// Layout: idx/indexed (a marker: every catalog object has its key,
// written by RepairIndex only, which the catalog runs before it writes
// format 4: not at a store's creation, since binaries that keep no index
// may write its catalog first) and
// idx/cat/, an adaptive trie of directories. A level is a directory that
// stands for a prefix of names: idx/cat/ for "cat/", and its
// subdirectory @<c> for the level's prefix followed by the byte c. The key
// of the name N is an empty file "+<rest>" in one level along N's path,
// rest being N after the level's prefix ("/" written "=", which no name
// holds; "+" alone when N is the level's prefix). A name has its key if
// such a file is at any level along its path.
//
//   - A key is set at the deepest level along the path that exists, or
//     deeper where "+<rest>" would pass the 255-byte limit of a file name
//     (the levels between are made), and its level is fsynced; if a
//     split moved the key down before that fsync (which may have made
//     only its removal durable), so is the level it is in now.
//   - A level past splitBytes (its size: a cheap proxy), or after
//     every splitEvery-th key a process set in it, holding over
//     splitKeys keys is split: the level of each first byte of their
//     rests is made (mkdir, the parent fsynced), each key is renamed into
//     it, and it is fsynced; then the keys a split of it moved on
//     meanwhile are fsynced where they are, and last the level. Levels
//     are never removed.
//   - A key is removed at every level along its path, from the top down.
//   - A key is read back from the top down.
//   - A listing reads a level (twice: a split across one read may hide
//     a key it moves and the level it moves it to), then the levels
//     below it in byte order, merging each with the keys of the level
//     above that belong to it.
//
// Keys only move down, by rename(), which moves a key present or fails:
// so a top-down sweep (a read-back, a removal, a listing) that does not
// find a key at a level finds it below if it is there, and a splitter
// that stalls between reading a level and renaming a key only ever moves
// a key that is there (maybe set again since) to a level where it still
// counts. A level is made before any key enters it, so a sweep that
// passes a level sees the level below that a key moved into. The order
// of keys and objects is the RADOS index's (IndexOps): see
// docs/format.md for the crash and stall argument.
const (
	indexedPrefix = "cat/"
	idxMarker     = "indexed"
	maxKeyRest    = 254 // "+" and the rest within a file name
)

// Split bounds of a level (SetIndexSplit changes them, for tests), and
// how many keys a process sets in a level between two reads of it to see
// whether to split it, whatever its size.
const (
	defaultSplitBytes = 32 << 10
	defaultSplitKeys  = 512
	splitEvery        = 64
)

func isIndexed(name string) bool { return strings.HasPrefix(name, indexedPrefix) }

func (f *File) idxRoot() string { return filepath.Join(f.root, "idx", "cat") }

func keyFile(level, rest string) string {
	return filepath.Join(level, "+"+strings.ReplaceAll(rest, "/", "="))
}

func childLevel(level string, c byte) string {
	return filepath.Join(level, "@"+strings.ReplaceAll(string(c), "/", "="))
}

func (f *File) indexOps() IndexOps {
	return IndexOps{
		Set: func(_ context.Context, name string) error { return f.setKey(name, true) },
		Has: func(_ context.Context, name string) (bool, error) { return f.hasKey(name) },
		Rm:  func(_ context.Context, name string) error { return f.rmKey(name) },
		Exists: func(ctx context.Context, name string) (bool, error) {
			_, err := f.Stat(ctx, name)
			if IsNotExist(err) {
				return false, nil
			}
			return err == nil, err
		},
		Hook: f.hooks.indexStep,
	}
}

// setKey sets the key of name; with sync, durably.
func (f *File) setKey(name string, sync bool) error {
	level, err := f.createKey(name)
	if err != nil {
		return err
	}
	if !sync {
		return f.maybeSplit(level)
	}
	return f.keyDurable(name, level)
}

// createKey creates the key file of name (see the index's comment) and
// returns its level.
func (f *File) createKey(name string) (string, error) {
	level, rest := f.idxRoot(), name[len(indexedPrefix):]
	if err := f.ensureDir(level); err != nil {
		return "", mapErr(err)
	}
	for rest != "" {
		c := childLevel(level, rest[0])
		_, err := os.Lstat(c)
		if errors.Is(err, fs.ErrNotExist) && len(rest) > maxKeyRest {
			err = f.ensureDir(c)
		}
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return "", mapErr(err)
		}
		level, rest = c, rest[1:]
	}
	k, err := os.OpenFile(keyFile(level, rest), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return "", mapErr(err)
	}
	k.Close()
	return level, nil
}

// keyDurable makes name's key, created in level, durable, with the
// level's own entry, and splits the level if it grew past its bounds.
func (f *File) keyDurable(name, level string) error {
	if err := f.durableDir(level, true); err != nil {
		return mapErr(err)
	}
	if err := f.syncKey(name, level); err != nil {
		return err
	}
	return f.maybeSplit(level)
}

// syncKey fsyncs level, which held name's key before the call, and then,
// if a split moved the key on before that fsync (which may then have
// made its removal from level durable, and not yet its arrival below),
// the level the key is in now, until the key is where an fsync that began
// after it got there ran. A key removed meanwhile needs nothing.
func (f *File) syncKey(name, level string) error {
	for {
		if err := f.syncDir(level); err != nil {
			return mapErr(err)
		}
		at, err := f.keyLevel(name)
		if err != nil || at == "" || at == level {
			return err
		}
		if err := f.durableDir(at, true); err != nil {
			return mapErr(err)
		}
		level = at
	}
}

// hasKey reports whether name has its key at some level along its path.
func (f *File) hasKey(name string) (bool, error) {
	at, err := f.keyLevel(name)
	return at != "", err
}

// keyLevel returns the first level along name's path, from the top down,
// that holds its key, or "" if none does.
func (f *File) keyLevel(name string) (string, error) {
	level, rest := f.idxRoot(), name[len(indexedPrefix):]
	for {
		if len(rest) <= maxKeyRest {
			_, err := os.Lstat(keyFile(level, rest))
			if err == nil {
				return level, nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return "", mapErr(err)
			}
		}
		if rest == "" {
			return "", nil
		}
		c := childLevel(level, rest[0])
		if _, err := os.Lstat(c); errors.Is(err, fs.ErrNotExist) {
			return "", nil
		} else if err != nil {
			return "", mapErr(err)
		}
		level, rest = c, rest[1:]
	}
}

// rmKey removes the key of name at every level along its path, from the
// top down.
func (f *File) rmKey(name string) error {
	level, rest := f.idxRoot(), name[len(indexedPrefix):]
	for {
		if len(rest) <= maxKeyRest {
			if err := os.Remove(keyFile(level, rest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return mapErr(err)
			}
		}
		if rest == "" {
			return nil
		}
		c := childLevel(level, rest[0])
		if _, err := os.Lstat(c); errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return mapErr(err)
		}
		level, rest = c, rest[1:]
	}
}

// maybeSplit splits level if it grew past the bounds (see the index's
// comment).
func (f *File) maybeSplit(level string) error {
	in, err := os.Stat(level)
	if err != nil || in.Size() < f.splitBytes && !f.setCounted(level) {
		return nil
	}
	names, err := readNames(level)
	if err != nil {
		return nil
	}
	byByte := map[byte][]string{}
	n := 0
	for _, e := range names {
		if len(e) > 1 && e[0] == '+' {
			byByte[e[1]] = append(byByte[e[1]], e)
			n++
		}
	}
	if n <= f.splitKeys {
		return nil
	}
	pre := f.levelPrefix(level)
	for c, keys := range byByte {
		if c == '=' {
			c = '/'
		}
		child := childLevel(level, c)
		if err := f.ensureDir(child); err != nil {
			return mapErr(err)
		}
		for _, k := range keys {
			if f.hooks.beforeSplitMove != nil {
				f.hooks.beforeSplitMove(filepath.Join(level, k))
			}
			err := os.Rename(filepath.Join(level, k), filepath.Join(child, "+"+k[2:]))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return mapErr(err)
			}
		}
		if err := f.syncDir(child); err != nil {
			return mapErr(err)
		}
		// A split of child (of another process) may have moved keys on
		// before that fsync: they are made durable where they went
		// before the fsync of level makes their removal durable.
		for _, k := range keys {
			_, err := os.Lstat(filepath.Join(child, "+"+k[2:]))
			if err == nil {
				continue
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return mapErr(err)
			}
			name := pre + strings.ReplaceAll(k[1:], "=", "/")
			at, err := f.keyLevel(name)
			if err != nil {
				return err
			}
			if at != "" && at != child {
				if err := f.syncKey(name, at); err != nil {
					return err
				}
			}
		}
	}
	return mapErr(f.syncDir(level))
}

// setCounted counts a key this process set in level, and reports
// whether it is the splitEvery-th since the last: a level is read to be
// split then whatever its size says, since a directory's size may grow
// slowly with its entries (ZFS counts entries; ext4 takes 12 bytes for a
// short name).
func (f *File) setCounted(level string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.setCounts == nil || len(f.setCounts) >= maxDurable {
		f.setCounts = map[string]int{}
	}
	f.setCounts[level]++
	if f.setCounts[level] < splitEvery {
		return false
	}
	delete(f.setCounts, level)
	return true
}

// levelPrefix returns the prefix of the names whose keys level holds.
func (f *File) levelPrefix(level string) string {
	rel, err := filepath.Rel(f.idxRoot(), level)
	if err != nil || rel == "." {
		return indexedPrefix
	}
	var b strings.Builder
	b.WriteString(indexedPrefix)
	for _, c := range strings.Split(rel, string(filepath.Separator)) {
		b.WriteString(strings.ReplaceAll(c[1:], "=", "/"))
	}
	return b.String()
}

// indexed reports whether the index names every catalog object (its
// marker exists), remembering a yes.
func (f *File) indexed() (bool, error) {
	if f.idxReady.Load() {
		return true, nil
	}
	_, err := os.Lstat(filepath.Join(f.root, "idx", idxMarker))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, mapErr(err)
	}
	f.idxReady.Store(true)
	return true, nil
}

// markIndexed writes the index's marker, durably.
func (f *File) markIndexed() error {
	dir := filepath.Join(f.root, "idx")
	if err := f.ensureDir(dir); err != nil {
		return err
	}
	m, err := os.OpenFile(filepath.Join(dir, idxMarker), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	m.Close()
	if err := f.syncDir(dir); err != nil {
		return err
	}
	f.idxReady.Store(true)
	return nil
}

// ListNamesAfter is ListNames in byte order from after on
// (OrderedLister). Under cat/, once the index is complete (see above),
// it reads the index as fn takes the names, so a page costs the page and
// the index's depth; the names may include ghosts (keys of objects a
// crashed or failed creator left absent), which readers take as absent.
// Elsewhere it walks and sorts.
func (f *File) ListNamesAfter(ctx context.Context, prefix, after string, fn func(string) error) error {
	if isIndexed(prefix) {
		ok, err := f.indexed()
		if err != nil {
			return err
		}
		if ok {
			return f.listLevel(ctx, f.idxRoot(), indexedPrefix, nil, prefix, after, fn)
		}
	}
	return SortedNamesAfter(ctx, f, prefix, after, fn)
}

// listLevel lists the level at path, whose names start with pre, merged
// with inherited (keys of the levels above that belong to it), in order:
// the names under prefix and after after.
func (f *File) listLevel(ctx context.Context, path, pre string, inherited []string, prefix, after string, fn func(string) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.hooks.indexReadDir != nil {
		f.hooks.indexReadDir(path)
	}
	// A read of a directory that changes meanwhile may leave out what
	// is added or removed during it (POSIX), so a split running across
	// it may hide both a key it moves out and the level it moves it
	// into. That level was made before the first read ended, and levels
	// stay: a second read sees it.
	var ents []string
	for range 2 {
		e, err := readNames(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return mapErr(err)
		}
		if f.hooks.indexNames != nil {
			e = f.hooks.indexNames(path, e)
		}
		ents = append(ents, e...)
	}
	if f.hooks.indexRead != nil {
		f.hooks.indexRead(len(ents))
	}
	keys := inherited
	children := map[byte]bool{}
	for _, e := range ents {
		if e == "" {
			continue
		}
		rest := strings.ReplaceAll(e[1:], "=", "/")
		switch e[0] {
		case '+':
			if n := pre + rest; n > after && strings.HasPrefix(n, prefix) {
				keys = append(keys, n)
			}
		case '@':
			if len(rest) != 1 {
				continue
			}
			x := pre + rest
			if !strings.HasPrefix(x, prefix) && !strings.HasPrefix(prefix, x) {
				continue
			}
			if after > x && !strings.HasPrefix(after, x) {
				continue // every name below it is before after
			}
			children[rest[0]] = true
		}
	}
	sort.Strings(keys)
	keys = dedup(keys)
	i := 0
	for ; i < len(keys) && keys[i] == pre; i++ {
		if err := fn(keys[i]); err != nil {
			return err
		}
	}
	var bytes []byte
	for c := range children {
		bytes = append(bytes, c)
	}
	for _, k := range keys[i:] {
		bytes = append(bytes, k[len(pre)])
	}
	sort.Slice(bytes, func(a, b int) bool { return bytes[a] < bytes[b] })
	for j, c := range bytes {
		if j > 0 && bytes[j-1] == c {
			continue
		}
		k := i
		for k < len(keys) && keys[k][len(pre)] == c {
			k++
		}
		group := keys[i:k:k]
		i = k
		if children[c] {
			if err := f.listLevel(ctx, childLevel(path, c), pre+string(c), group, prefix, after, fn); err != nil {
				return err
			}
			continue
		}
		for _, n := range group {
			if err := fn(n); err != nil {
				return err
			}
		}
	}
	return nil
}

func dedup(s []string) []string {
	out := s[:0]
	for i, x := range s {
		if i == 0 || s[i-1] != x {
			out = append(out, x)
		}
	}
	return out
}

// RepairIndex makes the index name exactly the catalog's objects
// (IndexRepairer), as gc and the catalog's upgrade need: it sets the key
// of every object under cat/ (a List: it reads each object's directory)
// that lacks one, makes the keys it set durable (an fsync per level
// touched), removes the ghosts it finds as a delete does (the key
// removed, then the object stat'ed and the key set again if it exists by
// then), and writes the index's marker. It covers what writers older
// than the index (catalog format 3) created, and the crash state the
// order of writes leaves.
func (f *File) RepairIndex(ctx context.Context) error {
	fail := func(err error) error { return fmt.Errorf("objstore: repair the catalog's index: %w", err) }
	names := map[string]bool{}
	if err := f.List(ctx, indexedPrefix, func(in Info) error {
		names[in.Name] = true
		return nil
	}); err != nil {
		return fail(err)
	}
	touched := map[string]bool{}
	set := map[string]string{} // name → the level its key was set in
	for n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		has, err := f.hasKey(n)
		if err != nil {
			return fail(err)
		}
		if has {
			continue
		}
		level, err := f.createKey(n)
		if err != nil {
			return fail(err)
		}
		touched[level] = true
		set[n] = level
		if err := f.maybeSplit(level); err != nil {
			return fail(err)
		}
	}
	for level := range touched {
		if err := f.durableDir(level, true); err != nil {
			return fail(mapErr(err))
		}
		if err := f.syncDir(level); err != nil {
			return fail(mapErr(err))
		}
	}
	for n, level := range set {
		// Moved down by a split before the fsync (syncKey)?
		if _, err := os.Lstat(keyFile(level, n[len(f.levelPrefix(level)):])); err == nil {
			continue
		}
		if at, err := f.keyLevel(n); err != nil {
			return fail(err)
		} else if at != "" && at != level {
			if err := f.syncKey(n, at); err != nil {
				return fail(err)
			}
		}
	}
	var ghosts []string
	if err := f.listLevel(ctx, f.idxRoot(), indexedPrefix, nil, indexedPrefix, "", func(n string) error {
		if !names[n] {
			ghosts = append(ghosts, n)
		}
		return nil
	}); err != nil {
		return fail(err)
	}
	ops := f.indexOps()
	for _, n := range ghosts {
		if err := ops.Deleted(ctx, n); err != nil {
			return fail(err)
		}
	}
	if err := f.markIndexed(); err != nil {
		return fail(mapErr(err))
	}
	return nil
}

// RepairFileIndexes is RepairIndexes for the file store's index alone
// (through parts, wrappers and IndexForwarders): what the catalog's step
// to format 4, which only the file store's index needs, runs.
func RepairFileIndexes(ctx context.Context, s Store) error {
	return RepairIndexes(context.WithValue(ctx, onlyFileKey{}, true), s)
}

type onlyFileKey struct{}

// IndexForwarder is an IndexRepairer whose RepairIndex repairs another
// store's index with RepairIndexes (a part of package pools):
// RepairFileIndexes goes through it, and skips other IndexRepairers.
type IndexForwarder interface {
	IndexRepairer
	ForwardsIndex()
}

// skipRepair reports whether RepairIndexes skips r under ctx.
func skipRepair(ctx context.Context, r IndexRepairer) bool {
	if only, _ := ctx.Value(onlyFileKey{}).(bool); !only {
		return false
	}
	switch r.(type) {
	case *File, IndexForwarder:
		return false
	}
	return true
}
