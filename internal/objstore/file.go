package objstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
//	idx/indexed, idx/cat/...     the catalog's list index (see file_index.go)
//
// An object a/b/c lives in obj/a/b/@<xx>/c/, where xx is two hex digits of
// a hash of "c" (256 fan-out directories per level, so a million objects
// under one prefix make directories of a few thousand entries). That
// directory holds one entry per generation, named by the generation number
// in 16 hex digits; the highest generation is the object and its number is
// the object's Version. A generation that is a symbolic link means absent:
// a link to "deleted.<nonce>" is a tombstone, one to "new.<nonce>" the base
// of a directory that nothing has been written to yet, one to
// "gone.<nonce>" a seal: the directory is being moved away (see Removing
// a deleted object's directory).
//
// # Compare-and-swap without locks
//
// Writes never rename over an existing generation. To replace an object
// whose newest entry (its base) is generation g, a writer writes and
// fsyncs a temporary file, then link()s it to generation g+1 and fsyncs
// the directory. link() (and symlink() for tombstones) fails with EEXIST
// if the name exists, and it is atomic on local file systems and on NFS
// (the server performs it, which is why NFS lock files have been made with
// link() for decades); no flock or fcntl lock, which NFS may not honour, is
// used. So of two writers that both saw generation g, exactly one creates
// g+1, as long as g+1 was never removed.
//
// Generations are removed oldest first, never out of order, and the
// newest entry of the directory at an object's path is never removed:
// a directory leaves its path only whole, renamed away once sealed (see
// below; the one exception, a young seal taken back by its collector,
// has nothing linked on it). So the highest name ever linked in a
// directory is there as long as the directory is at its path (I).
//
// A writer whose view is old (a stall between its listing and its link,
// or NFS attribute caching) may link a g+1 that existed and was removed,
// or link into a directory that was moved away after it looked it up. So
// every writer checks, after its link, that its base g is still the same
// file at the object's path (fileID: inode, type, modification time,
// size, link target with its nonce). A removed file never comes back. If
// g is there, no g+1 was ever removed (g+1 goes only after g), and none
// existed when the writer listed g as newest: the link was a real win.
//
// If g is gone soon after the listing (see below for late), the link
// lost: it took the place of a removed generation, below the highest name
// of the directory (I), or it landed in a directory moved away, which
// nobody reads by path again. Either way no reader has seen it, so the
// writer removes it (if it is still its own) and starts over from a new
// listing: a Swap then finds another version and reports a conflict, a
// Create finds the object (ErrExists: nothing of it was seen) or links
// again on what is there now. The check trusts nothing the writer saw
// before its link, so it holds however stale the view.
//
// Every link has a base. An object whose directory is absent (or empty)
// gets one by renaming into place a directory prepared under tmp/ that
// holds a single "new" link, numbered by the file server's time in
// nanoseconds plus a random part below 2^20 (about a millisecond, less
// than a tick of a coarse clock, so directories prepared in one tick are
// numbered apart). rename() fails if a non-empty directory is there (and
// replaces an empty one), so of several creators one installs its
// directory, and then all of them link on it. The directories made for a
// new object (parents, its own) are synced with its link, at once (see
// Durability).
//
// # Removing generations
//
// Times are the file server's change times (link() sets it), so host
// clocks do not matter. A generation k is removed ("collected") once the
// entry after it was linked PruneAge before the newest one, or before the
// server's time when a listing collects: the writer of k+1 has had
// PruneAge to check k, and a reader that listed k as newest to open it.
// The base of the newest generation stays (unless the newest is a
// tombstone), so a writer whose entry is the newest finds its base however
// long it stalled before its check. A writer that stalled PruneAge before
// its check and was superseded meanwhile may find its base gone, and then
// cannot tell its win from a loss: its entry may have been read and built
// on. It leaves the entry (below the newest it is read by nobody, and goes
// as an old generation) and answers an error that leaves the outcome
// unknown (see Store), not ErrConflict, and does not retry (a Delete
// retried so would delete what was created after its tombstone). A check
// that fails sooner than PruneAge/2 after the listing is a loss as above
// (the base cannot have been collected as old since). A listing sees the
// newest generation that existed when it started unless it runs longer
// than PruneAge.
//
// A writer that has checked its base also removes it at once if nothing
// older is left and it is a symbolic link (nobody reads an absent
// object's entry) or its own write is a tombstone (nobody reads a deleted
// object's data): nobody else built on that base. So an object written
// once holds one file, and Delete of it frees its data at once.
//
// # Removing a deleted object's directory
//
// Delete links a tombstone like any write. When nothing older is left and
// the tombstone t's number is below the server's time (else a later
// listing does it), the deleter (or a listing) removes the directory:
//
//  1. It seals it: symlink()s a "gone" link at t+1, the very name a
//     writer on the tombstone links, so that of the seal and a write on
//     t exactly one wins. It checks, like a writer, that t is still
//     there, and that the seal is the newest entry at the path (not a
//     stale link below the newest, nor one in a directory made since).
//  2. It renames the directory into tmp/, fsyncs the parent, so that
//     nothing in it is ever read again, also after a crash, and removes
//     its entries (oldest first) and then it; then empty parents go.
//
// Writers do not link on a seal: they wait for the directory to go
// (rename() is a few system calls after the seal) and then make a new
// one. Only the seal's winner moves a sealed directory, so the rename
// moves the directory it sealed. A link that lands in the moved directory
// late (its writer looked the path up before the rename) is read by
// nobody, since every read and check goes by path; its writer finds its
// base gone at the path and starts over. (If its lookups still reach the
// moved directory, as cached ones on NFS may, and it finds its base there,
// its link failed: that directory too is emptied oldest first, so the
// name above a base still there was never freed.) Readers see a seal as absent,
// like a tombstone, and so do older versions of this program (the format
// is unchanged); but hosts sharing a store must all run a version that
// seals: an older one removes a newest tombstone in place.
//
// Why not remove the tombstone in place, then the empty directory (what
// this store did): between a collection's last read of the directory and
// its removal of t, a writer on t links t+1, visible at once; the
// collection removes t; another host reads t+1 and swaps on it; the
// writer finds its base gone and, taking its entry for a loss, writes
// again over the swap (a Create answered ErrExists for a write that was
// read). And a name freed at once (a symbolic-link base, a tombstone's
// base), here t-1 after a create on t-2 and a delete, could be linked
// again by a writer that listed t-2 before them, just before t went: it
// became the newest, and a Swap from the version t-1 of the deleted
// content succeeded on it (ABA). Both come
// from a moment when the highest name of a directory at its path is gone
// while others may link there (I); moving the directory whole leaves no
// such moment, and sealing first makes the move a compare-and-swap that a
// write on t refutes. Putting a moved directory back (if something was
// linked on the tombstone) would not do: a creator may have made a new
// directory at the path meanwhile.
//
// A seal whose winner crashed (or stalled tmpAge/2 between sealing and
// renaming, when it gives up) counts as a tombstone once it is tmpAge
// old: writers link on it, a listing seals it and moves the directory.
// The winner checks its time right before the rename; a stall of tmpAge/2
// inside those few system calls could move a directory a writer built on
// the old seal, like the other stalls of an hour this store does not
// survive. A crash before the rename is durable leaves the sealed
// directory (absent); one after leaves the moved one in tmp/, removed
// with crashed writers' files. A seal that lost, or whose rename failed
// (no space to grow tmp/, an I/O error), is taken back at once by its
// collector: nothing is linked on a young seal, and what is below it is
// still there, so it is as if it had never been; left, it would keep
// writers of the name waiting an hour, and a lost one that landed above
// the newest entry of a directory made since (see below: a creator that
// stalled before its rename) would hide that directory's object.
//
// A directory made later is numbered above t (the server's time then is
// above t), and versions of a name keep growing across Delete and Create
// as long as the file server's clock does not go back. (A creator that
// stalls between preparing its directory and renaming it, a few system
// calls, across the whole life of another directory of the name prepared
// after its own, starts below that one's base: its versions may then be
// lower than ones seen before, and a writer with a view of that directory
// may link above them with its base gone. They may equal one only if
// both were prepared in the same clock tick, with a chance of about the
// number of writes over 2^20. Nothing in this program orders versions.)
// Creators make again the directories that vanish under them.
//
// Listing (which the collector does) finishes the work: it collects by the
// same rules what has since become old enough, removes deleted objects'
// directories, "new" directories that a crashed creator left over an hour
// ago, and empty directories unchanged for 10 s (a creator makes an
// object's parents a moment before it uses them), and once an hour what
// crashed writers left in tmp/ over an hour ago. So a deleted object's
// space is back at once unless it had generations superseded less than
// PruneAge before (then at the first listing after that), and listing time
// follows the objects that exist. ListNames (names only, for the catalog's
// listing) reads no object's directory and collects no generation.
//
// # Stat without a listing
//
// A flush checks its volume's head with Stat each time, so Stat does not
// list the directory of an object whose newest generation g this process
// has seen (listed, or linked itself) and whose file it identified
// (device, inode, birth time, change time): it looks up g+1 by name, then
// g. If g+1 is absent and g is still the file seen, g is the newest
// generation at the moment of the first lookup: every change after g was
// the newest (a write, a tombstone, a seal) links g+1 in the directory
// that holds g, and g+1 is removed only after g (generations go oldest
// first, in place and in a moved directory alike, and a writer takes its
// own g+1 back only when it finds g gone), while g's file, once removed,
// never comes back (a later file may get its inode number, even its birth
// time where that is coarse or not recorded, but not its change time: see
// genID); a directory made at the path later holds other files. Anything
// else (g+1 there, g gone or another file) lists as before. The one
// assumption is the store's: a process records g only if it identified g's
// file within PruneAge/2 of the listing (or of the listing its link was
// based on), so that g cannot have been superseded, pruned and taken by
// another file in between. This is as fresh as a listing on a local file
// system; on NFS neither is (FreshStat).
//
// # Durability
//
// Put, Create, Swap and Delete are durable when they return. WriteAt
// changes the current generation in place; Sync fsyncs it. A directory
// entry is relied on only once durable: a process fsyncs the parent of
// every directory it uses that it has not made durable itself (also one
// another process made and may not have synced yet), remembering which by
// inode and birth time (dirKey), and fsyncs the directory of an object it
// finds already created (Create of stored content) before it answers
// ErrExists. A write fsyncs its temporary file before it links it (a link
// made durable first could name a file whose data is not), then the
// object's directory for the link and the parents of the path's
// directories not yet durable (a new object's: those it made) all at once,
// and answers once all are: nothing relies on any of them before, and a
// crash between leaves what a crash before the link leaves (a temporary
// file, a directory with only its "new" base, empty parents), removed by
// the same listings. FORMAT is linked from a complete temporary file, then
// the root is fsynced. Directory fsyncs are shared by the process's
// writers (dirCommits): each waits for one that began after it asked, so
// after its link.
//
// OpenHandleLazy creates an object without any of these fsyncs and notes
// it (f.lazy); the object's next Sync, by name or through a handle, makes
// the same directories durable after the file's data, then drops the
// note. Until then a crash may leave nothing of the object (its
// directory's entry lost), a directory holding only its "new" base (its
// link lost: absent, removed by a listing like a crashed creator's), or
// the object linked without its data (empty, short or zeros). Only for
// objects nothing names before their writer syncs them (LazyCreator).
type File struct {
	root     string
	hooks    fileHooks
	pruneAge time.Duration
	local    bool // on a file system of this host only (FreshStat)
	inode    bool // fdatasync writes the inode after a write in place (SyncWritesInode)

	mu        sync.Mutex
	durable   map[string]genID   // directory → the one (dirKey) whose entry in its parent is durable
	seen      map[string]seenGen // object → its newest generation as last seen (Stat)
	lastClean int64              // of tmp/, by serverNow

	commits dirCommits // directory fsyncs in flight, shared by callers

	// lazy: the objects created by OpenHandleLazy whose creation no
	// Sync has made durable yet (see Durability), by name.
	lazy   map[string]lazyCreate
	lazyN  uint64         // numbers the entries of lazy
	making map[string]int // lazy creates in flight (linked, maybe not noted yet), by name
	fsyncs atomic.Int64   // fsyncs of files and directories (Fsyncs)

	splitBytes int64          // a level of the catalog's index past this size ...
	splitKeys  int            // ... holding more keys than this is split
	idxReady   atomic.Bool    // the index's marker was seen
	setCounts  map[string]int // level → keys set there since it was last read to split (under mu)
}

