package volume

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// Errors returned by volumes. Test with errors.Is.
var (
	ErrOutOfRange = errors.New("volume: I/O beyond the end of the volume")
	ErrReadOnly   = errors.New("volume: read-only (a snapshot, an image, or opened read-only)")
	ErrFenced     = errors.New("volume: the map was changed by another writer; this handle writes nothing more")
	ErrCorrupt    = errors.New("volume: store is corrupt")
	ErrClosed     = errors.New("volume: closed")
	ErrNotFound   = errors.New("volume: no such volume")
	ErrBadSize    = errors.New("volume: invalid size")
	// ErrSeqExhausted: the volume's sequence numbers (64 bits) are all
	// used; they never wrap, since a reused number would name an object
	// that already exists.
	ErrSeqExhausted = errors.New("volume: sequence numbers exhausted; this volume cannot be written any more: snapshot it and clone the snapshot to write a copy")
	// ErrUnsettled is joined to the error OnClose receives when a data
	// write of the handle failed with an unknown outcome (see
	// objstore.Store): it may still land, in place, in this epoch's
	// objects, so the next writer must start a new epoch. So does a
	// write to its write log (a record, a commit, a segment) until a
	// stored head no longer reads where it may land: landing late, it
	// would commit records the next writer did not read, so that writer
	// must checkpoint the log at open and drop it from the head rather
	// than keep it (OpenOptions.Handover).
	ErrUnsettled = errors.New("volume: a data or write log write failed with an unknown outcome and may still land")
	// ErrStale (see MaxUnflushedAge) is a kind of ErrFenced: errors.Is
	// reports both.
	ErrStale error = staleError{}
)

type staleError struct{}

func (staleError) Error() string {
	return "volume: writes left unflushed longer than volume.MaxUnflushedAge lost data to a garbage collection; this handle writes nothing more (reopen the volume: what was written since its last flush is lost)"
}

func (staleError) Is(target error) bool { return target == ErrFenced }

