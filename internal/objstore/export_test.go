package objstore

// FileHooks are the file store's test seams.
type FileHooks struct {
	// BeforeInstall runs after an install has listed the object's
	// directory and decided what to link, before it links (or, for an
	// absent object, before it creates the directory).
	BeforeInstall func(dir string)
	// SyncDir runs before every directory fsync (once for all the
	// callers that share it).
	SyncDir func(dir string)
	// AfterLink runs after an install linked its generation, before it
	// checks its base.
	AfterLink func(dir string)
	// BeforeDispose runs after a collection has read an object
	// directory whose newest entry is a tombstone with nothing older,
	// before it seals the directory to remove it.
	BeforeDispose func(dir string)
	// AfterPrepare runs after a creator has prepared an object's
	// directory (numbered its base), before it renames it into place.
	AfterPrepare func(dir string)
	// Now maps the file server's time as a listing measures it (to
	// age tombstones without waiting).
	Now func(ns int64) int64
	// ReadDir runs before every listing of an object's directory that
	// looks for its newest entry.
	ReadDir func(dir string)
}

// SetFileHooks installs test seams on f.
func SetFileHooks(f *File, h FileHooks) {
	f.hooks = fileHooks{beforeInstall: h.BeforeInstall, syncDir: h.SyncDir, afterLink: h.AfterLink, beforeDispose: h.BeforeDispose, afterPrepare: h.AfterPrepare, now: h.Now, readDir: h.ReadDir}
}

// SetOpenFileHooks makes every later OpenFile install h, until restore.
func SetOpenFileHooks(h FileHooks) (restore func()) {
	openHooks = fileHooks{beforeInstall: h.BeforeInstall, syncDir: h.SyncDir, afterLink: h.AfterLink, beforeDispose: h.BeforeDispose, afterPrepare: h.AfterPrepare, now: h.Now, readDir: h.ReadDir}
	return func() { openHooks = fileHooks{} }
}

// SetNoBirthTime makes the file store's stats ignore birth times, as on a
// file system that records none (ext4 with 128-byte inodes, XFS v4),
// until restore.
func SetNoBirthTime() (restore func()) {
	noBirthTime = true
	return func() { noBirthTime = false }
}

// SetIndexSplit sets the bounds past which a level of f's catalog index
// is split: its size in bytes, and its keys.
func SetIndexSplit(f *File, bytes int64, keys int) { f.splitBytes, f.splitKeys = bytes, keys }

// IndexHooks are the seams of the file store's catalog index.
type IndexHooks struct {
	Step            func(step, name string) // IndexOps.Hook
	ReadDir         func(level string)      // every read of a level
	Read            func(entries int)       // entries read by it
	BeforeSplitMove func(key string)        // before a split renames a key
	// Names replaces what a listing's read of a level returned.
	Names func(level string, names []string) []string
}

// SetIndexHooks installs h on f.
func SetIndexHooks(f *File, h IndexHooks) {
	f.hooks.indexStep, f.hooks.indexReadDir, f.hooks.indexRead, f.hooks.beforeSplitMove = h.Step, h.ReadDir, h.Read, h.BeforeSplitMove
	f.hooks.indexNames = h.Names
}

// SetIndexKeys sets the keys of names in f's catalog index, without
// their objects (ghosts) and without fsyncs: a big index, fast.
func SetIndexKeys(f *File, names []string) error {
	for _, n := range names {
		if err := f.setKey(n, false); err != nil {
			return err
		}
	}
	return nil
}

// IndexHas reports whether name has its key in f's catalog index.
func IndexHas(f *File, name string) (bool, error) { return f.hasKey(name) }

// ReadSized is readSized (the file store's Get, with its stat's size).
var ReadSized = readSized