// fileHooks are seams for tests; nil members do nothing.
type fileHooks struct {
	beforeInstall func(dir string)     // after the listing an install decided on, before it links
	syncDir       func(dir string)     // every directory fsync
	afterLink     func(dir string)     // after an install's link, before its check
	beforeDispose func(dir string)     // after a collection read a directory to remove, before it seals it
	afterPrepare  func(dir string)     // after a creator prepared a directory, before it renames it into place
	now           func(ns int64) int64 // maps the server time that listing measures
	readDir       func(dir string)     // every listing of an object's directory to find its newest entry

	indexStep       func(step, name string) // between the steps of the index's order (IndexOps.Hook)
	indexReadDir    func(level string)      // every read of a level of the catalog's index
	indexRead       func(entries int)       // after it, with how many entries it read
	beforeSplitMove func(key string)        // before a split renames a key down
	// indexNames, if set, replaces what a listing's read of a level
	// returned (a test's view of a read that a split ran across).
	indexNames func(level string, names []string) []string
}

// openHooks are given to every File that OpenFile opens (for tests).
var openHooks fileHooks

var (
	_ Store         = (*File)(nil)
	_ RangeWriter   = (*File)(nil)
	_ Syncer        = (*File)(nil)
	_ HandleOpener  = (*File)(nil)
	_ Copier        = (*File)(nil)
	_ NameLister    = (*File)(nil)
	_ LazyCreator   = (*File)(nil)
	_ OrderedLister = (*File)(nil)
	_ IndexRepairer = (*File)(nil)
)

const fileFormat = "archip-file-store 1\n"

// PruneAge is how long a superseded generation of a file-store object is
// kept once its successor exists: the time its successor's writer has to
// check it, and readers to open it. See the File type's comment.
const PruneAge = 10 * time.Second

// tmpAge is how old a file or directory in tmp/ must be before it is taken
// for a crashed writer's: other hosts sharing the directory may be writing.
const tmpAge = time.Hour

// Targets of the symbolic links in object directories (each followed by
// a dot and a random nonce).
const (
	deletedLink = "deleted" // a tombstone
	newLink     = "new"     // the base of a new directory
	goneLink    = "gone"    // a seal: a collection is moving the directory away
)