// settled reports whether a store write that failed certainly changed
// nothing (see objstore.Store).
func settled(err error) bool {
	for _, e := range []error{objstore.ErrConflict, objstore.ErrExists, objstore.ErrNotFound, objstore.ErrNoSpace,
		objstore.ErrBadName, objstore.ErrReadOnly, objstore.ErrClosed, objstore.ErrUnsupport} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// dataWritten notes that a write to the data object name failed with an
// unknown outcome, if it did (see ErrUnsettled), and returns err: it may
// still land, so the object is not written in place again.
func (v *Volume) dataWritten(name string, err error) error {
	if err != nil && !settled(err) {
		v.mu.Lock()
		v.mu.unsettled = true
		if v.mu.tainted == nil {
			v.mu.tainted = map[string]bool{}
		}
		v.mu.tainted[name] = true
		v.mu.Unlock()
	}
	return err
}

// MaxUnflushedAge is how old unflushed writes may grow before a flush
// checks, just before it persists the map, that every object the map
// will reference still exists. A garbage collection deletes unreferenced
// objects older than its grace period, so its grace must exceed this age
// (plus the clock drift between hosts): then a writer's unflushed objects
// younger than this are never deleted, and one that stalled longer finds
// out and stops (ErrStale) instead of persisting a map pointing at
// nothing.
const MaxUnflushedAge = 15 * time.Minute

// seqBatch is how many sequence numbers a writer reserves when it opens a
// volume.
const seqBatch = 1 << 32

const stripes = 256

// maxDelta is how many entries a flush stores in the head's delta before
// it writes segments instead (blockmap.MaxDelta; tests lower it).
var maxDelta = blockmap.MaxDelta

// openHandles is how many objects a volume keeps open (file descriptors
// on the file store). A clone's writer uses two per block it writes (its
// object and the snapshot's that its first writes read from): 1,024
// holds a 2 GiB clone of 4 MiB blocks. Past it, random writes evict a
// handle per write, and each reopens its object (a listing and an open).
// A volume keeps fewer under a low RLIMIT_NOFILE (handleBudget).
const openHandles = 1024

// Volume is an open volume.
type Volume struct {
	store  objstore.Store
	rw     objstore.RangeWriter // nil: private blocks are replaced whole with Put
	syncer objstore.Syncer      // nil: writes are durable when they return
	// syncWaits: the syncer's Sync only waits for writes in flight
	// (objstore.SyncWaiter), so logs need no zeros ahead (aheadLog).
	syncWaits bool
	settler   objstore.Settler // nil: a returned write is readable whatever befalls it
	copier    objstore.Copier  // nil: copy-on-write reads and writes the block
	onCopy    func()           // SetOnCopy's
	lender    objstore.Lender  // nil: ReadTo reads into a buffer of its own
	handles   *handleCache     // nil: every I/O names its object
	// freshStat: the store's Stat sees another host's head swap at once
	// (objstore.FreshStater), so a flush that changed no map entry
	// checks the head with it instead of swapping it (persistInPlace).
	freshStat bool
	// fenced: whoever takes this writer's volume over first fences its
	// store connection (OpenOptions.Fenced), so a flush that changed no
	// map entry need not check the head (persistInPlace).
	fenced bool
	// logOn: writes to blocks this writer cannot write in place go to
	// its write log (OpenOptions.Log).
	logOn bool
	// scatter: small writes scattered over blocks it writes in place go
	// to the log too (logScattered): the store's sync of an object
	// written in place also writes its inode (objstore.InodeSyncer).
	scatter bool
	// ahead: how far this writer's log is written with zeros past its
	// tail (aheadLog).
	ahead logAheadState
	// segLog: the store has no in-place writes, so write logs are
	// stored as immutable segments (wlog.go); every handle on the store
	// agrees, as it asks the store, not the writer.
	segLog bool
	// indexLog: this writer's checkpoints of a segmented log store a
	// write log index rather than write blocks (checkpointIndex). On a
	// store of several backends (objstore.Parter) only where it says so
	// (objstore.KeepsLogIndex: a pools:// store with logs = "metadata"):
	// its log segments and index objects are kept in the metadata
	// backend, so an index keeps the volume's written data out of the
	// pool its blocks are placed in (what the pool's figures in store
	// stats count, what a move copies) until a materialization.
	indexLog bool
	// segMu serializes the writes of this writer's log segments, so that
	// they land in the order of the log.
	segMu    sync.Mutex
	id       blockmap.ID
	readOnly bool
	remap    bool // a read-only head opened to rewrite its map (Hash)
	copying  bool // OpenOptions.Copying
	follow   bool // a read-only handle that rereads the map when the head changes
	uncached bool // OpenOptions.Uncached
	guard    func() error
	hold     func(ctx context.Context) (func() error, error)
	now      func() time.Time // the clock; tests inject one
	onClose  func(ctx context.Context, err error) error
	shift    uint8
	sshift   uint8 // sub-blocks (units of copy-on-write) are 2^sshift bytes
	bs       int64
	bufs     *sync.Pool // BlockBufs(bs)

	// gate: I/O that changes blocks holds it shared for its whole
	// duration; Flush takes it exclusively for the moment of its cut, and
	// Snapshot and Resize for their whole run.
	gate sync.RWMutex
	// gateCuts counts the flushes that took their cut holding the gate
	// (quickCut took none); tests read it.
	gateCuts atomic.Int64
	// flushMu serializes everything that writes the head.
	flushMu sync.Mutex
	// checks: a following handle's head checks (refresh).
	checks struct {
		sync.Mutex
		running bool
		next    *headCheck // gathering readers; starts when the running one ends
	}
	// stripe[b%stripes] serializes writes to block b.
	stripe [stripes]sync.Mutex

	// mu guards the map and the bookkeeping of what a flush must do. It is
	// never held across backend I/O.
	mu struct {
		sync.Mutex
		head      blockmap.Head // as last persisted, except Size, Epoch and Unsealed, which lead
		headVer   objstore.Version
		headDirty bool
		// begun, begunKey: the epoch that the last BeginEpoch began and
		// stored with a head swap that certainly landed (0: none), and
		// its key; an ask with that key for no more than it is answered
		// without a new epoch.
		begun    uint64
		begunKey string
		// fence: a write since the last flush changed, in place, an
		// object that was durable when the write returned (a store
		// without Syncer): the next flush only checks that no other
		// writer took over (see persistInPlace).
		fence bool
		// logged: records went to a segmented log since the last flush
		// (its commit makes them durable; see persistChained).
		logged bool
		// checkedAt: when this handle last asked the store for the head
		// (a Stat or a swap, at its start) and found the one it stored.
		checkedAt time.Time
		entries   []blockmap.Entry
		dirtySegs map[uint32]bool
		// dirtyBlocks: the blocks whose entries changed since the last
		// cut; delta: those the stored head's Delta holds (see
		// blockmap.Head.Delta), which the next flush stores again, in
		// the delta or in segments; checkpoint: the next flush must
		// write segments (a resize changed which ones there are).
		dirtyBlocks map[int64]bool
		delta       map[int64]bool
		checkpoint  bool
		dirtyObjs   map[string]bool // written in place since the last flush: need a sync
		freed       []string        // unreferenced once the next head is persisted
		dirtySince  time.Time       // when the oldest unflushed change was made
		nextSeq     uint64
		seqEnd      uint64
		err         error // sticky: set when the handle must stop writing
		closed      bool
		unsettled   bool // a data write failed with an unknown outcome (ErrUnsettled)
		// logSuspects: logs with a write of unknown outcome (ErrUnsettled)
		// that a stored head may still read: each log's end when it
		// failed, past which nothing of it lands. A stored head that no
		// longer names the log, or names it from there on, settles it.
		logSuspects map[string]int64
		tainted     map[string]bool // objects such a write may still change: never written in place again

		// pending: head swaps whose outcome is unknown (they failed, but
		// not with a conflict), all from version headVer.
		pending []pendingHead

		// The write logs (wlog.go): those the head names, as far as read
		// or written (a writer's own is the last); index: per block,
		// the ranges whose newest bytes are in a log, over the map;
		// logBytes: appended since the last checkpoint; logForce: the
		// next flush checkpoints; logBroken: an append failed, the log
		// takes no more until a checkpoint starts a new one; logGen
		// changes whenever the index loses extents.
		logs      []logFile
		index     map[int64][]logExt
		logBytes  int64
		logForce  bool
		logBroken bool
		logGen    uint64
		// logClosing: Close's checkpoint leaves no log in the head.
		logClosing bool
		// closing: Close has begun; its flush takes its cut holding the
		// gate (no quickCut), so that it covers the writes in flight,
		// which shut waits for next.
		closing bool
		// kept: how many of logs, first, are those of writers before
		// this one that it kept at open (OpenOptions.Handover), until
		// its next checkpoint.
		kept int
		// logCommit: records were appended since the last commit.
		logCommit bool
		// logKick: a flush runs in the background to checkpoint a log
		// that outgrew four times its bound, or a burst (logBurst).
		logKick bool
		// burst: bytes written since the last flush a caller asked for
		// (Flush, or a write with FUA); see logBurst.
		burst int64
		// lastBlock: the block of the last write that logsBlock routed
		// (logScattered).
		lastBlock int64
		// dropGen counts the times the index lost extents that the
		// stored head's logs may still replay (a checkpoint wrote them
		// into their blocks, a block was deallocated); dropRestart is
		// dropGen when the logs were last restarted (a head with them
		// replays none of those), dropStored dropRestart as of the
		// last head stored. Until dropStored catches up with dropGen,
		// a crash replays records the index no longer holds, so a
		// write in place over their bytes is durable only once a head
		// is stored (flushWrite).
		dropGen, dropRestart, dropStored uint64
		// A segmented log's bytes not yet in a stored segment (segLog):
		// segBuf, to be the segment segName at position segStart of the
		// writer's own log, and segMem, cut into segments whose write
		// has not succeeded yet (oldest first; one that failed stays,
		// for reads, until a checkpoint).
		segBuf   []byte
		segName  string
		segStart int64
		segMem   []*segChunk
		// The write log index (segmented logs; see "Write log index" in
		// docs/format.md): segInfo: the segments whose place in their
		// log this handle knows (those it wrote or read, and those of
		// the stored index); idxSegs: the segments the stored index
		// (head.Index) references; idxNew: extents added to index since
		// it was loaded or stored (by appends and replays of logs).
		segInfo map[string]blockmap.IndexSeg
		idxSegs map[string]bool
		idxNew  int
	}
}

// OpenOptions say how to open a volume.
type OpenOptions struct {
	// Writable opens the volume for writing: it fails on snapshots and
	// images, and reserves sequence numbers in the head.
	Writable bool
	// Remap opens a snapshot or image (or a volume) to rewrite its map
	// without changing what it reads, for Hash. Data writes are refused.
	Remap bool
	// Guard, when set, is asked before every write to the store (data,
	// map segments, head); an error refuses the operation and is
	// returned. Writers pass their lease (package lease), so that a node
	// whose lease ran out writes nothing more (invariant I5).
	Guard func() error
	// NewEpoch starts a new epoch at open, so that this handle changes
	// no object of an earlier writer in place: every block it writes is
	// copied first. For a writer that took the lease over from one that
	// did not release it, and so may still be finishing a write. The
	// epoch that ended is recorded as unsealed in the head
	// (blockmap.Head.Unsealed): the next snapshot seals its blocks first.
	NewEpoch bool
	// Copying starts a new epoch at open without recording the epoch
	// that ends as unsealed: for a writer that took the lease from a
	// clean release and only wants every block it writes copied (so that
	// discarding undoes it). A takeover needs NewEpoch, which wins.
	Copying bool
	// Handover says that the lease was taken from a clean release (not
	// taken over: lease.Lease.TookOver is false): the writer before
	// flushed, then released, so no write of it is in flight or can
	// start. Its write logs are then kept (in the head and the index)
	// instead of checkpointed into the map at open, while their replay,
	// which every open repeats until a checkpoint, is no longer than that
	// of a writer's own log: the head names at most keptLogs of them, and
	// segmented ones hold fewer than segCount segments (a read each, one
	// after the other), which this writer's log then fills up. The next
	// checkpoint this writer makes anyway (its log's bound, segCount
	// segments in all, a map change, Close, a snapshot) writes them into
	// the map with its own. NewEpoch wins.
	Handover bool
	// Follow makes a read-only handle see what another handle (on any
	// host) writes: every read first checks whether the head changed and,
	// if so, loads the segments that changed. A read never returns data
	// older than the writer's last flush.
	Follow bool
	// Hold, when set, keeps garbage collections off (package gc's
	// AcquireHold: it waits for a running one to end, and none starts
	// until release) around the existence check and the head swap of a
	// flush whose unflushed data is older than MaxUnflushedAge: a
	// collection already sweeping could otherwise delete an object after
	// the check found it. release reports whether the hold lapsed.
	Hold func(ctx context.Context) (release func() error, err error)
	// Fenced says that whoever takes the volume over from this writer,
	// other than by a clean handover after its last flush, first fences
	// the store connection s (objstore.Fencer), so that the store refuses
	// every operation of this writer that reaches an object after the
	// taker's first one there: a writer under a lease whose record names
	// that connection (package lease: Lease.Fenced). A flush that changed
	// no map entry then checks nothing in the store. Ignored unless s is
	// an objstore.Fencer.
	Fenced bool
	// Log makes a writer append writes to blocks it cannot write in
	// place (copy-on-write, allocation) to its write log, so that a flush
	// after them syncs that one object instead of storing a new map; the
	// log is checkpointed into the map past a size bound and before
	// anything that stores a map anyway (a snapshot, a resize, a trim of
	// logged bytes, Close). On a store with in-place writes whose flush
	// can check the head without swapping it (objstore.RangeWriter, and
	// FreshStater or Fenced), or without in-place writes but with
	// create-if-absent and a fresh Stat (the log is then stored as
	// segments: S3); ignored elsewhere.
	Log bool
	// Uncached reads whole content blocks around the host's page cache
	// where the store can (objstore.UncachedReader): for a reader that
	// streams an object out once (an S3 GET), where the copy into the
	// cache costs CPU for nothing. Clones of one image share its blocks
	// in the cache, so volumes do not.
	Uncached bool
	// OnClose, when set, runs at Close after the final flush, with its
	// error (a lease is released there), and at Discard with nil; either
	// is joined with ErrUnsettled if a data write may still land.
	OnClose func(ctx context.Context, flushErr error) error
}

// Open loads the volume id from s.
func Open(ctx context.Context, s objstore.Store, id blockmap.ID, opts OpenOptions) (*Volume, error) {
	head, ver, entries, err := readMap(ctx, s, id)
	if err != nil {
		return nil, err
	}
	if opts.Writable && head.ReadOnly {
		return nil, fmt.Errorf("%w: %s", ErrReadOnly, id)
	}
	v := &Volume{store: s, id: id, readOnly: !opts.Writable, remap: opts.Remap, follow: opts.Follow && !opts.Writable && !opts.Remap, uncached: opts.Uncached,
		guard: opts.Guard, hold: opts.Hold, copying: opts.Copying, now: time.Now, onClose: opts.OnClose, shift: head.BlockShift, sshift: blockmap.SubBlockShift(head.BlockShift), bs: head.BlockSize()}
	if opts.Writable {
		v.rw, _ = objstore.AsRangeWriter(s)
		v.syncer, _ = objstore.AsSyncer(s)
		v.syncWaits = objstore.SyncWaits(s)
		v.settler, _ = objstore.AsSettler(s)
		v.copier, _ = objstore.AsCopier(s)
		v.freshStat = objstore.FreshStat(s)
		_, canFence := objstore.AsFencer(s)
		v.fenced = opts.Fenced && canFence
		// Without in-place writes, the log is a chain of segments each
		// written once with Create; a flush then checks the head with a
		// fresh Stat.
		canLog := v.rw != nil && (v.freshStat || v.fenced) || v.rw == nil && v.freshStat && objstore.CheckCAS(s) == nil
		v.logOn = (opts.Log || logDefault) && canLog && len(head.Logs) < blockmap.MaxLogs
		v.scatter = v.logOn && v.rw != nil && v.syncer != nil && !v.syncWaits && (objstore.SyncWritesInode(s) || scatterDefault)
	}
	_, hasRW := objstore.AsRangeWriter(s)
	v.segLog = !hasRW
	v.indexLog = v.segLog && v.logOn && objstore.KeepsLogIndex(s)
	v.lender, _ = objstore.AsLender(s)
	v.bufs = BlockBufs(v.bs)
	if o, ok := objstore.AsHandleOpener(s); ok {
		v.handles = newHandleCache(o, openHandles)
		v.handles.lazy, _ = objstore.AsLazyCreator(s)
	}
	v.mu.head, v.mu.headVer, v.mu.entries = *head, ver, entries
	v.mu.dirtySegs, v.mu.dirtyObjs, v.mu.dirtyBlocks, v.mu.delta = map[uint32]bool{}, map[string]bool{}, map[int64]bool{}, map[int64]bool{}
	for _, d := range head.Delta {
		v.mu.delta[d.Block] = true
	}
	if opts.Writable || opts.Remap {
		// Reserve sequence numbers before using any.
		h := *head
		n := min(seqBatch, math.MaxUint64-h.SeqReserved)
		if n == 0 {
			return nil, fmt.Errorf("%w (volume %s)", ErrSeqExhausted, id)
		}
		v.mu.nextSeq, v.mu.seqEnd = h.SeqReserved, h.SeqReserved+n
		h.SeqReserved = v.mu.seqEnd
		if opts.NewEpoch {
			if opts.Writable && h.Unsealed == 0 {
				h.Unsealed = h.Epoch // see sealing in ops.go
			}
			h.Epoch++
		} else if opts.Copying {
			h.Epoch++
		}
		if v.logOn {
			// This writer's own log, named before it reads the others:
			// a writer taken over whose flush checks the head after
			// this swap fails, so each record it reported durable is
			// there when they are read below.
			h.Logs = append(slices.Clone(h.Logs), blockmap.LogRef{Epoch: h.Epoch, Seq: v.mu.nextSeq})
			v.mu.nextSeq++
		}
		if err := v.checkGuard(); err != nil {
			return nil, err
		}
		at := v.now()
		nv, err := s.Swap(ctx, blockmap.HeadName(id), blockmap.EncodeHead(&h), ver)
		if errors.Is(err, objstore.ErrConflict) {
			return nil, fmt.Errorf("%w (while opening %s)", ErrFenced, id)
		}
		if err != nil {
			return nil, fmt.Errorf("volume: open %s: %w", id, err)
		}
		v.mu.head, v.mu.headVer, v.mu.checkedAt = h, nv, at
	}
	old := v.mu.head
	if v.logOn {
		old.Logs = old.Logs[:len(old.Logs)-1]
	}
	ld, err := v.loadLogs(ctx, &old, v.mu.headVer, opts.Writable || opts.Remap)
	for try := 0; errors.Is(err, errLogMoved) && !opts.Writable && !opts.Remap && try < 100; try++ {
		// A log deleted after this head was read (a writer rotated or
		// closed it): read the head again, as readMap does for a segment.
		head, ver, entries, err = readMap(ctx, s, id)
		if err != nil {
			return nil, err
		}
		v.mu.head, v.mu.headVer, v.mu.entries = *head, ver, entries
		old = *head
		ld, err = v.loadLogs(ctx, &old, ver, false)
	}
	if err != nil {
		return nil, fmt.Errorf("volume: open %s: read the write log: %w", id, err)
	}
	logs := ld.logs
	if v.logOn {
		ref := v.mu.head.Logs[len(v.mu.head.Logs)-1]
		logs = append(logs, logFile{ref: ref, name: blockmap.LogName(id, ref.Epoch, ref.Seq)})
		if !v.segLog {
			logs[len(logs)-1].made = v.createLog(ctx, logs[len(logs)-1].name)
		}
	}
	v.mu.logs, v.mu.index = logs, ld.index
	v.mu.segInfo, v.mu.idxSegs, v.mu.idxNew = ld.segInfo, ld.idxSegs, ld.fresh
	v.mu.Lock()
	v.segResetLocked()
	v.mu.Unlock()
	segs := 0
	for _, lf := range logs[:len(old.Logs)] {
		segs += len(lf.segs)
	}
	// A writer that cannot keep a write log index (it does not log, or
	// not in segments) materializes one at open, as it checkpoints the
	// logs of the writers before it: its writes through the map must
	// not go under indexed bytes.
	idxMat := (opts.Writable || opts.Remap) && !old.Index.IsZero() && !v.indexLog
	if opts.Writable && opts.Handover && !opts.NewEpoch && len(old.Logs) <= keptLogs && segs < segCount && !idxMat {
		// The writers before released cleanly: none appends again, so
		// their logs may stay in the head until this writer checkpoints
		// anyway (docs/format.md, "Handover"). They count towards its
		// log's bound.
		v.mu.Lock()
		v.mu.kept = len(old.Logs)
		for _, lf := range logs[:len(old.Logs)] {
			v.mu.logBytes += lf.end - int64(lf.ref.From)
		}
		v.mu.Unlock()
	} else if (opts.Writable || opts.Remap) && (len(old.Logs) > 0 || idxMat) {
		// Another writer's logs: into the map now, and out of the head,
		// so that nothing it appends late is ever read.
		if err := v.checkpointNow(ctx); err != nil {
			return nil, fmt.Errorf("volume: open %s: checkpoint the write log of the writer before: %w", id, err)
		}
	}
	return v, nil
}

// checkpointNow checkpoints the write logs into the map and stores it;
// a writer opened with Copying in a new epoch, since the checkpoint wrote
// objects of its epoch that the stored map references, which its writes
// must copy for Discard to undo them
// (TestTakeoverCopyingWriterDiscardUndoesWrite).
func (v *Volume) checkpointNow(ctx context.Context) error {
	v.flushMu.Lock()
	defer v.flushMu.Unlock()
	v.gate.Lock()
	defer v.gate.Unlock()
	return v.checkpointStore(ctx)
}

// checkpointStore is checkpointNow; the caller holds flushMu and the
// gate exclusively.
func (v *Volume) checkpointStore(ctx context.Context) error {
	if err := v.checkpointLog(ctx, false); err != nil {
		return err
	}
	if v.copying {
		v.mu.Lock()
		v.mu.head.Epoch++
		v.mu.headDirty = true
		v.mu.Unlock()
	}
	return v.persist(ctx, v.takeCut())
}

// readMap reads the head and the map it names. An opener holds no lease
// (a follower) or has just taken it, so a writer elsewhere may flush
// meanwhile: a segment found missing then was replaced by a head stored
// after the one read (a writer deletes a segment only after that), and
// the head is read again, as long as it keeps changing, within a bound.
func readMap(ctx context.Context, s objstore.Store, id blockmap.ID) (*blockmap.Head, objstore.Version, []blockmap.Entry, error) {
	var failedVer objstore.Version
	for try := 0; ; try++ {
		head, ver, err := ReadHead(ctx, s, id)
		if err != nil {
			return nil, 0, nil, err
		}
		entries, err := LoadMap(ctx, s, head)
		if errors.Is(err, ErrCorrupt) && ver != failedVer && try < 100 {
			failedVer = ver
			continue
		}
		if err != nil {
			return nil, 0, nil, err
		}
		return head, ver, entries, nil
	}
}

// ReadHead reads and decodes a volume's head.
func ReadHead(ctx context.Context, s objstore.Store, id blockmap.ID) (*blockmap.Head, objstore.Version, error) {
	b, ver, err := s.Get(ctx, blockmap.HeadName(id))
	if objstore.IsNotExist(err) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, 0, err
	}
	h, err := blockmap.DecodeHead(b)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: head of %s: %v", ErrCorrupt, id, err)
	}
	if h.ID != id {
		return nil, 0, fmt.Errorf("%w: head of %s names volume %s", ErrCorrupt, id, h.ID)
	}
	return h, ver, nil
}

