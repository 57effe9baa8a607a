package objstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// File is the embedded default backend: objects are files in a directory
// tree on a local disk or on NFS.
//
// Layout below the root:
//
//	FORMAT                       "archip-file-store 1"
//	tmp/                         files being written; renamed or linked away
//	obj/<dirs of name>/@<xx>/<last component of name>/<generation>
//
// An object a/b/c lives in obj/a/b/@<xx>/c/, where xx is two hex digits of
// a hash of "c" (256 fan-out directories per level, so a million objects
// under one prefix make directories of a few thousand entries). That
// directory holds one file per generation, named by the generation number
// in 16 hex digits; the highest generation is the object and its number is
// the object's Version. A generation that is a symbolic link (to
// "deleted") is a tombstone: the object was deleted at that generation.
//
// # Compare-and-swap without locks
//
// Writes never rename over an existing generation. To replace an object
// at generation g a writer writes and fsyncs a temporary file, then
// link()s it to generation g+1 and fsyncs the directory. link() (and
// symlink() for tombstones) fails with EEXIST if the name exists, and it
// is atomic on local file systems and on NFS (the server performs it,
// which is why NFS lock files have been made with link() for decades);
// no flock or fcntl lock, which NFS may not honour, is used. So of two
// writers that both saw generation g, exactly one creates g+1.
//
// Old generations are pruned, oldest first, but generation k only once
// generation k+1 is PruneAge older than the newest one (times are the
// file server's own modification times, so host clocks do not matter).
// This gives two properties:
//   - a directory listing, which may miss entries added or removed while
//     it runs, always sees the newest generation that existed when it
//     started, unless it runs longer than PruneAge;
//   - a writer that saw generation g long ago could re-create a pruned
//     g+1. It finds out after its link: a higher generation exists and
//     its base g is gone (pruning is oldest first, so g went before
//     g+1). It then removes its file and reports a conflict. If g still
//     exists, g+1 was never pruned, the link was a real win, and a higher
//     generation is a later writer building on it.
//
// Directories of objects are never removed (deleting leaves a
// tombstone), so versions keep growing across Delete and Create.
//
// Put, Create, Swap and Delete are durable when they return. WriteAt
// changes the current generation in place; Sync fsyncs it and its
// directory.
type File struct {
	root  string
	hooks fileHooks
}

// fileHooks are seams for tests; nil members do nothing.
type fileHooks struct {
	beforeInstall func(dir string) // after the listing an install decided on, before it links
	syncDir       func(dir string) // every directory fsync
}

var (
	_ Store        = (*File)(nil)
	_ RangeWriter  = (*File)(nil)
	_ Syncer       = (*File)(nil)
	_ HandleOpener = (*File)(nil)
	_ Copier       = (*File)(nil)
)

const fileFormat = "archip-file-store 1\n"

// PruneAge is how long a superseded generation of a file-store object is
// kept once its successor exists. See the File type's comment.
const PruneAge = 10 * time.Second