// maxInstallTries bounds the rounds of one write against concurrent
// changes, so that a file system that keeps contradicting itself gives an
// error instead of a hang.
const maxInstallTries = 1000

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
	f := &File{root: abs, hooks: openHooks, pruneAge: PruneAge, splitBytes: defaultSplitBytes, splitKeys: defaultSplitKeys, durable: map[string]genID{}, seen: map[string]seenGen{}, lazy: map[string]lazyCreate{}, making: map[string]int{}}
	format := filepath.Join(abs, "FORMAT")
	b, err := os.ReadFile(format)
	if errors.Is(err, fs.ErrNotExist) && create {
		b, err = f.create()
	}
	switch {
	case err == nil:
		if string(b) != fileFormat {
			return nil, fmt.Errorf("%w: %s/FORMAT says %q, this program reads %q",
				ErrCorrupt, abs, strings.TrimSpace(string(b)), strings.TrimSpace(fileFormat))
		}
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: no store at %s (create one with 'archip store init' or any command that writes)", ErrNotFound, abs)
	default:
		return nil, mapErr(err)
	}
	// Asked once the directory exists (a store this open created was
	// taken for remote, and every flush swapped the head).
	f.local = localFS(abs)
	f.inode = syncWritesInode(abs)
	// A store copied by a tool that skips empty directories lacks them.
	for _, d := range []string{"tmp", "obj"} {
		if _, err := os.Stat(filepath.Join(abs, d)); errors.Is(err, fs.ErrNotExist) {
			if err := f.ensureDir(filepath.Join(abs, d)); err != nil {
				return nil, mapErr(err)
			}
		}
	}
	f.cleanTmp(f.serverNow)
	return f, nil
}

// create makes a new store and returns the content of its FORMAT, which
// is written last: a store is complete once FORMAT exists. FORMAT is
// linked from a complete temporary file, so a concurrent open reads all of
// it or nothing, and of concurrent creators one links it and the others
// read it.
func (f *File) create() ([]byte, error) {
	if err := os.MkdirAll(f.root, 0o755); err != nil {
		return nil, err
	}
	if err := f.syncDir(filepath.Dir(f.root)); err != nil {
		return nil, err
	}
	for _, d := range []string{"tmp", "obj"} {
		if err := f.ensureDir(filepath.Join(f.root, d)); err != nil {
			return nil, err
		}
	}
	// A new store's index is not marked complete: binaries that keep
	// none may write its catalog first. The catalog's creation by one
	// that keeps it repairs the (empty) index, which marks it.
	if err := f.ensureDir(f.idxRoot()); err != nil {
		return nil, err
	}
	tmp, err := f.writeTemp([]byte(fileFormat), true)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	format := filepath.Join(f.root, "FORMAT")
	if err := os.Link(tmp, format); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	// Whoever linked it, FORMAT is durable only once the root is synced.
	if err := f.syncDir(f.root); err != nil {
		return nil, err
	}
	return os.ReadFile(format)
}

// SetPruneAge changes how long this process keeps superseded generations
// (PruneAge by default); call it before using the store. Safety does not
// depend on it; shorter, a writer that stalls longer than it between its
// link and its check may report a conflict for a write that happened, and
// a reader on another host may fail to read a generation it opened. 0
// collects at once: for tests, and for stores that one process uses.
func (f *File) SetPruneAge(d time.Duration) { f.pruneAge = d }

// FreshStat reports whether Stat sees other hosts' changes at once: only
// on a local file system (see FreshStater).
func (f *File) FreshStat() bool { return f.local }

// SyncWritesInode reports whether the store's directory is on a file
// system whose fdatasync writes a file's inode when a write moved its
// times (objstore.InodeSyncer): ext4 without a journal.
func (f *File) SyncWritesInode() bool { return f.inode }

// Root returns the store's directory.
func (f *File) Root() string { return f.root }