// LoadMap reads every segment of head and returns the volume's entries.
func LoadMap(ctx context.Context, s objstore.Store, head *blockmap.Head) ([]blockmap.Entry, error) {
	n := head.Blocks()
	entries := make([]blockmap.Entry, n)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, ref := range head.Segments {
		g.Go(func() error {
			b, _, err := s.Get(ctx, ref.Name())
			if objstore.IsNotExist(err) {
				return fmt.Errorf("%w: segment %s of volume %s is missing", ErrCorrupt, ref.Name(), head.ID)
			}
			if err != nil {
				return err
			}
			lo := int64(ref.Index) * blockmap.SegmentEntries
			hi := min(lo+blockmap.SegmentEntries, n)
			if err := blockmap.DecodeSegment(b, ref, entries[lo:hi]); err != nil {
				return fmt.Errorf("%w: volume %s: %v", ErrCorrupt, head.ID, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	head.Apply(entries)
	return entries, nil
}

// ID returns the volume's ID.
func (v *Volume) ID() blockmap.ID { return v.id }

// SetOnCopy makes the writer call fn for every partial write that moves
// a block out of an object it does not own (shared with a snapshot or a
// clone's parent, or a writer's it took over from) into a new one: a
// copy-on-write, of the block or of the sub-blocks the write needs. A
// write that goes to the write log first is counted when the log is
// applied. Call it before the volume is shared.
func (v *Volume) SetOnCopy(fn func()) { v.onCopy = fn }

// Size returns the volume's size in bytes.
func (v *Volume) Size() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return int64(v.mu.head.Size)
}

// BlockSize returns the block size in bytes.
func (v *Volume) BlockSize() int64 { return v.bs }

// ReadOnly reports whether the handle refuses writes.
func (v *Volume) ReadOnly() bool { return v.readOnly }

// Head returns a copy of the volume's head as this handle sees it.
func (v *Volume) Head() blockmap.Head {
	v.mu.Lock()
	defer v.mu.Unlock()
	h := v.mu.head
	h.Segments = append([]blockmap.SegmentRef(nil), h.Segments...)
	h.Delta = append([]blockmap.DeltaEntry(nil), h.Delta...)
	h.Logs = slices.Clone(h.Logs)
	return h
}

// Entries returns a copy of the map.
func (v *Volume) Entries() []blockmap.Entry {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]blockmap.Entry(nil), v.mu.entries...)
}

// checkIO validates a request against the volume's size and state.
func (v *Volume) checkIO(off, n int64, write bool) error {
	if err := v.checkState(off, n, write); err != nil {
		return err
	}
	if write {
		// NB: not under v.mu: the guard may wait (a lease renewal in
		// progress), and reads must not wait with it.
		return v.checkGuard()
	}
	return nil
}

func (v *Volume) checkState(off, n int64, write bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case v.mu.closed:
		return ErrClosed
	case write && v.readOnly:
		return ErrReadOnly
	case write && v.mu.err != nil:
		return v.mu.err
	case off < 0 || n < 0 || off+n < off || uint64(off+n) > v.mu.head.Size:
		return fmt.Errorf("%w: offset %d length %d, volume size %d", ErrOutOfRange, off, n, v.mu.head.Size)
	}
	return nil
}

// checkGuard asks the guard, if any, whether this handle may write.
func (v *Volume) checkGuard() error {
	if v.guard == nil {
		return nil
	}
	return v.guard()
}

// forBlocks calls fn for each block that [off, off+n) touches, with the
// block index, the offset in the block, and the range's position in the
// request.
func (v *Volume) forBlocks(off, n int64, fn func(b, boff, pos, l int64) error) error {
	for pos := int64(0); pos < n; {
		b := (off + pos) >> v.shift
		boff := (off + pos) & (v.bs - 1)
		l := min(v.bs-boff, n-pos)
		if err := fn(b, boff, pos, l); err != nil {
			return err
		}
		pos += l
	}
	return nil
}

func (v *Volume) entry(b int64) (blockmap.Entry, uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.entries[b], v.mu.head.Epoch
}

// entryIn is entry for reads, which hold no gate: the map may have
// shrunk since the request was checked (a resize, or a follower's reload
// after another host's), so a block past its end is ErrOutOfRange.
func (v *Volume) entryIn(b int64) (blockmap.Entry, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if b >= int64(len(v.mu.entries)) {
		return blockmap.Entry{}, fmt.Errorf("%w: block %d, volume size %d (shrunk during the read)", ErrOutOfRange, b, v.mu.head.Size)
	}
	return v.mu.entries[b], nil
}

// entryLogged is entryIn with (a copy of) the block's logged extents
// that overlap [boff, boff+n), and the generation of the index.
func (v *Volume) entryLogged(b, boff, n int64) (blockmap.Entry, []logExt, uint64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if b >= int64(len(v.mu.entries)) {
		return blockmap.Entry{}, nil, 0, fmt.Errorf("%w: block %d, volume size %d (shrunk during the read)", ErrOutOfRange, b, v.mu.head.Size)
	}
	return v.mu.entries[b], v.overlayLocked(b, boff, n), v.mu.logGen, nil
}

// ReadAt reads len(p) bytes at off.
func (v *Volume) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := v.refresh(ctx); err != nil {
		return err
	}
	if err := v.checkIO(off, int64(len(p)), false); err != nil {
		return err
	}
	return v.read(ctx, p, off)
}

// read is ReadAt after the checks.
func (v *Volume) read(ctx context.Context, p []byte, off int64) error {
	return v.forBlocks(off, int64(len(p)), func(b, boff, pos, l int64) error {
		return v.readBlock(ctx, b, p[pos:pos+l], boff)
	})
}

// ReadTo reads n bytes at off and passes them to fn, in one or more
// buffers that are valid until fn returns; it returns fn's error if fn
// fails, and does not call fn if the read fails. On a store that lends
// its buffers (objstore.Lender), a read inside one block reaches fn
// without being copied.
func (v *Volume) ReadTo(ctx context.Context, off, n int64, fn func(bufs [][]byte) error) error {
	if err := v.refresh(ctx); err != nil {
		return err
	}
	if err := v.checkIO(off, n, false); err != nil {
		return err
	}
	if v.lender != nil && n > 0 && off>>v.shift == (off+n-1)>>v.shift {
		e, exts, _, err := v.entryLogged(off>>v.shift, off&(v.bs-1), n)
		if err != nil {
			return err
		}
		src, end := v.runAt(e, off&(v.bs-1))
		if len(exts) == 0 && src.Kind() != blockmap.Zero && (off+n-1)&(v.bs-1) < end {
			err := v.lender.ReadLend(ctx, src.ObjectName(), off&(v.bs-1), int(n), func(bufs [][]byte) error {
				return fn(padZeros(bufs, n))
			})
			if !objstore.IsNotExist(err) {
				return err
			}
			// Freed since we looked (a trim, then a flush): read below
			// looks again.
		}
	}
	var p []byte
	if n <= v.bs {
		bp := v.bufs.Get().(*[]byte)
		defer v.bufs.Put(bp)
		p = (*bp)[:n]
	} else {
		p = make([]byte, n)
	}
	if err := v.read(ctx, p, off); err != nil {
		return err
	}
	return fn([][]byte{p})
}

// zeros pads short lent reads (sparse objects read short).
var zeros [64 << 10]byte

// padZeros appends zeros to bufs up to n bytes in all.
func padZeros(bufs [][]byte, n int64) [][]byte {
	for _, b := range bufs {
		n -= int64(len(b))
	}
	for n > 0 {
		z := zeros[:min(n, int64(len(zeros)))]
		bufs = append(bufs, z)
		n -= int64(len(z))
	}
	return bufs
}

func (v *Volume) readBlock(ctx context.Context, b int64, p []byte, boff int64) error {
	for try := 0; ; try++ {
		e, exts, gen, err := v.entryLogged(b, boff, int64(len(p)))
		if err != nil {
			return err
		}
		if len(exts) > 0 {
			err = v.readLogged(ctx, e, exts, p, boff)
		} else {
			err = v.readEntry(ctx, e, p, boff)
		}
		if !objstore.IsNotExist(err) {
			return err
		}
		// The object may have been freed by a trim and a flush after we
		// looked at the entry (here, or on the writer this handle
		// follows): look again, as long as the entry keeps changing
		// (each change is another flush of the writer), within a bound.
		if v.follow {
			if err := v.refresh(ctx); err != nil {
				return err
			}
		}
		now, _, ngen, nerr := v.entryLogged(b, boff, int64(len(p)))
		if nerr != nil {
			return nerr
		}
		if now.Equal(e) && ngen == gen || try == 100 {
			return fmt.Errorf("%w: block %d: %v", ErrCorrupt, b, err)
		}
	}
}

// readEntry reads p at boff in the block e describes: a partial block
// with one request per run of sub-blocks in the same object.
func (v *Volume) readEntry(ctx context.Context, e blockmap.Entry, p []byte, boff int64) error {
	for pos := int64(0); pos < int64(len(p)); {
		src, end := v.runAt(e, boff+pos)
		n := min(end-boff-pos, int64(len(p))-pos)
		if err := v.readObject(ctx, src, p[pos:pos+n], boff+pos); err != nil {
			return err
		}
		pos += n
	}
	return nil
}

// runAt returns the entry whose object holds byte boff of the block e
// describes (e itself, or for a partial block its object or its base),
// and where in the block the run of sub-blocks it holds from there ends.
func (v *Volume) runAt(e blockmap.Entry, boff int64) (blockmap.Entry, int64) {
	if e.Kind() != blockmap.Partial {
		return e, v.bs
	}
	mask := e.Mask()
	s := uint(boff >> v.sshift)
	in := mask>>s&1 == 1
	if !in {
		mask = ^mask
	}
	// The run ends at the first clear bit of mask at or after s.
	end := int64(bits.TrailingZeros64(^(mask >> s))) + int64(s)
	if in {
		return e.Object(), end << v.sshift
	}
	return e.Base(), end << v.sshift
}

// readObject reads p at boff from e's own object.
func (v *Volume) readObject(ctx context.Context, e blockmap.Entry, p []byte, boff int64) error {
	if e.Kind() == blockmap.Zero {
		clear(p)
		return nil
	}
	if v.handles == nil {
		return v.store.ReadAt(ctx, e.ObjectName(), p, boff)
	}
	ch, err := v.handles.get(ctx, e.ObjectName(), false)
	if err != nil {
		return err
	}
	defer v.handles.put(ch)
	if v.uncached && e.Kind() == blockmap.Content && boff == 0 && int64(len(p)) == v.bs {
		return objstore.ReadAtUncached(ch.h, p, boff)
	}
	return ch.h.ReadAt(p, boff)
}

// writeAt writes p into object name in place (creating it sparse).
func (v *Volume) writeAt(ctx context.Context, name string, p []byte, off int64) error {
	return v.writeIn(ctx, name, p, off, false)
}

// writeData is writeAt into a private block of this writer: an object
// it creates is durable only once synced (objstore.LazyCreator), which
// every flush does before it stores a map that names the block or
// reports anything durable (syncObjects: every object written in place
// since the last flush is in dirtyObjs). See docs/format.md, "Private
// blocks created without syncs".
func (v *Volume) writeData(ctx context.Context, name string, p []byte, off int64) error {
	return v.writeIn(ctx, name, p, off, true)
}