// OpenFile opens the file store at dir, creating it if create is set and
// the directory holds no store yet.
func OpenFile(dir string, create bool) (*File, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: empty directory", ErrBadURL)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	f := &File{root: abs}
	b, err := os.ReadFile(filepath.Join(abs, "FORMAT"))
	switch {
	case err == nil:
		if string(b) != fileFormat {
			return nil, fmt.Errorf("%w: %s/FORMAT says %q, this program reads %q",
				ErrCorrupt, abs, strings.TrimSpace(string(b)), strings.TrimSpace(fileFormat))
		}
	case errors.Is(err, fs.ErrNotExist) && create:
		for _, d := range []string{"tmp", "obj"} {
			if err := ensureDir(filepath.Join(abs, d)); err != nil {
				return nil, mapErr(err)
			}
		}
		if err := f.writeDurable(filepath.Join(abs, "FORMAT"), []byte(fileFormat)); err != nil {
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: no store at %s (create one with 'archip store init' or any command that writes)", ErrNotFound, abs)
	default:
		return nil, mapErr(err)
	}
	f.cleanTmp()
	return f, nil
}

// Root returns the store's directory.
func (f *File) Root() string { return f.root }

// cleanTmp removes temporary files left by crashed writers. Only files
// older than an hour go, since other hosts sharing the directory may be
// writing.
func (f *File) cleanTmp() {
	ents, _ := os.ReadDir(filepath.Join(f.root, "tmp"))
	for _, e := range ents {
		if in, err := e.Info(); err == nil && time.Since(in.ModTime()) > time.Hour {
			os.Remove(filepath.Join(f.root, "tmp", e.Name()))
		}
	}
}

// dir returns the directory that holds the generations of name.
func (f *File) dir(name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	i := strings.LastIndexByte(name, '/')
	parent, last := name[:i+1], name[i+1:]
	h := fnv.New32a()
	h.Write([]byte(last))
	fan := fmt.Sprintf("@%02x", h.Sum32()&0xff)
	return filepath.Join(f.root, "obj", filepath.FromSlash(parent), fan, last), nil
}

type generation struct {
	num       uint64
	tombstone bool
}

func genName(n uint64) string { return fmt.Sprintf("%016x", n) }

// current returns the highest generation in dir (num 0 if none).
func current(dir string) (generation, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return generation{}, nil
	}
	if err != nil {
		return generation{}, mapErr(err)
	}
	var g generation
	for _, e := range ents {
		n, err := strconv.ParseUint(e.Name(), 16, 64)
		if err != nil || len(e.Name()) != 16 || n <= g.num {
			continue
		}
		g = generation{num: n, tombstone: e.Type()&fs.ModeSymlink != 0}
	}
	return g, nil
}

