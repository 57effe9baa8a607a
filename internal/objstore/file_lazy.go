package objstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// lazyCreate is an object created by OpenHandleLazy that no Sync has made
// durable yet: its directory, and the number of its note (a note made
// again after a Sync began is not dropped by that Sync).
type lazyCreate struct {
	dir string
	n   uint64
}

// maxLazy bounds f.lazy: past it, OpenHandleLazy creates durably (costing
// fsyncs, not safety), so that objects created and never synced (a
// writer that discards its writes) do not grow it without end.
const maxLazy = 1 << 16

// OpenHandleLazy opens name for writing, creating it empty if absent
// without syncing anything: no fsync of the (empty) temporary file, none
// of the directory it is linked into, none of the directories made for it.
// The next Sync of the object (File.Sync, or Sync of any handle from this
// File) fsyncs the object's directory and the parents of those of its
// path not yet durable, after the file's data: the same fsyncs a Create
// makes, moved to where the writer makes its data durable anyway. See
// the File type's comment (Durability) for what a crash before that
// leaves.
func (f *File) OpenHandleLazy(ctx context.Context, name string) (Handle, error) {
	for {
		fh, _, err := f.openCurrent(name, os.O_RDWR)
		if IsNotExist(err) {
			if _, err := f.install(ctx, name, nil, condAbsent, 0, false, true); err != nil && !errors.Is(err, ErrExists) {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		return fileHandle{fh, f, name}, nil
	}
}

// deferCreate notes that the object name, just linked in dir, is not
// durable yet; false (nothing noted) if too many are.
func (f *File) deferCreate(name, dir string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.lazy) >= maxLazy {
		return false
	}
	f.lazyN++
	f.lazy[name] = lazyCreate{dir: dir, n: f.lazyN}
	return true
}

// ForgetLazy drops the notes of names' pending creates (see LazyCreator).
func (f *File) ForgetLazy(names []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, name := range names {
		delete(f.lazy, name)
	}
}

// beginLazy notes a lazy create of name in flight; endLazy ends it.
func (f *File) beginLazy(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.making[name]++
}

func (f *File) endLazy(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.making[name]--; f.making[name] <= 0 {
		delete(f.making, name)
	}
}

// madeDurable forgets a lazy create of name: a durable write of the name
// (a tombstone included) has synced its directory and path since.
func (f *File) madeDurable(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.lazy, name)
}

// drainLazy makes a lazy create of name durable, if there is one: its
// directory (the link) and every directory of its path not yet durable,
// at once, as an install does after its link. The caller has made the
// file's data durable. A directory gone meanwhile (the object deleted
// and its directory removed) is ErrNotFound.
//
// A create in flight (linked, perhaps, and not noted yet: a write by
// name may have reached it) has its directories synced too, and its
// note is left for a later Sync: this one cannot tell whether its
// fsyncs began after the link.
func (f *File) drainLazy(name string) error {
	f.mu.Lock()
	lc, ok := f.lazy[name]
	making := f.making[name] > 0
	f.mu.Unlock()
	if !ok && !making {
		return nil
	}
	if !ok {
		dir, err := f.dir(name)
		if err != nil {
			return err
		}
		lc = lazyCreate{dir: dir}
	}
	perr := make(chan error, 1)
	go func() { perr <- f.durableDir(lc.dir, false) }()
	err := f.syncDir(lc.dir)
	if e := <-perr; err == nil {
		err = e
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return mapErr(err)
	}
	if !ok {
		return nil // (a directory gone: the create in flight makes it again)
	}
	f.mu.Lock()
	if cur, ok := f.lazy[name]; ok && cur.n == lc.n {
		delete(f.lazy, name)
	}
	f.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %s (deleted before it was synced)", ErrNotFound, name)
	}
	return nil
}

// Fsyncs returns how many fsyncs (and fdatasyncs) of files and
// directories this File has made: for tests and diagnostics.
func (f *File) Fsyncs() int64 { return f.fsyncs.Load() }

// LazyPending returns the names of the objects created by OpenHandleLazy
// whose creation no Sync has made durable yet.
func (f *File) LazyPending() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, 0, len(f.lazy))
	for name := range f.lazy {
		names = append(names, name)
	}
	return names
}

// CrashLazy does to the store's directory what a machine crash at this
// moment may do to the objects whose creation is pending (LazyPending),
// and only to them, each drawn from rng: kept; absent, its directory's
// entry in its parent lost (the directory was renamed into place, and
// that rename not synced); absent, the link of its generation lost (the
// directory holds its "new" base, as a crashed creator leaves it); or
// linked with its data lost, empty or zeros to its size (its link
// durable before its data, which no fsync orders); or absent, its
// directory left empty (the link lost, the removal of the base it was
// linked on durable). For crash tests: the File must not be used
// afterwards; open the directory again.
func (f *File) CrashLazy(rng *rand.Rand) error {
	f.mu.Lock()
	pending := make(map[string]string, len(f.lazy))
	for name, lc := range f.lazy {
		pending[name] = lc.dir
	}
	f.mu.Unlock()
	for name, dir := range pending {
		g, err := f.current(dir)
		if err != nil {
			return err
		}
		if g.num == 0 || g.tombstone {
			continue
		}
		gen := filepath.Join(dir, genName(g.num))
		switch rng.IntN(5) {
		case 0:
		case 1:
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("objstore: crash %s: %w", name, err)
			}
		case 2:
			if err := os.Remove(gen); err != nil {
				return fmt.Errorf("objstore: crash %s: %w", name, err)
			}
			if err := os.Symlink(newLink+"."+randomName(), filepath.Join(dir, genName(g.num-1))); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("objstore: crash %s: %w", name, err)
			}
		case 3:
			in, err := os.Stat(gen)
			if err != nil {
				return fmt.Errorf("objstore: crash %s: %w", name, err)
			}
			size := int64(0)
			if rng.IntN(2) == 0 {
				size = in.Size()
			}
			if err := os.Truncate(gen, 0); err != nil {
				return fmt.Errorf("objstore: crash %s: %w", name, err)
			}
			if err := os.Truncate(gen, size); err != nil {
				return fmt.Errorf("objstore: crash %s: %w", name, err)
			}
		case 4:
			// The link lost, and the removal of the base it was linked
			// on durable: an empty directory.
			if err := os.Remove(gen); err != nil {
				return fmt.Errorf("objstore: crash %s: %w", name, err)
			}
		}
	}
	return nil
}