func (v *Volume) writeIn(ctx context.Context, name string, p []byte, off int64, lazy bool) error {
	if v.handles == nil {
		return v.rw.WriteAt(ctx, name, p, off)
	}
	var ch *cachedHandle
	var err error
	if lazy {
		ch, err = v.handles.getLazy(ctx, name)
	} else {
		ch, err = v.handles.get(ctx, name, true)
	}
	if err != nil {
		return err
	}
	defer v.handles.put(ch)
	return ch.h.WriteAt(p, off)
}

// WriteAt writes p at off. With fua, p is durable when it returns (other
// unflushed writes need not be).
func (v *Volume) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := v.checkIO(off, int64(len(p)), true); err != nil {
		return err
	}
	v.noteBurst(ctx, int64(len(p)), fua)
	var note *writeNote
	err := v.shared(ctx, func() error {
		if fua {
			note = &writeNote{}
		}
		return v.forBlocks(off, int64(len(p)), func(b, boff, pos, l int64) error {
			return v.writeBlock(ctx, b, boff, p[pos:pos+l], note)
		})
	})
	if err == nil && fua {
		err = v.flushWrite(ctx, note)
	}
	return v.storeFenced(err)
}

// writeNote records, for a write with FUA, what it did: the blocks it
// wrote in place into their objects, and whether it changed the map.
type writeNote struct {
	blocks  []int64
	objs    []string
	changed bool
}

// flushWrite makes one write durable (FUA): when the write went in place
// into objects the stored map already references, it syncs just those
// and checks the head (see persistInPlace), whatever else is unflushed;
// otherwise it flushes.
func (v *Volume) flushWrite(ctx context.Context, n *writeNote) error {
	if (v.freshStat || v.fenced) && !n.changed && len(n.blocks) > 0 {
		done, err := func() (bool, error) {
			v.flushMu.Lock()
			defer v.flushMu.Unlock()
			// Under flushMu every earlier cut is either stored or back
			// in the dirty sets, so a block whose segment is not dirty
			// has its entry stored.
			v.mu.Lock()
			// A stored head whose logs still replay records the index
			// dropped would replay them over this write after a crash.
			ok := !v.mu.closed && len(v.mu.pending) == 0 && v.age(v.mu.dirtySince) <= MaxUnflushedAge && v.mu.dropStored == v.mu.dropGen
			for _, b := range n.blocks {
				ok = ok && !v.mu.dirtySegs[uint32(b/blockmap.SegmentEntries)]
			}
			ver := v.mu.headVer
			v.mu.Unlock()
			if !ok {
				return false, nil
			}
			if err := v.writable(); err != nil {
				return true, err
			}
			if err := v.syncObjects(ctx, n.objs); err != nil {
				return true, err
			}
			if v.fenced {
				return true, v.checkGuard()
			}
			err := v.checkFence(ctx, ver)
			if errors.Is(err, ErrFenced) {
				v.mu.Lock()
				if v.mu.err == nil {
					v.mu.err = err
				}
				v.mu.Unlock()
			}
			return true, err
		}()
		if done {
			return err
		}
	}
	return v.Flush(ctx)
}

// gated runs fn holding the gate shared. The gate is released if fn
// panics: a server that recovers a panic in a request (package nbd) must
// find the volume usable.
//
// A handle closed while fn waited for the gate refuses it: shut took the
// gate to wait out every write in flight, and the lease goes after it
// (TestHandoverNoFlushAfterShut).
func (v *Volume) gated(fn func() error) error {
	v.gate.RLock()
	defer v.gate.RUnlock()
	if v.isClosed() {
		return ErrClosed
	}
	return fn()
}

// isClosed reports whether the handle is closed.
func (v *Volume) isClosed() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.closed
}

// lockFlush takes flushMu for a flush (or anything that stores a map),
// and refuses with ErrClosed a handle closed meanwhile: shut takes
// flushMu to wait out the flush in flight, and releases the lease after
// it, so a flush that was waiting must not run then (the next writer may
// have read and kept the write log it would commit to:
// TestHandoverNoFlushAfterShut).
func (v *Volume) lockFlush() error {
	v.flushMu.Lock()
	if v.isClosed() {
		v.flushMu.Unlock()
		return ErrClosed
	}
	return nil
}

// errTainted: a write met an object that a write of unknown outcome may
// still change (see dataWritten); it is run again once the object is
// retired.
var errTainted = errors.New("volume: object tainted by a write of unknown outcome")

// shared runs fn, a write, holding the gate shared, after retiring the
// tainted objects with the gate held exclusively (so that no in-place
// write to them is in flight); it runs fn again when fn met an object
// tainted meanwhile.
//
// A write that met logged bytes (see logsBlock) while the write log takes
// no more records (errLogBroken: an append or a commit failed) flushes
// first, which checkpoints the log into the map, stores a head whose log
// holds none of those records and starts a new log, and then runs again.
// Neither writing over the block through the map (the index would still
// overlay it with the older logged bytes, and the next checkpoint would
// write them over the newer write) nor dropping the overlap from the
// index (the stored head's log would replay the older bytes over the
// newer ones at the next open, until a checkpoint's head swap) keeps
// every acknowledged flush; the flush does, at the cost of a head swap
// once per failed append. If the flush fails, so does the write.
func (v *Volume) shared(ctx context.Context, fn func() error) error {
	for {
		if v.keptNoLog() {
			if err := v.checkpointKept(ctx); err != nil {
				return fmt.Errorf("volume: write: checkpoint the write logs kept at open: %w", err)
			}
		}
		v.mu.Lock()
		n := len(v.mu.tainted)
		v.mu.Unlock()
		if n > 0 {
			err := func() error {
				v.gate.Lock()
				defer v.gate.Unlock()
				return v.retireLocked(ctx)
			}()
			if err != nil {
				return err
			}
		}
		err := v.gated(fn)
		if errors.Is(err, errLogBroken) {
			if err := v.Flush(ctx); err != nil {
				return fmt.Errorf("volume: write: checkpoint the write log after a failed append: %w", err)
			}
			continue
		}
		if !errors.Is(err, errTainted) {
			return err
		}
	}
}

// retireLocked copies every block whose object is tainted to a new
// object, which the map then names instead: a late write can only change
// the old one, which nothing references once the map is flushed. The
// caller holds the gate exclusively.
func (v *Volume) retireLocked(ctx context.Context) error {
	v.mu.Lock()
	epoch := v.mu.head.Epoch
	var blocks []int64
	if len(v.mu.tainted) > 0 {
		for b, e := range v.mu.entries {
			if v.owns(e, epoch) && v.mu.tainted[e.ObjectName()] {
				blocks = append(blocks, int64(b))
			}
		}
	}
	v.mu.Unlock()
	if len(blocks) > 0 {
		bp := v.bufs.Get().(*[]byte)
		defer v.bufs.Put(bp)
		buf := *bp
		for _, b := range blocks {
			e, _ := v.entry(b)
			if err := v.settle(ctx, e.ObjectName()); err != nil {
				return err
			}
			if err := v.readEntry(ctx, e, buf, 0); err != nil {
				return err
			}
			seq, err := v.allocSeq()
			if err != nil {
				return err
			}
			ne := blockmap.PrivateEntry(v.id, epoch, seq)
			if err := v.writeObject(ctx, ne.ObjectName(), blockmap.Entry{}, 0, buf); err != nil {
				return err
			}
			v.mu.Lock()
			v.setEntryLocked(b, ne)
			v.mu.freed = append(v.mu.freed, e.ObjectName())
			delete(v.mu.dirtyObjs, e.ObjectName())
			v.mu.Unlock()
		}
	}
	v.mu.Lock()
	v.mu.tainted = nil
	v.mu.Unlock()
	return nil
}

// owns reports whether the volume may change e's object in place (a
// partial block's own object, not its base).
func (v *Volume) owns(e blockmap.Entry, epoch uint64) bool {
	return e.IsPrivate() && e.Owner() == v.id && e.Epoch() == epoch
}

// blockLen is the length of block b inside the volume.
func (v *Volume) blockLen(b int64) int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.head.BlockLen(b)
}

// writeBlock writes data at boff in block b: into the write log if the
// handle logs and the block is not one it writes in place, else as
// writeBlockMap does. The caller holds the gate (shared or exclusive).
func (v *Volume) writeBlock(ctx context.Context, b, boff int64, data []byte, note *writeNote) error {
	if v.logOn {
		st := &v.stripe[b%stripes]
		st.Lock()
		e, epoch := v.entry(b)
		owned := v.owns(e, epoch) && !v.isTainted(e)
		log, err := v.logsBlock(b, e, owned, boff, int64(len(data)))
		if err != nil || log {
			defer st.Unlock()
			if err != nil {
				return err
			}
			note.mapChange()
			return v.appendLog(ctx, b, boff, data)
		}
		st.Unlock()
	} else if v.keptNoLog() {
		return errLogBroken // (shared flushes, which checkpoints, and runs it again)
	}
	return v.writeBlockMap(ctx, b, boff, data, note)
}

// checkpointKept checkpoints the logs a writer without a log of its own
// kept at open, before its first data write (keptNoLog), as checkpointNow
// does (a writer opened with Copying, which must leave nothing of an
// unfinished write for Discard to miss, then stores the map in a new
// epoch). Under flushMu and the gate held exclusively: no write of it is
// in flight or dirty, so the flush stores none.
func (v *Volume) checkpointKept(ctx context.Context) error {
	if err := v.lockFlush(); err != nil {
		return err
	}
	defer v.flushMu.Unlock()
	v.gate.Lock()
	defer v.gate.Unlock()
	v.mu.Lock()
	kept := v.mu.kept
	v.mu.Unlock()
	if kept == 0 {
		return nil
	}
	return v.storeFenced(v.checkpointStore(ctx))
}

// keptNoLog reports whether this writer, which does not log, still has
// the logs it kept at open (OpenOptions.Handover), and then asks the next
// flush to checkpoint them: its first data write must wait for that
// checkpoint, so that no write of it goes through the map under logged
// bytes, and the checkpoint's flush stores none of its writes (a writer
// opened with Copying must leave nothing of an unfinished write behind
// for Discard to miss: TestHandoverNoLogWriterDiscardUndoesWrite).
func (v *Volume) keptNoLog() bool {
	if v.logOn {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mu.kept == 0 {
		return false
	}
	v.mu.logForce = true
	return true
}

func (v *Volume) isTainted(e blockmap.Entry) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.tainted[e.ObjectName()]
}

// writeBlockMap writes data at boff in block b into the objects the map
// names, copying on write where the block is not this writer's. The
// caller holds the gate (shared or exclusive).
func (v *Volume) writeBlockMap(ctx context.Context, b, boff int64, data []byte, note *writeNote) error {
	st := &v.stripe[b%stripes]
	st.Lock()
	e, epoch := v.entry(b)
	v.mu.Lock()
	owned, tainted := v.owns(e, epoch), v.mu.tainted[e.ObjectName()]
	unsealedBase := unsealed(&v.mu.head, e.Base()) || e.Kind() != blockmap.Partial && unsealed(&v.mu.head, e)
	v.mu.Unlock()
	if owned && tainted {
		st.Unlock()
		return errTainted
	}
	touched := v.subBlocks(boff, int64(len(data)))
	if owned && v.rw != nil && e.Mask()&touched == touched {
		// NB: an in-place write needs the stripe only to look at the
		// entry. An owned entry changes only by a trim of the whole block
		// (which a concurrent write overlaps, so either order is right),
		// by a write that adds sub-blocks to a partial block (others than
		// this write's, in the same object), or under the exclusive gate
		// (snapshot, resize, hash), which waits for this write. Not
		// holding it lets writes to one block run in parallel, which
		// matters at network latency (RADOS).
		st.Unlock()
		note.inPlace(b, e.ObjectName())
		return v.writeObject(ctx, e.ObjectName(), e, boff, data)
	}
	defer st.Unlock()
	if owned && v.rw != nil {
		note.mapChange()
		return v.writePartial(ctx, b, e, e, boff, data) // sub-blocks this partial block lacks
	}
	if owned {
		// Read-modify-write of the whole block.
		if e.Kind() == blockmap.Partial {
			note.mapChange()
		} else {
			note.inPlace(b, e.ObjectName())
		}
		if err := v.writeObject(ctx, e.ObjectName(), e, boff, data); err != nil {
			return err
		}
		if e.Kind() == blockmap.Partial {
			v.setEntry(b, e.Object()) // now whole
		}
		return nil
	}
	note.mapChange()
	seq, err := v.allocSeq()
	if err != nil {
		return err
	}
	ne := blockmap.PrivateEntry(v.id, epoch, seq)
	if e.Kind() != blockmap.Zero && (boff != 0 || int64(len(data)) != v.bs) && v.onCopy != nil {
		v.onCopy()
	}
	// NB: a block that a writer taken over may still change (unsealed)
	// is copied whole, so that no partial block reads from it.
	if v.rw != nil && e.Kind() != blockmap.Zero && !unsealedBase {
		return v.writePartial(ctx, b, e, ne, boff, data)
	}
	if err := v.writeObject(ctx, ne.ObjectName(), e, boff, data); err != nil {
		return err
	}
	v.setEntry(b, ne)
	return nil
}