// openCurrent opens the live generation of name for reading.
func (f *File) openCurrent(name string, flag int) (*os.File, generation, error) {
	dir, err := f.dir(name)
	if err != nil {
		return nil, generation{}, err
	}
	for try := 0; ; try++ {
		g, err := current(dir)
		if err != nil {
			return nil, g, err
		}
		if g.num == 0 || g.tombstone {
			return nil, g, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		fh, err := os.OpenFile(filepath.Join(dir, genName(g.num)), flag, 0)
		if errors.Is(err, fs.ErrNotExist) && try < 100 {
			continue // replaced and pruned between the listing and the open
		}
		if err != nil {
			return nil, g, mapErr(err)
		}
		return fh, g, nil
	}
}

func (f *File) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := checkRange(p, off); err != nil {
		return err
	}
	fh, _, err := f.openCurrent(name, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer fh.Close()
	n, err := fh.ReadAt(p, off)
	if err != nil && err != io.EOF {
		return mapErr(err)
	}
	clear(p[n:])
	return nil
}

func (f *File) Get(ctx context.Context, name string) ([]byte, Version, error) {
	fh, g, err := f.openCurrent(name, os.O_RDONLY)
	if err != nil {
		return nil, 0, err
	}
	defer fh.Close()
	b, err := io.ReadAll(fh)
	if err != nil {
		return nil, 0, mapErr(err)
	}
	return b, Version(g.num), nil
}

type condition int

const (
	condAny    condition = iota // Put
	condAbsent                  // Create
	condVer                     // Swap
)

func (f *File) Put(ctx context.Context, name string, data []byte) (Version, error) {
	return f.install(ctx, name, data, condAny, 0, false)
}

func (f *File) Create(ctx context.Context, name string, data []byte) (Version, error) {
	return f.install(ctx, name, data, condAbsent, 0, false)
}

func (f *File) Swap(ctx context.Context, name string, data []byte, old Version) (Version, error) {
	if old == 0 {
		v, err := f.install(ctx, name, data, condAbsent, 0, false)
		if errors.Is(err, ErrExists) {
			err = fmt.Errorf("%w: %s exists", ErrConflict, name)
		}
		return v, err
	}
	return f.install(ctx, name, data, condVer, old, false)
}

func (f *File) Delete(ctx context.Context, name string) error {
	_, err := f.install(ctx, name, nil, condAny, 0, true)
	return err
}

// install links a new generation of name: the content data, or a
// tombstone. See the type's comment for why this is safe without locks.
func (f *File) install(ctx context.Context, name string, data []byte, cond condition, old Version, tombstone bool) (Version, error) {
	dir, err := f.dir(name)
	if err != nil {
		return 0, err
	}
	if cond == condAbsent {
		// Cheap early answer for put-if-absent of content that is
		// already stored (dedup): no temp file, no fsync.
		if g, err := current(dir); err == nil && g.num != 0 && !g.tombstone {
			return 0, fmt.Errorf("%w: %s", ErrExists, name)
		}
	}
	var tmp string
	if !tombstone {
		if tmp, err = f.writeTemp(data); err != nil {
			return 0, err
		}
		defer os.Remove(tmp)
	}
	if err := ensureDir(dir); err != nil {
		return 0, mapErr(err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		g, err := current(dir)
		if err != nil {
			return 0, err
		}
		live := g.num != 0 && !g.tombstone
		switch {
		case tombstone && !live:
			return 0, fmt.Errorf("%w: %s", ErrNotFound, name)
		case cond == condAbsent && live:
			return 0, fmt.Errorf("%w: %s", ErrExists, name)
		case cond == condVer && (!live || Version(g.num) != old):
			cur := Version(g.num)
			if !live {
				cur = 0
			}
			return 0, fmt.Errorf("%w: %s is at version %d, not %d", ErrConflict, name, cur, old)
		}
		if f.hooks.beforeInstall != nil {
			f.hooks.beforeInstall(dir)
		}
		next := g.num + 1
		target := filepath.Join(dir, genName(next))
		if tombstone {
			err = os.Symlink("deleted", target)
		} else {
			err = os.Link(tmp, target)
		}
		if errors.Is(err, fs.ErrExist) {
			if cond == condAny {
				continue // another writer won this generation; go again
			}
			return 0, f.lost(name, cond)
		}
		if err != nil {
			return 0, mapErr(err)
		}
		if err := syncDir(dir); err != nil {
			return 0, mapErr(err)
		}
		after, err := current(dir)
		if err != nil {
			return 0, err
		}
		if after.num > next && g.num > 0 && !exists(filepath.Join(dir, genName(g.num))) {
			// We re-created a pruned generation: see the type's comment.
			if st, err := os.Lstat(target); err == nil && tombstone == (st.Mode()&fs.ModeSymlink != 0) {
				os.Remove(target)
			}
			if cond == condAny {
				continue
			}
			return 0, f.lost(name, cond)
		}
		f.prune(dir, next)
		return Version(next), nil
	}
}

func (f *File) lost(name string, cond condition) error {
	if cond == condAbsent {
		return fmt.Errorf("%w: %s (created concurrently)", ErrExists, name)
	}
	return fmt.Errorf("%w: %s (changed concurrently)", ErrConflict, name)
}

// prune removes superseded generations below newest, oldest first, once
// their successor is PruneAge older than newest. A crash before the
// removals are durable is harmless: the highest generation wins.
func (f *File) prune(dir string, newest uint64) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type gen struct {
		num uint64
		mod time.Time
	}
	var gens []gen
	var newestMod time.Time
	for _, e := range ents {
		n, err := strconv.ParseUint(e.Name(), 16, 64)
		if err != nil || len(e.Name()) != 16 || n > newest {
			continue
		}
		in, err := e.Info()
		if err != nil {
			continue
		}
		gens = append(gens, gen{n, in.ModTime()})
		if n == newest {
			newestMod = in.ModTime()
		}
	}
	if newestMod.IsZero() {
		return
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i].num < gens[j].num })
	for i := 0; i+1 < len(gens) && gens[i+1].num < newest; i++ {
		if newestMod.Sub(gens[i+1].mod) < PruneAge {
			return
		}
		if err := os.Remove(filepath.Join(dir, genName(gens[i].num))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return
		}
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// writeTemp writes data to a new temporary file and fsyncs it.
func (f *File) writeTemp(data []byte) (string, error) {
	var rnd [12]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(f.root, "tmp", hex.EncodeToString(rnd[:]))
	if err := f.writeDurable(tmp, data); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// writeDurable creates path with data, checking the byte count and
// fsyncing before it returns.
func (f *File) writeDurable(path string, data []byte) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return mapErr(err)
	}
	n, err := fh.Write(data)
	if err == nil && n != len(data) {
		err = io.ErrShortWrite
	}
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	return mapErr(err)
}

func (f *File) Stat(ctx context.Context, name string) (Info, error) {
	fh, g, err := f.openCurrent(name, os.O_RDONLY)
	if err != nil {
		return Info{}, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return Info{}, mapErr(err)
	}
	return Info{Name: name, Size: st.Size(), Version: Version(g.num), ModTime: st.ModTime()}, nil
}