// cleanTmp removes temporary files and prepared directories left by
// crashed writers, those changed over tmpAge ago by the file server's
// clock; at most once per tmpAge (opening and listing call it).
func (f *File) cleanTmp(serverNow func() int64) {
	now := serverNow()
	f.mu.Lock()
	if now == 0 || now-f.lastClean < int64(tmpAge) {
		f.mu.Unlock()
		return
	}
	f.lastClean = now
	f.mu.Unlock()
	ents, _ := os.ReadDir(filepath.Join(f.root, "tmp"))
	for _, e := range ents {
		if in, err := e.Info(); err == nil && changeTime(in) < now-int64(tmpAge) {
			os.RemoveAll(filepath.Join(f.root, "tmp", e.Name()))
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

// generation is an entry of an object's directory.
type generation struct {
	num       uint64
	tombstone bool   // a symbolic link: deleted, or the base of a new directory
	id        fileID // set by head only
}

// fileID tells one file apart from any other that later takes its name:
// device and inode, and the type, modification time and size, which a
// reused inode number seldom repeats, and for a symbolic link its target,
// which holds a random nonce.
type fileID struct {
	dev, ino uint64
	mode     fs.FileMode
	mtime    int64
	size     int64
	link     string
}

// identify returns the fileID of the entry at path.
func identify(path string) (fileID, error) {
	in, err := os.Lstat(path)
	if err != nil {
		return fileID{}, err
	}
	id := idOf(in)
	if in.Mode()&fs.ModeSymlink != 0 {
		if id.link, err = os.Readlink(path); err != nil {
			return fileID{}, err
		}
	}
	return id, nil
}

func idOf(in fs.FileInfo) fileID {
	id := fileID{mode: in.Mode(), mtime: in.ModTime().UnixNano(), size: in.Size()}
	if st, ok := in.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), uint64(st.Ino)
	}
	return id
}

func genName(n uint64) string { return fmt.Sprintf("%016x", n) }

// current returns the highest generation in dir (num 0 if none).
func (f *File) current(dir string) (generation, error) {
	if f.hooks.readDir != nil {
		f.hooks.readDir(dir)
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return generation{}, nil
	}
	if err != nil {
		return generation{}, mapErr(err)
	}
	return newest(ents), nil
}

func newest(ents []fs.DirEntry) generation {
	var g generation
	for _, e := range ents {
		if n, ok := genNum(e.Name()); ok && n > g.num {
			g = generation{num: n, tombstone: e.Type()&fs.ModeSymlink != 0}
		}
	}
	return g
}

// genNum parses a generation's name.
func genNum(name string) (uint64, bool) {
	if len(name) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(name, 16, 64)
	return n, err == nil && n > 0
}

// head returns the newest entry of dir with its identity; ok is false if
// dir is absent or holds no generation.
func (f *File) head(dir string) (g generation, ok bool, err error) {
	for try := 0; ; try++ {
		if g, err = f.current(dir); err != nil || g.num == 0 {
			return g, false, err
		}
		id, err := identify(filepath.Join(dir, genName(g.num)))
		if errors.Is(err, fs.ErrNotExist) && try < 100 {
			continue // removed since the listing
		}
		if err != nil {
			return g, false, mapErr(err)
		}
		g.id = id
		return g, true, nil
	}
}

// openCurrent opens the live generation of name for reading.
func (f *File) openCurrent(name string, flag int) (*os.File, generation, error) {
	dir, err := f.dir(name)
	if err != nil {
		return nil, generation{}, err
	}
	for try := 0; ; try++ {
		g, err := f.current(dir)
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
	b, err := readWhole(fh)
	if err != nil {
		return nil, 0, mapErr(err)
	}
	return b, Version(g.num), nil
}

// readWhole reads fh to its end into one buffer of the size its stat
// gives (io.ReadAll gathers chunks and copies them into a buffer of the
// final size: a 4 MiB block cost twice its size in allocations and a
// copy, which a move paid per block, docs/benchmarks.md).
func readWhole(fh *os.File) ([]byte, error) {
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	return readSized(fh, st.Size())
}

// readSized reads r to its end, expecting size bytes: a file longer than
// its stat said (written in place meanwhile) is read to its end all the
// same, one shorter gives what there is.
func readSized(r io.Reader, size int64) ([]byte, error) {
	if size <= 0 || size > math.MaxInt32 {
		return io.ReadAll(r)
	}
	b := make([]byte, size)
	n, err := io.ReadFull(r, b)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return b[:n], nil
	case err != nil:
		return nil, err
	}
	var one [1]byte
	m, err := r.Read(one[:])
	if m == 0 {
		if err != nil && err != io.EOF {
			return nil, err
		}
		return b, nil
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return append(append(b, one[0]), rest...), nil
}

type condition int

const (
	condAny    condition = iota // Put
	condAbsent                  // Create
	condVer                     // Swap
)

func (f *File) Put(ctx context.Context, name string, data []byte) (Version, error) {
	return f.install(ctx, name, data, condAny, 0, false, false)
}

func (f *File) Create(ctx context.Context, name string, data []byte) (Version, error) {
	return f.install(ctx, name, data, condAbsent, 0, false, false)
}

func (f *File) Swap(ctx context.Context, name string, data []byte, old Version) (Version, error) {
	if old == 0 {
		v, err := f.install(ctx, name, data, condAbsent, 0, false, false)
		if errors.Is(err, ErrExists) {
			err = fmt.Errorf("%w: %s exists", ErrConflict, name)
		}
		return v, err
	}
	return f.install(ctx, name, data, condVer, old, false, false)
}

func (f *File) Delete(ctx context.Context, name string) error {
	_, err := f.install(ctx, name, nil, condAny, 0, true, false)
	return err
}

func (f *File) DeleteVersion(ctx context.Context, name string, old Version) error {
	_, err := f.install(ctx, name, nil, condVer, old, true, false)
	return err
}

// install writes name in the order of the catalog's index where it
// keeps the name's key (see file_index.go): a write that may create the
// object (not a Swap from a version: the object exists) sets the key
// first and reads it back after; a delete removes it after, and checks.
// The key's fsync runs while the write prepares its file: the link waits
// for it, so the key is durable before the object can be. A lazy create
// (OpenHandleLazy: a private block's, never indexed) is install1's.
func (f *File) install(ctx context.Context, name string, data []byte, cond condition, old Version, tombstone, lazy bool) (Version, error) {
	if lazy || !isIndexed(name) || ValidName(name) != nil || cond == condVer && !tombstone {
		return f.install1(ctx, name, data, cond, old, tombstone, lazy, nil)
	}
	ops := f.indexOps()
	if tombstone {
		v, err := f.install1(ctx, name, data, cond, old, tombstone, false, nil)
		if err != nil {
			return v, err
		}
		return v, ops.Deleted(ctx, name)
	}
	var keyed chan error
	set := ops.Set
	ops.Set = func(ctx context.Context, name string) error {
		if keyed != nil {
			return set(ctx, name) // the read-back's
		}
		level, err := f.createKey(name)
		if err != nil {
			return err
		}
		keyed = make(chan error, 1)
		go func() { keyed <- f.keyDurable(name, level) }()
		return nil
	}
	var v Version
	err := ops.Write(ctx, name, func() (err error) {
		v, err = f.install1(ctx, name, data, cond, old, tombstone, false, func() error { return <-keyed })
		return err
	})
	return v, err
}

// install1 links a new generation of name: the content data, or a
// tombstone. See the type's comment for why this is safe without locks.
// beforeLink, if set, runs once before the first link, and its error is
// the write's.
//
// With lazy (a create of an empty object: OpenHandleLazy) nothing is
// synced: the object is noted in f.lazy, for its next Sync to make its
// link and directories durable (see Durability).
func (f *File) install1(ctx context.Context, name string, data []byte, cond condition, old Version, tombstone, lazy bool, beforeLink func() error) (Version, error) {
	dir, err := f.dir(name)
	if err != nil {
		return 0, err
	}
	if cond == condAbsent {
		// Cheap early answer for put-if-absent of content that is
		// already stored (dedup): no temp file. The caller will rely on
		// the object, which another process may not have synced yet.
		if g, err := f.current(dir); err == nil && g.num != 0 && !g.tombstone {
			if err := f.syncExisting(dir); err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("%w: %s", ErrExists, name)
		}
	}
	var tmp string
	defer func() {
		if tmp != "" {
			os.Remove(tmp)
		}
	}()
	if lazy {
		// In flight from before its link until after its note, so that
		// a Sync meanwhile (after a write that reached the object by
		// name) syncs its directories (drainLazy).
		f.beginLazy(name)
		defer f.endLazy(name)
	}
	for try := 0; ; try++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if try == maxInstallTries {
			return 0, fmt.Errorf("objstore: %s: still changing under this write after %d tries; try again", name, try)
		}
		listed := time.Now()
		base, ok, err := f.head(dir)
		if err != nil {
			return 0, err
		}
		live := ok && !base.tombstone
		switch {
		case tombstone && !live:
			return 0, fmt.Errorf("%w: %s", ErrNotFound, name)
		case cond == condAbsent && live:
			if err := f.syncExisting(dir); err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("%w: %s", ErrExists, name)
		case cond == condVer && (!live || Version(base.num) != old):
			cur := Version(base.num)
			if !live {
				cur = 0
			}
			return 0, fmt.Errorf("%w: %s is at version %d, not %d", ErrConflict, name, cur, old)
		}
		if !tombstone && (tmp == "" || !exists(tmp)) { // (gone if this write stalled past tmpAge)
			if tmp, err = f.writeTemp(data, !lazy); err != nil {
				return 0, err
			}
		}
		if ok && base.tombstone && strings.HasPrefix(base.id.link, goneLink+".") && !f.sealStale(dir, base.num) {
			// A collection won this seal and is moving the directory
			// away: nothing may be linked on it (see the type's
			// comment). Wait for the directory to go.
			backoff(max(try, 3))
			continue
		}
		if beforeLink != nil {
			if err := beforeLink(); err != nil {
				return 0, err
			}
			beforeLink = nil
		}
		if f.hooks.beforeInstall != nil {
			f.hooks.beforeInstall(dir)
		}
		if !ok {
			if err := f.newIncarnation(dir); err != nil {
				return 0, err
			}
			continue // and link on whichever base is there now
		}
		next := base.num + 1
		target := filepath.Join(dir, genName(next))
		if tombstone {
			err = os.Symlink(deletedLink+"."+randomName(), target)
		} else {
			err = os.Link(tmp, target)
		}
		if errors.Is(err, fs.ErrExist) || errors.Is(err, fs.ErrNotExist) {
			continue // another writer linked next, or the directory went: look again
		}
		if err != nil {
			return 0, mapErr(err)
		}
		mine, _ := identify(target)
		if f.hooks.afterLink != nil {
			f.hooks.afterLink(dir)
		}
		// The check comes right after the link, before the fsync: a
		// stale link (see the type's comment) is removed as soon as
		// can be.
		if id, err := identify(filepath.Join(dir, genName(base.num))); err != nil || id != base.id {
			// The base went: next may have existed and been removed
			// before the link, or this write stalled. See the type's
			// comment: only a quick loss is taken back.
			if d := time.Since(listed); d >= f.pruneAge/2 {
				return 0, fmt.Errorf("%w: %s: this write stalled %s, past the store's prune age, and cannot tell whether it took effect for a while: read the object", ErrTimeout, name, d.Round(time.Millisecond))
			}
			if id, err := identify(target); err == nil && mine != (fileID{}) && id == mine {
				os.Remove(target)
			}
			continue
		}
		// Won. The temporary name goes now, not at return: that
		// changes the file's change time, which identifies it for
		// Stat without a listing.
		var mineGen genID
		if !tombstone {
			os.Remove(tmp)
			tmp = ""
			if _, _, id, mode, err := statGen(target); err == nil && mode == 0 && id.ino == mine.ino {
				mineGen = id
			}
		}
		if lazy && f.deferCreate(name, dir) {
			f.collect(dir, next, false, true, 0)
			if mineGen == (genID{}) {
				f.forgetSeen(name)
			} else {
				f.rememberSeen(name, next, mineGen, listed)
			}
			return Version(next), nil
		}
		// The link and every directory of the path not yet durable
		// (a new object's: its directory and the parents made for
		// it) at once: nothing is answered before all are.
		perr := make(chan error, 1)
		go func() { perr <- f.durableDir(dir, false) }()
		err = f.syncDir(dir)
		if err := <-perr; err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, mapErr(err)
		}
		if errors.Is(err, fs.ErrNotExist) {
			// Deleted and removed since the check: this write took
			// effect, then the delete. Running it again would undo
			// the delete.
			return Version(next), nil
		} else if err != nil {
			return 0, mapErr(err)
		}
		f.madeDurable(name)
		f.collect(dir, next, tombstone, true, 0)
		if tombstone || mineGen == (genID{}) {
			f.forgetSeen(name)
		} else {
			f.rememberSeen(name, next, mineGen, listed)
		}
		return Version(next), nil
	}
}