// setEntry points block b at e; the caller holds b's stripe.
func (v *Volume) setEntry(b int64, e blockmap.Entry) {
	v.mu.Lock()
	v.setEntryLocked(b, e)
	v.mu.Unlock()
}

// subBlocks returns the mask of the sub-blocks that [boff, boff+n)
// touches (n > 0).
func (v *Volume) subBlocks(boff, n int64) uint64 {
	s0, s1 := uint(boff>>v.sshift), uint((boff+n-1)>>v.sshift)
	return (blockmap.AllSubBlocks >> (63 - s1)) &^ (1<<s0 - 1)
}

// writePartial writes data at boff in block b (entry old, not Zero) into
// obj's object, which becomes (or stays) a partial block over old's base:
// in place if obj is old's own object, else a new object, into which the
// sub-blocks old's object holds are copied first. A sub-block the write
// covers only in part and that the object lacks is first filled from the
// base, so the write moves at most two sub-blocks more than its own
// bytes. The caller holds b's stripe, so the mask changes under it.
func (v *Volume) writePartial(ctx context.Context, b int64, old, obj blockmap.Entry, boff int64, data []byte) error {
	if err := v.checkGuard(); err != nil {
		return err
	}
	name := obj.ObjectName()
	base, have := old, uint64(0)
	if old.Kind() == blockmap.Partial {
		base, have = old.Base(), old.Mask()
	}
	bp := v.bufs.Get().(*[]byte)
	defer v.bufs.Put(bp)
	buf := *bp
	end := boff + int64(len(data))
	sbs := int64(1) << v.sshift
	if old.Kind() == blockmap.Partial && old.ObjectName() != name {
		// Copy the sub-blocks old's object holds, except those the write
		// covers whole, run by run.
		covered := uint64(0)
		if c0, c1 := (boff+sbs-1)>>v.sshift, end>>v.sshift; c0 < c1 {
			covered = v.subBlocks(c0<<v.sshift, (c1-c0)<<v.sshift)
		}
		if err := v.copyRuns(ctx, name, old.Object(), have&^covered, buf); err != nil {
			return err
		}
	}
	// Extend the write to whole sub-blocks where it starts or ends inside
	// one the object lacks, with the base's bytes.
	lo, hi := boff, end
	if have>>(lo>>v.sshift)&1 == 0 {
		lo &^= sbs - 1
	}
	if have>>((hi-1)>>v.sshift)&1 == 0 && hi&(sbs-1) != 0 {
		hi = min((hi|(sbs-1))+1, v.bs)
	}
	p := data
	if lo != boff || hi != end {
		p = buf[:hi-lo]
		// Both ends in one sub-block: one read.
		if lo < boff && end < hi && hi-lo <= sbs {
			if err := v.readEntry(ctx, base, p, lo); err != nil {
				return err
			}
		} else {
			if lo < boff {
				if err := v.readEntry(ctx, base, p[:boff-lo], lo); err != nil {
					return err
				}
			}
			if end < hi {
				if err := v.readEntry(ctx, base, p[end-lo:], end); err != nil {
					return err
				}
			}
		}
		copy(p[boff-lo:], data)
	}
	if err := v.dataWritten(name, v.writeData(ctx, name, p, lo)); err != nil {
		return err
	}
	if old.ObjectName() != name {
		if err := v.settle(ctx, name); err != nil {
			return err
		}
	}
	mask := have | v.subBlocks(boff, int64(len(data)))
	if old.Kind() == blockmap.Partial && old.ObjectName() == name && !v.logOn {
		// The block's second write that needs sub-blocks it lacks: the
		// rest is copied from the base, and the block is whole. Each new
		// sub-block changes the map, and a guest that flushes after
		// every write would pay a map write for each; so a block costs
		// at most two, where whole-block copy-on-write cost one, and its
		// first write still moves a sub-block, not the block.
		//
		// Not on a logging writer: there a guest that flushes often
		// writes such blocks through the log (its checkpoint batches the
		// map changes), so a write that gets here came past the burst,
		// whose map changes the next flush batches anyway; copying the
		// rest of the block would only move it whole, holding its stripe.
		if err := v.copyRuns(ctx, name, base, ^mask, buf); err != nil {
			return err
		}
		mask = blockmap.AllSubBlocks
	}
	ne := blockmap.PartialEntry(obj, base, mask)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.syncer != nil {
		v.mu.dirtyObjs[name] = true
	}
	if !ne.Equal(old) {
		v.setEntryLocked(b, ne)
	} else if v.syncer == nil {
		v.mu.fence = true // see writeObject
	}
	v.dirtiedLocked()
	return nil
}

// writeSubBlocks writes the sub-blocks in mask, at their places in p (a
// block's buffer), into obj's object, which becomes (or stays) a partial
// block over old's base (old is not Zero): in place if obj is old's own
// object, else a new object, into which the sub-blocks old's object holds
// outside mask are copied first, through p's bytes outside mask. Unlike
// writePartial, a partial block that gains sub-blocks in place stays
// partial: its map changes are batched by the checkpoint that calls it.
// The caller holds the gate exclusively.
func (v *Volume) writeSubBlocks(ctx context.Context, b int64, old, obj blockmap.Entry, mask uint64, p []byte) error {
	if err := v.checkGuard(); err != nil {
		return err
	}
	name := obj.ObjectName()
	base, have := old, uint64(0)
	if old.Kind() == blockmap.Partial {
		base, have = old.Base(), old.Mask()
	}
	if old.Kind() == blockmap.Partial && old.ObjectName() != name {
		if err := v.copyRuns(ctx, name, old.Object(), have&^mask, p); err != nil {
			return err
		}
	}
	for rest := mask; rest != 0; {
		s := int64(bits.TrailingZeros64(rest))
		n := int64(bits.TrailingZeros64(^(rest >> s)))
		rest &^= v.subBlocks(s<<v.sshift, n<<v.sshift)
		lo, hi := s<<v.sshift, min((s+n)<<v.sshift, v.bs)
		if err := v.dataWritten(name, v.writeData(ctx, name, p[lo:hi], lo)); err != nil {
			return err
		}
	}
	if old.ObjectName() != name {
		if err := v.settle(ctx, name); err != nil {
			return err
		}
	}
	ne := blockmap.PartialEntry(obj, base, have|mask)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.syncer != nil {
		v.mu.dirtyObjs[name] = true
	}
	if !ne.Equal(old) {
		v.setEntryLocked(b, ne)
	} else if v.syncer == nil {
		v.mu.fence = true // see writeObject
	}
	v.dirtiedLocked()
	return nil
}

// copyRuns copies into the object name, run by run through buf (a
// block's buffer, each run at its place in it), the sub-blocks in mask,
// read from the block src describes.
func (v *Volume) copyRuns(ctx context.Context, name string, src blockmap.Entry, mask uint64, buf []byte) error {
	for rest := mask; rest != 0; {
		s := int64(bits.TrailingZeros64(rest))
		n := int64(bits.TrailingZeros64(^(rest >> s)))
		rest &^= v.subBlocks(s<<v.sshift, n<<v.sshift)
		off := s << v.sshift
		p := buf[off:min((s+n)<<v.sshift, v.bs)]
		if err := v.readEntry(ctx, src, p, off); err != nil {
			return err
		}
		if err := v.dataWritten(name, v.writeData(ctx, name, p, off)); err != nil {
			return err
		}
	}
	return nil
}

// mapChange notes a write that changes the map, if n is not nil.
func (n *writeNote) mapChange() {
	if n != nil {
		n.changed = true
	}
}

// setEntryLocked changes block b's entry, for the next flush to store.
// The caller holds v.mu.
func (v *Volume) setEntryLocked(b int64, e blockmap.Entry) {
	v.mu.entries[b] = e
	v.mu.dirtySegs[uint32(b/blockmap.SegmentEntries)] = true
	v.mu.dirtyBlocks[b] = true
	v.dirtiedLocked()
}

// inPlace notes a write into block b's object name, if n is not nil.
func (n *writeNote) inPlace(b int64, name string) {
	if n != nil {
		n.blocks = append(n.blocks, b)
		if !slices.Contains(n.objs, name) {
			n.objs = append(n.objs, name)
		}
	}
}

// writeObject writes data at boff into the object name, whose current
// content is described by old (old is a Zero entry for an object that
// does not exist yet, or the block being copied).
func (v *Volume) writeObject(ctx context.Context, name string, old blockmap.Entry, boff int64, data []byte) error {
	if err := v.checkGuard(); err != nil {
		return err
	}
	fresh := old.ObjectName() != name
	whole := boff == 0 && int64(len(data)) == v.bs
	switch {
	case v.rw != nil && (!fresh || old.Kind() == blockmap.Zero):
		// In place, or sparse into a new object.
		if err := v.dataWritten(name, v.writeData(ctx, name, data, boff)); err != nil {
			return err
		}
	case v.rw != nil && v.copier != nil && !whole && old.Kind() != blockmap.Partial:
		// Copy-on-write inside the store, then the new bytes in place.
		if err := v.dataWritten(name, v.copier.Copy(ctx, old.ObjectName(), name)); err != nil {
			return err
		}
		if err := v.dataWritten(name, v.writeData(ctx, name, data, boff)); err != nil {
			return err
		}
	default:
		// Build the whole block: copy-on-write through this process, or
		// a backend without in-place writes.
		bp := v.bufs.Get().(*[]byte)
		defer v.bufs.Put(bp)
		buf := *bp
		if !whole {
			if err := v.readEntry(ctx, old, buf, 0); err != nil {
				return err
			}
		}
		copy(buf[boff:], data)
		var err error
		if v.rw != nil {
			err = v.writeData(ctx, name, buf, 0)
		} else {
			_, err = v.store.Put(ctx, name, buf)
		}
		if err := v.dataWritten(name, err); err != nil {
			return err
		}
	}
	if fresh {
		if err := v.settle(ctx, name); err != nil {
			return err
		}
	}
	switch {
	case v.rw != nil && v.syncer != nil:
		v.mu.Lock()
		v.mu.dirtyObjs[name] = true
		v.dirtiedLocked()
		v.mu.Unlock()
	case !fresh:
		// Durable already, but in an object that a writer which took
		// the volume over meanwhile may have copied and dropped from
		// the map: the next flush checks the head all the same, so that
		// such a write fails that flush (ErrFenced) instead of being
		// reported durable, and the volume counts as dirty until then.
		v.mu.Lock()
		v.mu.fence = true
		v.dirtiedLocked()
		v.mu.Unlock()
	}
	return nil
}

func (v *Volume) allocSeq() (uint64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mu.nextSeq >= v.mu.seqEnd {
		if v.mu.seqEnd == math.MaxUint64 {
			return 0, ErrSeqExhausted
		}
		return 0, errors.New("volume: sequence numbers of this open exhausted; reopen the volume")
	}
	v.mu.nextSeq++
	return v.mu.nextSeq - 1, nil
}

// WriteZeroes makes [off, off+n) read as zeros. Whole blocks are
// deallocated unless noHole is set; partial blocks are written with
// zeros unless they are already zero.
func (v *Volume) WriteZeroes(ctx context.Context, off, n int64, noHole, fua bool) error {
	if err := v.checkIO(off, n, true); err != nil {
		return err
	}
	err := v.shared(ctx, func() error { return v.zeroRange(ctx, off, n, noHole) })
	if err == nil && fua {
		err = v.Flush(ctx)
	}
	return v.storeFenced(err)
}

// storeFenced turns a refusal of the store to serve a fenced connection
// (objstore.ErrFenced: another writer took the volume over and fenced this
// one) into ErrFenced, for good: this handle writes nothing more.
func (v *Volume) storeFenced(err error) error {
	if !errors.Is(err, objstore.ErrFenced) || errors.Is(err, ErrFenced) {
		return err
	}
	err = fmt.Errorf("%w: %s: %w", ErrFenced, v.id, err)
	v.mu.Lock()
	if v.mu.err == nil {
		v.mu.err = err
	}
	v.mu.Unlock()
	return err
}