func (f *File) List(ctx context.Context, prefix string, fn func(Info) error) error {
	// Walk from the deepest directory the prefix names completely.
	base := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = prefix[:i+1]
	}
	if base != "" {
		if err := ValidName(strings.TrimSuffix(base, "/")); err != nil {
			return nil // no object can have such a name
		}
	}
	return f.walk(ctx, filepath.Join(f.root, "obj", filepath.FromSlash(base)), base, prefix, fn)
}

// walk lists the objects below the directory path, whose names start with
// namePrefix (the name of path's directory, ending in a slash, or "").
func (f *File) walk(ctx context.Context, path, namePrefix, want string, fn func(Info) error) error {
	ents, err := os.ReadDir(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return mapErr(err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !e.IsDir() {
			continue
		}
		if !strings.HasPrefix(e.Name(), "@") {
			sub := namePrefix + e.Name() + "/"
			if strings.HasPrefix(sub, want) || strings.HasPrefix(want, sub) {
				if err := f.walk(ctx, filepath.Join(path, e.Name()), sub, want, fn); err != nil {
					return err
				}
			}
			continue
		}
		objs, err := os.ReadDir(filepath.Join(path, e.Name()))
		if err != nil {
			return mapErr(err)
		}
		var names []string
		for _, o := range objs {
			if name := namePrefix + o.Name(); strings.HasPrefix(name, want) {
				names = append(names, name)
			}
		}
		if err := StatEach(ctx, f, names, fn); err != nil {
			return err
		}
	}
	return nil
}

func (f *File) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	h, err := f.OpenHandle(ctx, name, true, true)
	if err != nil {
		return err
	}
	err = h.WriteAt(p, off)
	if cerr := h.Close(); err == nil {
		err = mapErr(cerr)
	}
	return err
}

// OpenHandle opens the current generation of name.
func (f *File) OpenHandle(ctx context.Context, name string, create, writable bool) (Handle, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	for {
		fh, _, err := f.openCurrent(name, flag)
		if IsNotExist(err) && create {
			// Create an empty generation, then open it. Losing the race
			// to another creator is fine: we then open theirs.
			if _, err := f.install(ctx, name, nil, condAbsent, 0, false); err != nil && !errors.Is(err, ErrExists) {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		return fileHandle{fh}, nil
	}
}

// Copy copies src to a new dst with copy_file_range, which copies inside
// the kernel (or shares extents where the file system can), falling back
// to read and write where it is not supported.
func (f *File) Copy(ctx context.Context, src, dst string) error {
	in, _, err := f.openCurrent(src, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer in.Close()
	if _, err := f.install(ctx, dst, nil, condAbsent, 0, false); err != nil {
		return err
	}
	out, _, err := f.openCurrent(dst, os.O_WRONLY)
	if err != nil {
		return err
	}
	defer out.Close()
	// (*os.File).ReadFrom uses copy_file_range between files and falls
	// back to a plain copy by itself.
	if _, err := out.ReadFrom(in); err != nil {
		return mapErr(err)
	}
	return nil
}

type fileHandle struct{ f *os.File }

func (h fileHandle) ReadAt(p []byte, off int64) error {
	if err := checkRange(p, off); err != nil {
		return err
	}
	n, err := h.f.ReadAt(p, off)
	if err != nil && err != io.EOF {
		return mapErr(err)
	}
	clear(p[n:])
	return nil
}

func (h fileHandle) WriteAt(p []byte, off int64) error {
	if err := checkRange(p, off); err != nil {
		return err
	}
	n, err := h.f.WriteAt(p, off)
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	return mapErr(err)
}

func (h fileHandle) Sync() error  { return mapErr(h.f.Sync()) }
func (h fileHandle) Close() error { return h.f.Close() }

func (f *File) Sync(ctx context.Context, name string) error {
	fh, _, err := f.openCurrent(name, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer fh.Close()
	return mapErr(fh.Sync())
}

func (f *File) Close() error { return nil }

// ensureDir creates dir and its missing parents, fsyncing each parent
// that got a new entry so the new directories survive a crash.
func ensureDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := ensureDir(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// mapErr turns OS errors into the package's sentinels, keeping the cause.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: %v", ErrNoSpace, err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w: %v", ErrReadOnly, err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	return fmt.Errorf("objstore: %w", err)
}