// backoff sleeps before retry try+1 of an operation that lost a race:
// not at first, then a random time up to try × 20 µs, at most 2 ms.
func backoff(try int) {
	if try < 3 {
		return
	}
	d := min(time.Duration(try)*20*time.Microsecond, 2*time.Millisecond)
	time.Sleep(time.Duration(mrand.Int64N(int64(d)) + 1))
}

// syncExisting makes an object directory that this process found, and the
// generations in it, durable before the caller relies on them.
func (f *File) syncExisting(dir string) error {
	if err := f.syncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return mapErr(err)
	}
	if err := f.durableDir(dir, false); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return mapErr(err)
	}
	return nil
}

// newIncarnation gives the absent or empty object directory dir a base:
// it renames into place a prepared directory holding only a link to "new"
// named by the file server's time. If another creator's directory is there
// first it leaves that one. See the type's comment.
func (f *File) newIncarnation(dir string) error {
	parent := filepath.Dir(dir)
	for try := 0; try < 100; try++ {
		// Parents first: the base is numbered by the time it is
		// prepared, so nothing slow may come between that and the
		// rename. They are made, not synced: the install that links
		// on the directory syncs every directory of the path at once
		// before it answers (durableDir).
		if err := os.MkdirAll(parent, 0o755); errors.Is(err, fs.ErrNotExist) {
			backoff(try) // a listing removed one while empty: make it again
			continue
		} else if err != nil {
			return mapErr(err)
		}
		prep, err := f.prepare()
		if err != nil {
			return err
		}
		if f.hooks.afterPrepare != nil {
			f.hooks.afterPrepare(dir)
		}
		// The system call, not os.Rename, which refuses to replace any
		// directory: an empty one (all of a deleted object's entries
		// removed, not the directory yet) must be replaced.
		err = syscall.Rename(prep, dir)
		os.RemoveAll(prep) // nothing is there once renamed
		switch {
		case err == nil:
			return nil // durable once the install that links on it syncs it
		case errors.Is(err, fs.ErrExist): // EEXIST or ENOTEMPTY: another creator's
			return nil
		case errors.Is(err, fs.ErrNotExist):
			// A parent was removed (an object deleted), or prep (a stall
			// over an hour). Back off a little, more each time, so that
			// deleters emptying and removing the parent in a loop finish.
			backoff(try)
			continue
		default:
			return mapErr(&os.LinkError{Op: "rename", Old: prep, New: dir, Err: err})
		}
	}
	return fmt.Errorf("objstore: %s: its parent directory keeps vanishing; try again", dir)
}

// prepare makes a directory under tmp/ holding only a "new" link numbered
// by the file server's time (the directory's modification time) plus a
// random part below 2^20 ns, less than a tick of a coarse clock, so that
// directories prepared in one tick are numbered apart.
func (f *File) prepare() (string, error) {
	prep := filepath.Join(f.root, "tmp", randomName()+".d")
	if err := os.Mkdir(prep, 0o755); err != nil {
		return "", mapErr(err)
	}
	in, err := os.Lstat(prep)
	if err != nil {
		os.RemoveAll(prep)
		return "", mapErr(err)
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	base := max(uint64(in.ModTime().UnixNano()), 1<<32) + uint64(binary.BigEndian.Uint32(rnd[:])>>12)
	if err := os.Symlink(newLink+"."+randomName(), filepath.Join(prep, genName(base))); err != nil {
		os.RemoveAll(prep)
		return "", mapErr(err)
	}
	return prep, nil
}

// collect removes from dir, oldest first, the generations that newest
// (the generation just written, or found newest by a listing) leaves
// unneeded:
//   - generation k once the entry after it was linked PruneAge before
//     now: the writer of that entry has had that long to check k, and
//     readers to finish with k; but not newest's base unless newest is a
//     tombstone (its writer may have stalled before its check);
//   - if ownBase is set (the caller wrote newest and has checked its
//     base), newest's base at once when it is a symbolic link or newest a
//     tombstone: nobody else built on it, and nobody reads an absent
//     object's entry or a deleted object's data;
//   - then, if newest is a tombstone and nothing older is left, the
//     directory (dispose), when newest is below now (a directory made
//     later then gets a higher base).
//
// now is the file server's time in nanoseconds; 0 means newest's own
// change time. A crash before the removals are durable is harmless: the
// newest generation stays the newest.
func (f *File) collect(dir string, newest uint64, tombstone, ownBase bool, now int64) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type gen struct {
		num  uint64
		link bool
	}
	var gens []gen
	for _, e := range ents {
		if n, ok := genNum(e.Name()); ok && n <= newest {
			gens = append(gens, gen{n, e.Type()&fs.ModeSymlink != 0})
		}
	}
	if len(gens) == 0 {
		return
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i].num < gens[j].num })
	// NB: change times are looked up only as far as the removals go:
	// a directory that many swaps made holds a generation for each swap
	// of the last PruneAge, and only the oldest few are due.
	changed := func(num uint64) (int64, bool) {
		in, err := os.Lstat(filepath.Join(dir, genName(num)))
		if err != nil {
			return 0, false
		}
		return changeTime(in), true
	}
	if now == 0 {
		if gens[len(gens)-1].num != newest {
			return
		}
		t, ok := changed(newest)
		if !ok {
			return
		}
		now = t
		if f.hooks.now != nil {
			now = f.hooks.now(now)
		}
	}
	i := 0
	for ; i+1 < len(gens); i++ {
		next := gens[i+1]
		own := ownBase && next.num == newest && gens[i].num == newest-1 && (tombstone || gens[i].link)
		if !own && next.num == newest && !tombstone {
			break
		}
		if !own {
			t, ok := changed(next.num)
			if !ok || t > now-int64(f.pruneAge) {
				break
			}
		}
		if err := os.Remove(filepath.Join(dir, genName(gens[i].num))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return
		}
	}
	if !tombstone || i+1 < len(gens) || gens[i].num != newest || newest >= uint64(now) {
		return
	}
	// Older generations must not come back after a crash without the
	// tombstone above them. A writer's own tombstone (ownBase) is durable
	// already: its install fsynced the directory after linking it.
	if i > 0 && !ownBase && f.syncDir(dir) != nil {
		return
	}
	f.dispose(dir, newest)
}