// Trim deallocates whole blocks in [off, off+n) and zeroes partial ones.
func (v *Volume) Trim(ctx context.Context, off, n int64) error {
	return v.WriteZeroes(ctx, off, n, false, false)
}

// zeroRange does WriteZeroes; the caller holds the gate.
func (v *Volume) zeroRange(ctx context.Context, off, n int64, noHole bool) error {
	var zeros []byte
	return v.forBlocks(off, n, func(b, boff, pos, l int64) error {
		e, _ := v.entry(b)
		if e.Kind() == blockmap.Zero && !v.logged(b) {
			return nil
		}
		if !noHole && boff == 0 && (l == v.bs || l == v.blockLen(b)) {
			v.deallocate(b)
			return nil
		}
		if zeros == nil {
			zeros = make([]byte, v.bs)
		}
		return v.writeBlock(ctx, b, boff, zeros[:l], nil)
	})
}

// deallocate makes block b a Zero entry.
func (v *Volume) deallocate(b int64) {
	st := &v.stripe[b%stripes]
	st.Lock()
	defer st.Unlock()
	v.mu.Lock()
	defer v.mu.Unlock()
	v.dropLoggedLocked(b)
	e := v.mu.entries[b]
	if e.Kind() == blockmap.Zero {
		return
	}
	if v.owns(e, v.mu.head.Epoch) {
		name := e.ObjectName()
		v.mu.freed = append(v.mu.freed, name)
		delete(v.mu.dirtyObjs, name)
	}
	v.setEntryLocked(b, blockmap.Entry{})
}

// logged reports whether block b has logged bytes.
func (v *Volume) logged(b int64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.mu.index[b]) > 0
}

// dirtiedLocked notes the time of the first change since the last cut.
func (v *Volume) dirtiedLocked() {
	if v.mu.dirtySince.IsZero() {
		v.mu.dirtySince = v.now()
	}
}

// Extent is a run of blocks with the same allocation state.
type Extent struct {
	Offset, Length int64
	Zero           bool // a hole: reads as zeros and uses no space
}

// BlockStatus describes [off, off+n) as extents, merged where adjacent
// blocks agree.
func (v *Volume) BlockStatus(ctx context.Context, off, n int64) ([]Extent, error) {
	if err := v.refresh(ctx); err != nil {
		return nil, err
	}
	if err := v.checkIO(off, n, false); err != nil {
		return nil, err
	}
	var out []Extent
	err := v.forBlocks(off, n, func(b, boff, pos, l int64) error {
		e, exts, _, err := v.entryLogged(b, boff, l)
		if err != nil {
			return err
		}
		zero := e.Kind() == blockmap.Zero && len(exts) == 0
		if k := len(out) - 1; k >= 0 && out[k].Zero == zero {
			out[k].Length += l
		} else {
			out = append(out, Extent{Offset: off + pos, Length: l, Zero: zero})
		}
		return nil
	})
	return out, err
}

// Dirty reports whether the volume holds writes that no flush has
// persisted yet.
func (v *Volume) Dirty() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.mu.dirtyObjs) > 0 || len(v.mu.dirtySegs) > 0 || len(v.mu.freed) > 0 || v.mu.headDirty || v.mu.fence || v.mu.logged || v.mu.logForce
}

// cut is what one flush persists.
type cut struct {
	since    time.Time // when its oldest change was made
	objs     []string
	segs     map[uint32][]blockmap.Entry
	freed    []string
	head     blockmap.Head
	headVer  objstore.Version
	dirtyHdr bool
	fence    bool
	logged   bool
	check    func(context.Context) error // asked last before the head swap
	// dropRestart: v.mu.dropRestart when the cut was taken.
	dropRestart uint64

	// The map's changes: blocks changed since the last cut (dirty) and
	// their segments (dirtySegs). A flush stores them either in the
	// head's delta (delta: every entry the head must override, the
	// changed ones and those of the stored delta), writing no segment,
	// or, past blockmap.MaxDelta entries or after a resize (forced), in
	// segments (segs: the dirty segments and those of the stored
	// delta), emptying the delta: a checkpoint.
	dirty     []int64
	dirtySegs []uint32
	delta     []blockmap.DeltaEntry
	inDelta   bool
	forced    bool
}

// mapChanged reports whether the cut changes the map.
func (c *cut) mapChanged() bool { return len(c.dirty) > 0 || len(c.dirtySegs) > 0 }

// takeCut collects what the next flush must persist. The caller holds
// the gate exclusively, so no write is half done.
func (v *Volume) takeCut() *cut {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.takeCutLocked()
}

// takeCutLocked is takeCut; the caller holds v.mu.
func (v *Volume) takeCutLocked() *cut {
	c := &cut{freed: v.mu.freed,
		head: v.mu.head, headVer: v.mu.headVer, dirtyHdr: v.mu.headDirty, fence: v.mu.fence, logged: v.mu.logged, since: v.mu.dirtySince,
		forced: v.mu.checkpoint, dropRestart: v.mu.dropRestart}
	for name := range v.mu.dirtyObjs {
		c.objs = append(c.objs, name)
	}
	for b := range v.mu.dirtyBlocks {
		c.dirty = append(c.dirty, b)
	}
	for idx := range v.mu.dirtySegs {
		c.dirtySegs = append(c.dirtySegs, idx)
	}
	if !c.forced && !v.mu.head.ReadOnly && len(c.dirty) == 0 && len(c.dirtySegs) == 0 && len(v.mu.delta) == len(v.mu.head.Delta) {
		// No entry changed since the stored head (every change marks
		// its block dirty until a head with it is stored): its delta is
		// the one to store again. Building it costs a copy and a sort of
		// up to maxDelta entries, at every flush, most of which change
		// no entry.
		c.inDelta, c.delta = true, v.mu.head.Delta
	} else {
		v.cutMapLocked(c)
	}
	v.mu.dirtyObjs, v.mu.dirtySegs, v.mu.dirtyBlocks, v.mu.freed, v.mu.headDirty, v.mu.fence, v.mu.logged = map[string]bool{}, map[uint32]bool{}, map[int64]bool{}, nil, false, false, false
	v.mu.dirtySince, v.mu.checkpoint = time.Time{}, false
	return c
}

// cutMapLocked sets the map c stores: the delta, or the segments (see
// cut). The caller holds v.mu.
func (v *Volume) cutMapLocked(c *cut) {
	n := int64(len(v.mu.entries))
	union := maps.Clone(v.mu.delta)
	for _, b := range c.dirty {
		union[b] = true
	}
	c.inDelta = !c.forced && !v.mu.head.ReadOnly && len(union) <= maxDelta
	if c.inDelta {
		for b := range union {
			c.delta = append(c.delta, blockmap.DeltaEntry{Block: b, Entry: v.mu.entries[b]})
		}
		slices.SortFunc(c.delta, func(a, b blockmap.DeltaEntry) int { return cmp.Compare(a.Block, b.Block) })
	} else {
		c.segs = map[uint32][]blockmap.Entry{}
		segs := map[uint32]bool{}
		for _, idx := range c.dirtySegs {
			segs[idx] = true
		}
		for b := range v.mu.delta {
			segs[uint32(b/blockmap.SegmentEntries)] = true
		}
		for idx := range segs {
			lo := int64(idx) * blockmap.SegmentEntries
			if lo >= n {
				c.segs[idx] = nil // beyond a shrunk end
				continue
			}
			hi := min(lo+blockmap.SegmentEntries, n)
			c.segs[idx] = append([]blockmap.Entry(nil), v.mu.entries[lo:hi]...)
		}
	}
}

// restore puts an unpersisted cut back, so that a later flush retries.
func (v *Volume) restore(c *cut, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, o := range c.objs {
		v.mu.dirtyObjs[o] = true
	}
	for _, idx := range c.dirtySegs {
		v.mu.dirtySegs[idx] = true
	}
	n := int64(len(v.mu.entries))
	for _, b := range c.dirty {
		if b < n { // (a resize under flushMu may have shrunk the map since)
			v.mu.dirtyBlocks[b] = true
		}
	}
	v.mu.checkpoint = v.mu.checkpoint || c.forced
	v.mu.freed = append(c.freed, v.mu.freed...)
	v.mu.headDirty = v.mu.headDirty || c.dirtyHdr
	v.mu.fence = v.mu.fence || c.fence
	v.mu.logged = v.mu.logged || c.logged
	if !c.since.IsZero() && (v.mu.dirtySince.IsZero() || c.since.Before(v.mu.dirtySince)) {
		v.mu.dirtySince = c.since
	}
	if errors.Is(err, ErrFenced) && v.mu.err == nil {
		v.mu.err = err
	}
}

// Flush makes every write that completed before it was called durable.
func (v *Volume) Flush(ctx context.Context) error {
	v.mu.Lock()
	v.mu.burst = 0
	v.mu.Unlock()
	return v.flush(ctx)
}

// flushQueued runs in a flush between its check that the handle is open
// and its wait for flushMu (tests stall it there).
var flushQueued = func() {}

// flush is Flush that does not end a burst of writes (logBurst): the
// flushes the volume starts itself use it.
func (v *Volume) flush(ctx context.Context) error {
	v.mu.Lock()
	closed, ro, fenced := v.mu.closed, v.readOnly && !v.remap, v.mu.err
	v.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if ro {
		return nil
	}
	if fenced != nil {
		return fenced // (also with nothing to flush: this handle is done)
	}
	flushQueued()
	if err := v.lockFlush(); err != nil {
		return err
	}
	defer v.flushMu.Unlock()
	c, err := v.flushCut(ctx)
	if err != nil {
		return err
	}
	defer func() {
		// A panic (recovered by the NBD server, which answers EIO) must
		// leave the cut's writes to the next flush, as an error does.
		if r := recover(); r != nil {
			v.restore(c, nil)
			panic(r)
		}
	}()
	return v.persist(ctx, c)
}

// flushCut takes the cut a flush persists: with the gate held
// exclusively, it checkpoints the write log if the flush needs it, takes
// the cut and reserves a commit after the records it logged, which it
// writes once writes go on again. The caller holds flushMu.
func (v *Volume) flushCut(ctx context.Context) (*cut, error) {
	if c := v.quickCut(); c != nil {
		return c, nil
	}
	v.gateCuts.Add(1)
	v.gate.Lock()
	v.mu.Lock()
	ckpt := v.needCheckpointLocked()
	v.mu.Unlock()
	if ckpt {
		// NB: inline, under the exclusive gate: it writes at most one
		// object per block the log touched, and its head swap is the
		// one this flush would have made anyway.
		if err := v.checkpointLog(ctx, false); err != nil {
			v.gate.Unlock()
			return nil, v.storeFenced(err)
		}
	}
	c := v.takeCut()
	v.mu.Lock()
	commit := v.commitAtLocked()
	v.mu.Unlock()
	v.gate.Unlock()
	if err := v.writeCommit(ctx, commit); err != nil {
		v.restore(c, nil)
		return nil, v.storeFenced(err)
	}
	return c, nil
}

// quickCut takes the cut of a flush that stores no map, without the
// gate, if nothing unflushed changes the map: only writes in place into
// objects the stored map already references, which persistInPlace makes
// durable (a sync of those objects, and the check that nobody took the
// volume over). It returns nil if the flush needs flushCut's gate.
//
// The gate, held exclusively, waits for every write in flight and holds
// off new ones until the cut is taken: with a queue of writes that the
// flush does not cover (NBD's FLUSH covers the writes completed before
// it, as Flush does), each flush drained it. A cut that changes no map
// needs no such point: every write marks what it did in v.mu after it
// did it (dirtyObjs, fence, an entry, a log record's index and commit),
// so a write that completed before the flush has marked it, and one in
// flight either has (its object is synced, which costs nothing wrong)
// or has not (the next flush takes it). A write that changes the map or
// logs a record marks that too, and the flush then takes the gate: the
// log's commit must follow every record reserved before it, and a map's
// cut must have no write half done. The caller holds flushMu, so no
// earlier cut is in flight: each is stored, or back in the dirty sets.
//
// Close's flush takes the gate all the same: shut waits for the writes
// in flight after it, and one of them that returns before Close does
// must be in what Close stored (TestReviewCloseCoversWriteInFlight).
func (v *Volume) quickCut() *cut {
	if !(v.freshStat || v.fenced) {
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mu.closing || len(v.mu.dirtyBlocks) > 0 || len(v.mu.dirtySegs) > 0 || len(v.mu.freed) > 0 || v.mu.headDirty || v.mu.checkpoint ||
		v.mu.logged || v.mu.logCommit || len(v.mu.pending) > 0 || v.mu.head.ReadOnly || len(v.mu.delta) != len(v.mu.head.Delta) ||
		v.age(v.mu.dirtySince) > MaxUnflushedAge || v.needCheckpointLocked() {
		return nil
	}
	return v.takeCutLocked()
}

// Checkpoint flushes with the map stored in segments, the head's delta
// emptied (a flush does so by itself once the delta would outgrow
// blockmap.MaxDelta).
func (v *Volume) Checkpoint(ctx context.Context) error {
	v.mu.Lock()
	v.mu.checkpoint = !v.readOnly || v.remap
	v.mu.Unlock()
	return v.Flush(ctx)
}

// persist writes a cut: data first, then segments, then the head, then
// deletes what became unreferenced. The caller holds flushMu.
func (v *Volume) persist(ctx context.Context, c *cut) error {
	if len(c.objs) == 0 && !c.mapChanged() && len(c.freed) == 0 && !c.dirtyHdr && !c.fence && !c.logged && !c.forced {
		return nil
	}
	v.mu.Lock()
	pending, checked := len(v.mu.pending) > 0, v.mu.checkedAt
	v.mu.Unlock()
	persist := v.persistHead
	if (v.freshStat || v.fenced) && !c.mapChanged() && !c.forced && len(c.freed) == 0 && !c.dirtyHdr && c.check == nil && !pending && v.age(c.since) <= MaxUnflushedAge {
		persist = v.persistInPlace
		if c.logged && !c.fence && len(c.objs) == 0 && v.segLog && !checked.IsZero() && v.age(checked) <= MaxUnflushedAge {
			persist = v.persistChained
		}
	}
	if err := persist(ctx, c); err != nil {
		err = v.storeFenced(err)
		v.restore(c, err)
		return err
	}
	v.settleLogs(&c.head)
	for _, name := range c.freed {
		if v.handles != nil {
			v.handles.forget(name)
		}
		v.store.Delete(ctx, name) // best effort: a leftover is an orphan for GC
	}
	return nil
}

func (v *Volume) persistHead(ctx context.Context, c *cut) error {
	v.mu.Lock()
	err := v.mu.err
	v.mu.Unlock()
	if err == nil {
		err = v.checkGuard()
	}
	if err != nil {
		return err
	}
	if err := v.syncObjects(ctx, c.objs); err != nil {
		return err
	}
	refs := map[uint32]blockmap.SegmentRef{}
	for _, r := range c.head.Segments {
		refs[r.Index] = r
	}
	var obsolete, written []string
	for idx, entries := range c.segs {
		if old, ok := refs[idx]; ok {
			// NB: a read-only head never deletes segments: clones may
			// share them without its head saying so.
			if old.Owner == v.id && !old.Shared && !c.head.ReadOnly {
				obsolete = append(obsolete, old.Name())
			}
			delete(refs, idx)
		}
		if allZero(entries) {
			continue // an absent segment is all zeros
		}
		seq, err := v.allocSeq()
		if err != nil {
			return err
		}
		b, crc := blockmap.EncodeSegment(idx, entries)
		ref := blockmap.SegmentRef{Index: idx, Owner: v.id, Seq: seq, CRC: crc}
		if _, err := v.store.Create(ctx, ref.Name(), b); err != nil {
			return fmt.Errorf("volume: flush: write map segment: %w", err)
		}
		refs[idx] = ref
		written = append(written, ref.Name())
	}
	h := c.head
	v.mu.Lock()
	h.Size, h.Epoch, h.Unsealed = v.mu.head.Size, v.mu.head.Epoch, v.mu.head.Unsealed
	v.mu.Unlock()
	h.Segments = h.Segments[:0:0]
	for _, r := range refs {
		h.Segments = append(h.Segments, r)
	}
	sort.Slice(h.Segments, func(i, j int) bool { return h.Segments[i].Index < h.Segments[j].Index })
	h.Delta = c.delta // nil after a checkpoint
	if err := v.checkGuard(); err != nil {
		return err
	}
	// NB: last, just before the swap, so that a stall anywhere before it
	// is measured.
	var release func() error
	age := v.age(c.since)
	if age > MaxUnflushedAge {
		if v.hold != nil {
			// A collection running now may have marked without these
			// objects and delete them after the check: wait for it to
			// end, and keep others off until the head is swapped.
			r, err := v.hold(ctx)
			if err != nil {
				return fmt.Errorf("volume: flush: keep garbage collections off to check unflushed data: %w", err)
			}
			release = r
		}
		if err := v.checkExist(ctx, c, age); err != nil {
			if release != nil {
				release()
			}
			return err
		}
	}
	if c.check != nil {
		if err := c.check(ctx); err != nil {
			return err
		}
	}
	ver, garbage, err := v.swapHead(ctx, &h, c.headVer, written)
	var lapsed error
	if release != nil {
		lapsed = release()
	}
	if err != nil {
		return fmt.Errorf("volume: flush: %w", err)
	}
	v.mu.Lock()
	v.mu.head.Segments, v.mu.head.Delta, v.mu.headVer = h.Segments, h.Delta, ver
	v.mu.dropStored = max(v.mu.dropStored, c.dropRestart)
	v.mu.delta = map[int64]bool{}
	for _, d := range h.Delta {
		v.mu.delta[d.Block] = true
	}
	v.mu.Unlock()
	c.freed = append(append(c.freed, obsolete...), garbage...)
	if lapsed != nil {
		// This writer stalled again past the hold: a collection may have
		// deleted what the head now references.
		if err := v.checkExist(ctx, c, age); err != nil {
			c.freed = nil // (restored and deleted by no later flush: fenced)
			return err
		}
	}
	return nil
}

// persistInPlace persists a cut that changed no map entry: its writes
// went in place into objects the stored map already references (this
// writer's own blocks), so the map stays as it is and only the data must
// be durable. The caller holds flushMu.
//
// What a head swap would also have done is find out whether another
// writer took the volume over (ErrFenced): a writer that stalled past its
// lease (a paused VM's clock stops, so its lease still looks valid to
// it), or whose lease an operator broke, may have written in place into
// an object the new writer has already copied and dropped, and must not
// report that write durable. A takeover always stores a new head first
// (the new writer's open), so a head still at the version this handle
// wrote, read after the data was durable, means no other writer had
// opened the volume by then: each write of the cut landed before any
// other writer's open, which then read it. That check is one Stat of the
// head, where a swap wrote segments and a new head.
//
// A writer whose store fences it at a takeover (v.fenced) checks nothing
// in the store: the taker fenced this connection before its open, so each
// write of the cut that the store acknowledged landed before the taker's
// first operation on its object, which then saw it, and every later one
// is refused (objstore.ErrFenced). Only the guard is asked, for a lease
// that lapsed.
func (v *Volume) persistInPlace(ctx context.Context, c *cut) error {
	if err := v.writable(); err != nil {
		return err
	}
	if err := v.syncObjects(ctx, c.objs); err != nil {
		return err
	}
	if v.fenced {
		return v.checkGuard()
	}
	return v.checkFence(ctx, c.headVer)
}

// persistChained persists a cut whose only writes are records of this
// writer's segmented log, whose commit flushCut wrote as a segment of
// the chain the stored head names: they are durable, and no check of
// the head is needed. A writer that takes the volume over fences the
// chain (fenceChain) after its head swap, at the name this writer's next
// segment has, so a segment create of this writer that returned landed
// before the fence and was read by the taker; a later one fails
// (ErrFenced). That holds while the fence exists: it is deleted only by a
// garbage collection, past its grace, and this writer's last look at the
// head that found its own head (checkedAt, no older than MaxUnflushedAge,
// which the grace exceeds) came before the taker's swap, so no create
// that returned since can have landed after the fence was deleted. Past
// that age, and where anything else is in the cut (a whole block put in
// place into an object this writer owns: the chain fences none of that),
// the head is checked as persistInPlace does. See "Fencing the chain" in
// docs/format.md. The caller holds flushMu.
func (v *Volume) persistChained(ctx context.Context, c *cut) error {
	return v.writable()
}

// writable returns why this handle may not persist anything, if it may
// not: a sticky error, or the guard's refusal.
func (v *Volume) writable() error {
	v.mu.Lock()
	err := v.mu.err
	v.mu.Unlock()
	if err != nil {
		return err
	}
	return v.checkGuard()
}

// checkFence makes sure the stored head is still the one at version ver
// that this handle wrote; anything else fences the handle. The caller
// made sure that no head swap of this handle with an unknown outcome is
// pending (persistHead resolves those).
func (v *Volume) checkFence(ctx context.Context, ver objstore.Version) error {
	at := v.now()
	in, err := v.store.Stat(ctx, blockmap.HeadName(v.id))
	switch {
	case objstore.IsNotExist(err):
		return fmt.Errorf("%w: %s (removed)", ErrFenced, v.id)
	case err != nil:
		return fmt.Errorf("volume: flush: check the map head: %w", err)
	case in.Version != ver:
		return fmt.Errorf("%w: %s", ErrFenced, v.id)
	}
	v.checked(at)
	// A guard (a lease) that lapsed while the data was synced says the
	// same, sooner.
	return v.checkGuard()
}

// checked notes that a look at the head that started at t found the head
// this handle stored (see persistChained).
func (v *Volume) checked(t time.Time) {
	v.mu.Lock()
	if t.After(v.mu.checkedAt) {
		v.mu.checkedAt = t
	}
	v.mu.Unlock()
}

// settle settles names (objstore.Settler: RADOS, where a write that
// failed after it returned left the object's old bytes and nothing else)
// before their bytes are copied into other objects, and an object a
// write just created before the map names it. Otherwise a checkpoint or
// a retirement would copy the old bytes into an object a flush syncs,
// and drop the failed one from the dirty set unsynced: the flush would
// report the lost write durable (TestReview11LogCheckpointDropsFailedAppend,
// ...RetireDropsFailedInPlaceWrite); and a failed create would leave the
// map naming no object, the bytes gone from the log a checkpoint copied
// them from, where the write can otherwise fail and be retried
// (TestReview11RadosFullPoolLogCheckpoint). Elsewhere nothing: the page
// cache holds what a file's write returned for, whatever befalls its
// writeback.
func (v *Volume) settle(ctx context.Context, names ...string) error {
	if v.settler == nil {
		return nil
	}
	for _, name := range names {
		if err := v.settler.Settle(ctx, name); err != nil {
			return fmt.Errorf("volume: %s: %w", name, err)
		}
	}
	return nil
}

// syncObjects makes the data written in place to names durable, through
// the handles this volume keeps open where it can (no lookup by name).
func (v *Volume) syncObjects(ctx context.Context, names []string) error {
	if v.syncer == nil || len(names) == 0 {
		return nil
	}
	sync := func(ctx context.Context, name string) error {
		var err error
		if v.handles == nil {
			err = v.syncer.Sync(ctx, name)
		} else {
			var ch *cachedHandle
			// NB: a read-only handle if none is cached: a writable
			// one would create the object if it is gone.
			if ch, err = v.handles.get(ctx, name, false); err == nil {
				// A Sync may open descriptors (the file store's fsyncs
				// of the directories of an object created lazily): it
				// sheds idle handles and tries again, as an open does.
				for try := 0; ; try++ {
					err = ch.h.Sync()
					if err == nil || !outOfFDs(err) || try == 3 || shedIdle() == 0 && try > 0 {
						break
					}
				}
				v.handles.put(ch)
			}
		}
		if objstore.IsNotExist(err) {
			return nil // deallocated after the cut's write and deleted by an earlier flush
		}
		return err
	}
	var err error
	if len(names) == 1 {
		err = sync(ctx, names[0])
	} else {
		// NB: no context that the first error cancels: on a store whose
		// Sync waits for writes in flight (RADOS), a flush that returned
		// before the others' Syncs did would leave them in flight, and
		// Close would hand the lease over with them (shut).
		g := &errgroup.Group{}
		g.SetLimit(16)
		for _, name := range names {
			g.Go(func() error { return sync(ctx, name) })
		}
		err = g.Wait()
	}
	if err != nil {
		return fmt.Errorf("volume: flush: sync data: %w", err)
	}
	return nil
}

// pendingHead is a head swap whose outcome is unknown: it failed with an
// error other than a conflict (a timeout, a deadline), and the store may
// have applied it, or may still.
type pendingHead struct {
	data []byte   // the encoded head
	segs []string // segment objects written for it, which only it references
}

// swapHead replaces the stored head of version old with h. The caller
// holds flushMu; segs are the segment objects written for h.
//
// A conflict means another writer changed the head (ErrFenced), unless
// an earlier swap of this handle whose outcome was unknown did: then the
// stored head is byte for byte one this handle wrote (its reserved
// sequence numbers make it unique), which swapHead adopts before
// swapping again. Once a swap succeeds, no earlier one can still apply
// (they were all from an older version), and their segments, which no
// head references any more, are returned for deletion.
func (v *Volume) swapHead(ctx context.Context, h *blockmap.Head, old objstore.Version, segs []string) (objstore.Version, []string, error) {
	name := blockmap.HeadName(v.id)
	data := blockmap.EncodeHead(h)
	for {
		at := v.now()
		ver, err := v.store.Swap(ctx, name, data, old)
		v.mu.Lock()
		pending := v.mu.pending
		switch {
		case err == nil:
			var garbage []string
			for _, p := range pending {
				garbage = append(garbage, p.segs...)
			}
			v.mu.pending = nil
			if at.After(v.mu.checkedAt) {
				v.mu.checkedAt = at
			}
			v.mu.Unlock()
			return ver, garbage, nil
		case !errors.Is(err, objstore.ErrConflict):
			v.mu.pending = append(pending, pendingHead{data: data, segs: segs})
			v.mu.Unlock()
			return 0, nil, fmt.Errorf("write map head (whether it was written is unknown; the next flush finds out): %w", err)
		}
		v.mu.Unlock()
		if len(pending) == 0 {
			return 0, nil, fmt.Errorf("%w: %s", ErrFenced, v.id)
		}
		cur, curVer, err := v.store.Get(ctx, name)
		if objstore.IsNotExist(err) {
			return 0, nil, fmt.Errorf("%w: %s (removed)", ErrFenced, v.id)
		}
		if err != nil {
			return 0, nil, fmt.Errorf("read map head after a conflict: %w", err)
		}
		if !slices.ContainsFunc(pending, func(p pendingHead) bool { return bytes.Equal(p.data, cur) }) {
			return 0, nil, fmt.Errorf("%w: %s", ErrFenced, v.id)
		}
		old = curVer // our own head: adopt it
	}
}

// age returns how long ago t was (0 for the zero time): the longer of
// the monotonic and the wall-clock durations, so that neither a host
// suspended (the monotonic clock stops) nor a wall clock set back hides
// a stall.
func (v *Volume) age(t time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	now := v.now()
	return max(now.Sub(t), now.Round(0).Sub(t.Round(0)))
}

// checkExist makes sure that every object the cut's map references and
// that may be new (written since the last flush) is still there (see
// MaxUnflushedAge), and so is each of this writer's logs that the cut's
// head names and that it made exist (a log it created at a rotation is
// named by no stored head until this flush's swap: a collection may have
// deleted it, and appends through a kept handle, or into an object
// created again, would land where no replay reads). A missing one fences
// the handle with ErrStale.
func (v *Volume) checkExist(ctx context.Context, c *cut, age time.Duration) error {
	names := map[string]bool{}
	for _, name := range c.objs {
		names[name] = true
	}
	v.mu.Lock()
	for _, lf := range v.mu.logs {
		if lf.made && slices.ContainsFunc(c.head.Logs, func(r blockmap.LogRef) bool { return r.Epoch == lf.ref.Epoch && r.Seq == lf.ref.Seq }) {
			if !v.segLog {
				names[lf.name] = true
			}
			for _, name := range lf.segs {
				names[name] = true
			}
		}
	}
	v.mu.Unlock()
	if !c.head.Index.IsZero() {
		// The write log index this flush's checkpoint stored: no head
		// names it yet. (The segments it references are in logs a
		// stored head names, or referenced by its index.)
		names[blockmap.IndexName(v.id, c.head.Index.Epoch, c.head.Index.Seq)] = true
	}
	add := func(e blockmap.Entry) {
		if e.Kind() != blockmap.Zero {
			names[e.ObjectName()] = true
		}
		if e.Kind() == blockmap.Partial {
			names[e.Base().ObjectName()] = true
		}
	}
	for _, es := range c.segs {
		for _, e := range es {
			add(e)
		}
	}
	for _, d := range c.delta {
		add(d.Entry)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for name := range names {
		g.Go(func() error {
			_, err := v.store.Stat(gctx, name)
			if objstore.IsNotExist(err) {
				return fmt.Errorf("%w: %s, written %s ago and not flushed since, is gone (was this writer stalled while a garbage collection ran?)",
					ErrStale, name, age.Round(time.Second))
			}
			return err
		})
	}
	return g.Wait()
}

// bufPools holds a pool of buffers for each block size, shared by every
// volume and every import: an S3 upload of many parts, each stored on its
// own, and a download that opens a map for each, reuse the buffers of
// those before them instead of allocating, zeroing and faulting in new
// ones.
var bufPools sync.Map // int64 → *sync.Pool of *[]byte

// BlockBufs returns the pool of buffers of bs bytes (*[]byte, each of
// length bs).
func BlockBufs(bs int64) *sync.Pool {
	if p, ok := bufPools.Load(bs); ok {
		return p.(*sync.Pool)
	}
	p, _ := bufPools.LoadOrStore(bs, &sync.Pool{New: func() any { b := make([]byte, bs); return &b }})
	return p.(*sync.Pool)
}

func allZero(es []blockmap.Entry) bool {
	for _, e := range es {
		if e.Kind() != blockmap.Zero {
			return false
		}
	}
	return true
}

// Close flushes a writable volume and releases the handle.
func (v *Volume) Close(ctx context.Context) error {
	v.mu.Lock()
	v.mu.closing = true
	// A writer without a log of its own (a move's reopen) leaves the logs
	// it kept for the writer that comes back; it checkpoints them if it
	// changed the map (needCheckpointLocked).
	if len(v.mu.head.Logs) > 0 && !v.readOnly && (v.logOn || v.mu.kept == 0) {
		v.mu.logForce, v.mu.logClosing = true, true
	}
	v.mu.Unlock()
	err := v.Flush(ctx)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return v.shut(ctx, err)
}

// Discard releases the handle without flushing: what was written since
// the last flush is dropped from the map (its objects are left to the
// garbage collector). For a writer that lost its lease.
func (v *Volume) Discard(ctx context.Context) error {
	v.mu.Lock()
	closed := v.mu.closed
	v.mu.Unlock()
	if closed {
		return nil
	}
	return v.shut(ctx, nil)
}

func (v *Volume) shut(ctx context.Context, err error) error {
	v.flushMu.Lock()
	v.gate.Lock()
	v.mu.Lock()
	v.mu.closed = true
	v.mu.Unlock()
	v.gate.Unlock()
	v.flushMu.Unlock()
	if v.handles != nil {
		v.handles.close()
		if v.handles.lazy != nil {
			// What no flush stored is left to a garbage collection; a
			// long-lived process must not keep noting its creates as
			// pending (objstore.File bounds them, then syncs each).
			v.mu.Lock()
			names := slices.Collect(maps.Keys(v.mu.dirtyObjs))
			v.mu.Unlock()
			if len(names) > 0 {
				v.handles.lazy.ForgetLazy(names)
			}
		}
	}
	if v.onClose != nil {
		cerr := err
		v.mu.Lock()
		// On a store whose writes return before they land (a Settler:
		// RADOS), a write no flush synced may still be in flight: the
		// final flush failed, or there was none (Discard).
		if v.mu.unsettled || len(v.mu.logSuspects) > 0 || v.settler != nil && len(v.mu.dirtyObjs) > 0 {
			cerr = errors.Join(err, ErrUnsettled)
		}
		v.mu.Unlock()
		return errors.Join(err, v.onClose(ctx, cerr))
	}
	return err
}

// Refresh brings a following handle up to date with the stored head
// (its size included), as every read does first; a writer's handle is
// always up to date. For a frontend that learns the size once per client
// (NBD's handshake) from a handle kept open for earlier clients.
func (v *Volume) Refresh(ctx context.Context) error { return v.refresh(ctx) }

// refresh brings a following handle's map up to date with the stored
// head: a Stat when nothing changed, and otherwise the new head and the
// segments that differ (a writer deletes the segments it replaces, so a
// segment found missing means the head moved on again: retry).
//
// Concurrent readers share checks: a reader waits for a check that starts
// after it arrived; while one check runs, the readers that arrive gather
// for the next, so a burst of reads costs about two checks, not one each.
func (v *Volume) refresh(ctx context.Context) error {
	if !v.follow {
		return nil
	}
	c := &v.checks
	c.Lock()
	hc := c.next
	if hc == nil {
		hc = &headCheck{done: make(chan struct{})}
		c.next = hc
	}
	start := !c.running
	if start {
		c.running, c.next = true, nil
	}
	c.Unlock()
	if start {
		go v.runChecks(context.WithoutCancel(ctx), hc)
	}
	select {
	case <-hc.done:
		return hc.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// headCheck is one check of the head, shared by the readers waiting for it.
type headCheck struct {
	done chan struct{}
	err  error
}

// runChecks runs hc, then each check that gathered meanwhile, until none
// is waiting.
func (v *Volume) runChecks(ctx context.Context, hc *headCheck) {
	c := &v.checks
	for hc != nil {
		hc.err = v.checkHead(ctx)
		close(hc.done)
		c.Lock()
		hc, c.next = c.next, nil
		c.running = hc != nil
		c.Unlock()
	}
}

// checkHead loads the map again if the stored head changed.
func (v *Volume) checkHead(ctx context.Context) error {
	var failedVer objstore.Version
	for try := 0; ; try++ {
		in, err := v.store.Stat(ctx, blockmap.HeadName(v.id))
		if objstore.IsNotExist(err) {
			return fmt.Errorf("%w: %s (removed)", ErrNotFound, v.id)
		}
		if err != nil {
			return err
		}
		v.mu.Lock()
		cur, curVer := v.mu.head, v.mu.headVer
		v.mu.Unlock()
		if in.Version == curVer {
			err := v.tailLogs(ctx)
			if errors.Is(err, errLogMoved) && try < 100 {
				continue // rotated between the Stat and the read: the head moved on
			}
			return err
		}
		head, ver, err := ReadHead(ctx, v.store, v.id)
		if err != nil {
			return err
		}
		entries, err := v.reload(ctx, &cur, head)
		var ld *loadedLogs
		if err == nil {
			ld, err = v.loadLogs(ctx, head, ver, false)
		}
		if errors.Is(err, ErrCorrupt) && ver != failedVer && try < 100 {
			// A segment of this head is gone: the writer has replaced
			// it since (it deletes a segment only after the head that
			// supersedes it is stored). Read the new head, as long as
			// the head keeps changing, within a bound.
			failedVer = ver
			continue
		}
		if err != nil {
			return err
		}
		v.mu.Lock()
		v.mu.head, v.mu.headVer, v.mu.entries = *head, ver, entries
		v.mu.logs, v.mu.index = ld.logs, ld.index
		v.mu.segInfo, v.mu.idxSegs, v.mu.idxNew = ld.segInfo, ld.idxSegs, ld.fresh
		v.mu.logGen++
		v.mu.Unlock()
		return nil
	}
}

// reload returns the entries of head, reading only the segments that
// differ from those of old.
func (v *Volume) reload(ctx context.Context, old, head *blockmap.Head) ([]blockmap.Entry, error) {
	// A segment whose entries the old head's delta overrode is read
	// again: prev holds the overrides, not the segment's entries.
	overridden := map[uint32]bool{}
	for _, d := range old.Delta {
		overridden[uint32(d.Block/blockmap.SegmentEntries)] = true
	}
	same := map[blockmap.SegmentRef]bool{}
	for _, r := range old.Segments {
		if !overridden[r.Index] {
			same[r] = true
		}
	}
	changed := *head
	changed.Segments = nil
	for _, r := range head.Segments {
		if !same[r] {
			changed.Segments = append(changed.Segments, r)
		}
	}
	fresh, err := LoadMap(ctx, v.store, &changed)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	prev := v.mu.entries
	v.mu.Unlock()
	for _, r := range head.Segments {
		if !same[r] {
			continue
		}
		lo := int64(r.Index) * blockmap.SegmentEntries
		hi := min(lo+blockmap.SegmentEntries, int64(len(fresh)), int64(len(prev)))
		if lo < hi {
			copy(fresh[lo:hi], prev[lo:hi])
		}
	}
	head.Apply(fresh)
	return fresh, nil
}