// dispose removes the object directory dir whose newest entry, read by
// the caller, is the symbolic link t (a tombstone, a crashed creator's
// base, a stale seal) with nothing older: it seals it by linking a "gone"
// link at t+1, the number a writer on t links, then renames the
// directory into tmp/ and removes it there. See the type's comment for
// why the newest entry of a directory is never removed in place.
func (f *File) dispose(dir string, t uint64) {
	tid, err := identify(filepath.Join(dir, genName(t)))
	if err != nil || tid.mode&fs.ModeSymlink == 0 {
		return
	}
	if f.hooks.beforeDispose != nil {
		f.hooks.beforeDispose(dir)
	}
	seal := filepath.Join(dir, genName(t+1))
	sealed := time.Now()
	if err := os.Symlink(goneLink+"."+randomName(), seal); err != nil {
		return // written again (or already sealed) since, or gone
	}
	mine, err := identify(seal)
	if err != nil {
		return
	}
	// unseal takes the seal back if it did not move its directory. It is
	// young, so nothing was linked on it (writers wait on it), and
	// whatever was below it is still there: as if it had never been. A
	// seal that lost may be the newest entry of a directory made since
	// (one whose creator stalled between numbering its base and renaming
	// it into place, so numbered below t), hiding that directory's object.
	unseal := func() {
		if id, err := identify(seal); err == nil && id == mine {
			os.Remove(seal)
		}
	}
	// The seal won only if its base is still the link read, and it is
	// the newest entry of the directory at dir's path: not a stale link
	// below the newest, nor one in a directory made since.
	if id, err := identify(filepath.Join(dir, genName(t))); err != nil || id != tid {
		unseal()
		return
	}
	if g, err := f.current(dir); err != nil || g.num != t+1 {
		unseal()
		return
	}
	if id, err := identify(seal); err != nil || id != mine {
		return
	}
	// A seal this old counts as a crashed collector's: writers may link on
	// it, and moving the directory could take their entries with it.
	if time.Since(sealed) >= tmpAge/2 {
		return
	}
	grave := filepath.Join(f.root, "tmp", randomName()+".gone")
	if err := syscall.Rename(dir, grave); err != nil {
		// Nothing moved (no space to grow tmp/, an I/O error): else
		// every write of the name would wait an hour for the seal. A
		// writer that links t+1 once it is gone finds its base t
		// there, a real win.
		unseal()
		return
	}
	f.forget(dir)
	if id, err := identify(filepath.Join(grave, genName(t+1))); err != nil || id != mine {
		// Not the sealed directory: cannot happen unless this process
		// stalled tmpAge/2 just above. Put it back if the name is free.
		syscall.Rename(grave, dir)
		return
	}
	// Once the rename is durable nothing in the grave is ever read again,
	// also after a crash: links that land in it late (a writer that
	// looked the directory up before the rename) are removed with it.
	if f.syncDir(filepath.Dir(dir)) != nil {
		return // left for cleanTmp
	}
	for try := 0; try < 10; try++ {
		// Oldest first, as at the path: a late writer (whose lookup of
		// dir still reaches this directory, as a cached one on NFS may)
		// that finds its base here must find the name above it never
		// freed, so that its link fails; else it would win here, where
		// nobody reads it, and a late collection's seal would move
		// whatever is at dir's path now.
		names, err := readNames(grave)
		if err != nil {
			break
		}
		sort.Strings(names) // generations: 16 hex digits
		for _, n := range names {
			os.Remove(filepath.Join(grave, n))
		}
		if syscall.Rmdir(grave) == nil {
			break
		}
	}
	f.removeEmptyDirs(filepath.Dir(dir), 0)
}

// sealStale reports whether the seal at generation num of dir is older
// than tmpAge by the file server's clock: its collector crashed (or
// stalled past tmpAge/2, when it gives up), and the seal counts as a
// tombstone.
func (f *File) sealStale(dir string, num uint64) bool {
	in, err := os.Lstat(filepath.Join(dir, genName(num)))
	if err != nil {
		return false
	}
	now := f.serverNow()
	return now != 0 && changeTime(in) < now-int64(tmpAge)
}

// emptyAge is how long a listing leaves an empty directory in place: see
// removeEmptyDirs.
const emptyAge = 10 * time.Second

// emptyBefore returns the server time before which a listing, which
// measures the server's time with now, removes an empty directory.
func emptyBefore(now func() int64) func() int64 {
	return func() int64 { return now() - int64(emptyAge) }
}

// removeEmptyDirs removes dir and then its parents below obj/ while they
// are empty. rmdir() fails on a directory with an entry, so this never
// removes anything written meanwhile. With before set (a listing's), it
// removes only directories last changed before it (the file server's
// time): a creator makes an object's parent directories, then renames
// the object's directory into one, and a listing that kept removing a
// parent made a moment ago would starve it.
func (f *File) removeEmptyDirs(dir string, before int64) {
	top := filepath.Join(f.root, "obj")
	for d := dir; strings.HasPrefix(d, top+string(filepath.Separator)); d = filepath.Dir(d) {
		if before != 0 {
			if in, err := os.Lstat(d); err != nil || changeTime(in) >= before {
				return
			}
		}
		if err := syscall.Rmdir(d); err != nil {
			return
		}
		f.forget(d)
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// onceServerNow returns serverNow measured once, when first called: a
// listing's time.
func (f *File) onceServerNow() func() int64 {
	var now int64
	return func() int64 {
		if now == 0 {
			now = f.serverNow()
		}
		return now
	}
}

// serverNow returns the file server's time in nanoseconds: the change
// time of a file it creates (0 if that fails).
func (f *File) serverNow() int64 {
	p := filepath.Join(f.root, "tmp", randomName()+".now")
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0
	}
	fh.Close()
	defer os.Remove(p)
	in, err := os.Lstat(p)
	if err != nil {
		return 0
	}
	now := changeTime(in)
	if f.hooks.now != nil {
		now = f.hooks.now(now)
	}
	return now
}

func randomName() string {
	var rnd [12]byte
	rand.Read(rnd[:])
	return hex.EncodeToString(rnd[:])
}

// Large objects around the page cache. A new object of uncachedMin
// bytes or more (a content block: an upload's, an import's) is written
// with O_DIRECT, and a handle reads one so on request (ReadAtUncached:
// whole blocks streamed out by an S3 GET). Through the cache, a 1 GiB
// upload cost the server 3.1 s of system CPU, with O_DIRECT 0.7 s, and
// where the server shares its cores with the clients, that is the
// upload's rate (docs/benchmarks.md); such data is seldom read again
// soon. The last partial page of a file goes through the cache, and so
// does everything where O_DIRECT is refused (alignment, a file system
// without it); the syncs are the same either way.
const (
	uncachedMin = 1 << 20
	// The alignment O_DIRECT asks of the buffer, offset and length: the
	// logical block size of the device or file system, at most a page.
	uncachedAlign = 4096
)

// writeTemp writes data to a new temporary file and fsyncs it if sync
// is set.
func (f *File) writeTemp(data []byte, sync bool) (string, error) {
	tmp := filepath.Join(f.root, "tmp", randomName())
	if err := f.writeFile(tmp, data, sync); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// writeFile creates path with data, checking the byte count and, if
// sync is set, fsyncing before it returns.
func (f *File) writeFile(path string, data []byte, sync bool) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return mapErr(err)
	}
	done, err := writeUncached(fh, data)
	if !done {
		var n int
		n, err = fh.Write(data)
		if err == nil && n != len(data) {
			err = io.ErrShortWrite
		}
	}
	if err == nil && sync {
		f.fsyncs.Add(1)
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	return mapErr(err)
}

// Stat returns the Info of the object's newest generation. Once this
// process has seen that generation (by a Stat or by writing it), Stat
// checks with two lookups by name that it is still the newest (see Stat
// without a listing in the File type's comment); otherwise, and whenever
// that check fails, it lists the object's directory and stats the
// newest generation. A flush checks a head this way each time.
func (f *File) Stat(ctx context.Context, name string) (Info, error) {
	dir, err := f.dir(name)
	if err != nil {
		return Info{}, err
	}
	if in, ok := f.statSeen(dir, name); ok {
		return in, nil
	}
	for try := 0; ; try++ {
		listed := time.Now()
		g, err := f.current(dir)
		if err != nil {
			return Info{}, err
		}
		if g.num == 0 || g.tombstone {
			f.forgetSeen(name)
			return Info{}, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		size, mtime, id, mode, err := statGen(filepath.Join(dir, genName(g.num)))
		if errors.Is(err, fs.ErrNotExist) && try < 100 {
			continue // replaced and pruned between the listing and the stat
		}
		if err != nil {
			return Info{}, mapErr(err)
		}
		if mode != 0 && try < 100 {
			continue // not the file listed (see fileID): look again
		}
		if mode != 0 {
			return Info{}, fmt.Errorf("%w: %s: generation %s is not a regular file", ErrCorrupt, name, genName(g.num))
		}
		f.rememberSeen(name, g.num, id, listed)
		return Info{Name: name, Size: size, Version: Version(g.num), ModTime: mtime}, nil
	}
}

// genID identifies a generation file for Stat without a listing: device,
// inode, birth time (where the file system records it) and change time.
// The change time tells the file seen from a later one given its inode
// number where the birth time does not (not recorded, or as coarse as a
// clock tick): a file linked at a generation's name after that
// generation was pruned was linked, so changed, over PruneAge/2 after
// the file seen was identified (see Stat without a listing), and the
// default PruneAge/2 is well above the coarsest timestamps of the file
// systems Stat is fresh on (a second: ext4 with 128-byte inodes); a
// store set to a prune age near that gives the assumption up. A file
// changed in place (WriteAt) is listed again.
type genID struct {
	dev, ino     uint64
	birth, ctime int64
}

// noBirthTime makes statGen ignore birth times (a test seam: a file
// system that records none).
var noBirthTime bool

// seenGen is the newest generation of an object that this process saw,
// and which file it was.
type seenGen struct {
	num uint64
	id  genID
}

// maxSeen bounds the memory of seen generations; past it the memory
// starts again (costing listings, not freshness).
const maxSeen = 1 << 16

// statSeen answers Stat without listing dir, if this process saw the
// object's newest generation g before: ok if g+1 is absent at the path
// and then g is still the file seen. See the File type's comment.
func (f *File) statSeen(dir, name string) (Info, bool) {
	f.mu.Lock()
	s, ok := f.seen[name]
	f.mu.Unlock()
	if !ok {
		return Info{}, false
	}
	if _, err := os.Lstat(filepath.Join(dir, genName(s.num+1))); !errors.Is(err, fs.ErrNotExist) {
		return Info{}, false
	}
	size, mtime, id, mode, err := statGen(filepath.Join(dir, genName(s.num)))
	if err != nil || mode != 0 || id != s.id {
		return Info{}, false
	}
	return Info{Name: name, Size: size, Version: Version(s.num), ModTime: mtime}, true
}

// rememberSeen records that num, the file id, was the newest generation
// of name at a listing at listed (or when this process linked it after
// listing its base then), unless this process took so long since then
// that the generation may have been superseded and pruned, and another
// file linked at its name, in the meantime.
func (f *File) rememberSeen(name string, num uint64, id genID, listed time.Time) {
	if time.Since(listed) >= f.pruneAge/2 {
		f.forgetSeen(name)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) >= maxSeen {
		clear(f.seen)
	}
	f.seen[name] = seenGen{num: num, id: id}
}

func (f *File) forgetSeen(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.seen, name)
}

func (f *File) List(ctx context.Context, prefix string, fn func(Info) error) error {
	serverNow := f.onceServerNow()
	f.cleanTmp(serverNow)
	return f.walkPrefix(ctx, prefix, emptyBefore(serverNow), func(fan, entry, name string) error {
		in, ok, err := f.tidy(ctx, filepath.Join(fan, entry), name, serverNow)
		if err != nil || !ok {
			return err
		}
		return fn(in)
	})
}

// ListNames lists the names of the object directories under prefix
// without reading them (NameLister): a deleted object whose directory a
// listing has not removed yet, or one being created, is named too.
func (f *File) ListNames(ctx context.Context, prefix string, fn func(string) error) error {
	serverNow := f.onceServerNow()
	return f.walkPrefix(ctx, prefix, emptyBefore(serverNow), func(_, _, name string) error { return fn(name) })
}

// walkPrefix calls visit with every object directory whose name starts
// with prefix (its fan-out directory, its entry there, the object's name),
// walking from the deepest directory the prefix names completely.
func (f *File) walkPrefix(ctx context.Context, prefix string, before func() int64, visit func(fan, entry, name string) error) error {
	base := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = prefix[:i+1]
	}
	if base != "" {
		if err := ValidName(strings.TrimSuffix(base, "/")); err != nil {
			return nil // no object can have such a name
		}
	}
	return f.walk(ctx, filepath.Join(f.root, "obj", filepath.FromSlash(base)), base, prefix, before, visit)
}

// walk visits the object directories below the directory path, whose
// names start with namePrefix (the name of path's directory, ending in a
// slash, or ""). Directories may vanish under it (objects deleted): it
// skips them.
func (f *File) walk(ctx context.Context, path, namePrefix, want string, before func() int64, visit func(fan, entry, name string) error) error {
	ents, err := os.ReadDir(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return mapErr(err)
	}
	if len(ents) == 0 {
		f.removeEmptyDirs(path, before())
		return nil
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
				if err := f.walk(ctx, filepath.Join(path, e.Name()), sub, want, before, visit); err != nil {
					return err
				}
			}
			continue
		}
		fan := filepath.Join(path, e.Name())
		objs, err := readNames(fan)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return mapErr(err)
		}
		if len(objs) == 0 {
			f.removeEmptyDirs(fan, before())
		}
		for _, o := range objs {
			name := namePrefix + o
			if !strings.HasPrefix(name, want) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := visit(fan, o, name); err != nil {
				return err
			}
		}
	}
	return nil
}

// readNames returns the names in dir, unsorted: a fan-out directory of a
// million objects holds thousands, and a listing needs neither their
// order nor their types.
func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// tidy returns the Info of the object whose directory is dir, if it
// exists, after collecting what its directory holds that is no longer
// needed: a deleted object's (reap), superseded generations old enough to
// prune, a base that a crashed creator left over tmpAge ago, an empty
// directory.
func (f *File) tidy(ctx context.Context, dir, name string, now func() int64) (Info, bool, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, false, nil
	}
	if err != nil {
		return Info{}, false, mapErr(err)
	}
	g := newest(ents)
	switch {
	case g.num == 0:
		f.removeEmptyDirs(dir, emptyBefore(now)())
		return Info{}, false, nil
	case g.tombstone:
		p := filepath.Join(dir, genName(g.num))
		to, err := os.Readlink(p)
		if err != nil {
			return Info{}, false, nil
		}
		switch {
		case strings.HasPrefix(to, newLink+"."):
			if in, err := os.Lstat(p); err != nil || len(ents) > 1 || changeTime(in) > now()-int64(tmpAge) {
				return Info{}, false, nil // a creator's, about to write
			}
		case strings.HasPrefix(to, goneLink+"."):
			if in, err := os.Lstat(p); err != nil || changeTime(in) > now()-int64(tmpAge) {
				return Info{}, false, nil // a collector's, moving the directory away
			}
		}
		f.collect(dir, g.num, true, false, now())
		return Info{}, false, nil
	}
	if len(ents) > 1 {
		f.collect(dir, g.num, false, false, now())
	}
	in, err := os.Lstat(filepath.Join(dir, genName(g.num)))
	if err != nil {
		// Replaced (and pruned) or deleted since the listing.
		in, err := f.Stat(ctx, name)
		if IsNotExist(err) {
			return Info{}, false, nil
		}
		return in, err == nil, err
	}
	return Info{Name: name, Size: in.Size(), Version: Version(g.num), ModTime: in.ModTime()}, true, nil
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
			if _, err := f.install(ctx, name, nil, condAbsent, 0, false, false); err != nil && !errors.Is(err, ErrExists) {
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

// Copy copies src to a new dst with copy_file_range, which copies inside
// the kernel (or shares extents where the file system can), falling back
// to read and write where it is not supported.
func (f *File) Copy(ctx context.Context, src, dst string) error {
	in, _, err := f.openCurrent(src, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer in.Close()
	if _, err := f.install(ctx, dst, nil, condAbsent, 0, false, false); err != nil {
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

type fileHandle struct {
	f    *os.File
	s    *File
	name string
}

func (h fileHandle) ReadAt(p []byte, off int64) error { return h.read(p, off, false) }

func (h fileHandle) ReadAtUncached(p []byte, off int64) error { return h.read(p, off, true) }

func (h fileHandle) read(p []byte, off int64, uncached bool) error {
	if err := checkRange(p, off); err != nil {
		return err
	}
	done, n, err := false, 0, error(nil)
	if uncached {
		done, n, err = readUncached(h.f, p, off)
	}
	if !done {
		n, err = h.f.ReadAt(p, off)
	}
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

func (h fileHandle) Sync() error {
	h.s.fsyncs.Add(1)
	if err := datasync(h.f); err != nil {
		return mapErr(err)
	}
	return h.s.drainLazy(h.name)
}

func (h fileHandle) Close() error { return h.f.Close() }

func (f *File) Sync(ctx context.Context, name string) error {
	fh, _, err := f.openCurrent(name, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer fh.Close()
	f.fsyncs.Add(1)
	if err := datasync(fh); err != nil {
		return mapErr(err)
	}
	return f.drainLazy(name)
}

func (f *File) Close() error { return nil }

// ensureDir creates dir and its missing parents below the root, and makes
// sure the entry of each in its parent is durable: it fsyncs the parent of
// every directory it creates, and of every directory this process has not
// seen durable before (another process may have made it and not synced
// yet). A directory removed meanwhile (an object deleted) is made again.
func (f *File) ensureDir(dir string) error {
	var err error
	for try := 0; try < 100; try++ {
		if err = f.durableDir(dir, true); !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return err
}

// durableDir makes dir's entry, and its parents' below the root, durable
// (see ensureDir), creating what is missing if create is set; without
// it, a missing dir is no error.
func (f *File) durableDir(dir string, create bool) error {
	if !create {
		return f.durablePath(dir)
	}
	key, err := dirKey(dir)
	if err == nil && f.isDurable(dir, key) {
		return nil
	}
	if errors.Is(err, fs.ErrNotExist) && !create {
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != f.root && parent != dir {
		if err := f.durableDir(parent, create); err != nil {
			return err
		}
	}
	if err != nil {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if key, err = dirKey(dir); err != nil {
			return err
		}
	}
	if err := f.syncDir(parent); err != nil {
		return err
	}
	f.markDurable(dir, key)
	return nil
}

// durablePath makes the entries of dir and its parents below the root
// durable (fsyncs their parents) where this process has not seen them
// durable, all at once. A missing dir is no error.
func (f *File) durablePath(dir string) error {
	type level struct {
		dir string
		key genID
	}
	var pending []level
	for d := dir; d != f.root && filepath.Dir(d) != d; d = filepath.Dir(d) {
		key, err := dirKey(d)
		if errors.Is(err, fs.ErrNotExist) && len(pending) == 0 {
			return nil
		}
		if err != nil {
			return err
		}
		if f.isDurable(d, key) {
			break
		}
		pending = append(pending, level{d, key})
	}
	errs := make(chan error, len(pending))
	for _, l := range pending {
		go func() { errs <- f.syncDir(filepath.Dir(l.dir)) }()
	}
	var err error
	for range pending {
		if e := <-errs; err == nil {
			err = e
		}
	}
	if err != nil {
		return err
	}
	for _, l := range pending {
		f.markDurable(l.dir, l.key)
	}
	return nil
}

// maxDurable bounds the memory of which directories are durable; past it
// the memory starts again (costing fsyncs, not safety).
const maxDurable = 1 << 16

// dirKey returns what tells the directory at path apart from one made
// there later: its device, inode and birth time. The inode alone does
// not: a file system hands a freed inode number out again, to a
// directory another process prepares to create an object again (ext4
// does at once), whose entry that process may not have synced yet. On a
// file system that records no birth time, a directory made again with
// the inode number of one this process synced is taken for it.
func dirKey(path string) (genID, error) {
	_, _, id, _, err := statGen(path)
	id.ctime = 0 // changes with every entry
	return id, err
}

func (f *File) isDurable(dir string, key genID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.durable[dir]
	return ok && k == key
}

func (f *File) markDurable(dir string, key genID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.durable) >= maxDurable {
		clear(f.durable)
	}
	f.durable[dir] = key
}

func (f *File) forget(dir string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.durable, dir)
}

// syncDir makes durable every entry linked in dir before it is called:
// with an fsync of dir that begins after the call, shared with the
// process's other callers for dir meanwhile (dirCommits).
func (f *File) syncDir(dir string) error {
	return f.commits.sync(dir, func(dir string) error {
		if f.hooks.syncDir != nil {
			f.hooks.syncDir(dir)
		}
		f.fsyncs.Add(1)
		return fsyncDir(dir)
	})
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
