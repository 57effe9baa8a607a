package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math/bits"
	"slices"
	"sort"
	"sync"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// The write log (see "Write log" in the package doc and docs/format.md).
//
// A record is a header and the data of one write inside one block:
//
//	magic "ALOG" | log epoch u64 | log seq u64 | volume offset u64 |
//	length u32 | CRC-32C u32 of everything before it and the data | data
//
// A record of length 0 (offset 0) is a commit: a flush writes one after
// the records it makes durable, before it syncs the log. A record is
// valid when its magic, its log identity (the epoch and sequence number
// the head names the log by) and its checksum match, and it lies inside
// one block of the volume. Readers read a log's records in order from the
// head's From position, stop at the first invalid one, and apply those
// that a commit follows: a record no flush committed (a writer's
// unflushed write, found by the writer that takes it over) is dropped, as
// a write to a new object no flushed map references is.
const (
	logMagic     = "ALOG"
	logHeader    = 4 + 8 + 8 + 8 + 4 + 4
	logReadChunk = 16 << 10
	// logReadMax bounds a replay's window: each read of a log is twice
	// as long as the one before, from logReadChunk (a follower's tail, a
	// log of a few records) up to this, so a log of L bytes takes about
	// log2(logReadMax/logReadChunk) + L/logReadMax reads (a 32 MiB log:
	// 23), not one per few records.
	logReadMax = 2 << 20
)

// logBound is how many bytes a writer appends to its log before a flush
// checkpoints it into the map and starts a new log (tests lower it).
var logBound int64 = 32 << 20

// segBoundFactor: a segmented log's bound is this many logBounds (512
// MiB). A checkpoint on a store without in-place writes puts each block
// the log touched whole, so the bound divides that cost: see "Write log"
// in docs/format.md for the arithmetic.
const segBoundFactor = 16

// segMax is how many bytes of records a segmented log holds in memory
// before it writes them as a segment without a commit (tests lower it).
var segMax = 1 << 20

// segCount is how many segments a segmented log holds from From on
// before a flush checkpoints it (tests lower it). A replay reads them one
// GET after the other (a segment's name is where the one before ends),
// so their number, not only their bytes, bounds an open's and a
// takeover's time: a guest that flushes after every small write makes a
// segment of a few hundred bytes per flush, and 512 MiB of those would be
// about a million GETs. A checkpoint then puts at most one block per
// flush since the last one, which is what each of those flushes would
// have put without the log.
//
// A writer that took the volume from a clean release keeps the segmented
// logs of the writers before it at open (OpenOptions.Handover) while they
// hold fewer than segCount segments in all: its own flushes then count
// towards that bound (needCheckpointLocked), so no open replays more
// segments than it would of one writer's own log. (A bound of 32 made
// the open checkpoint the log of a writer that had flushed after each
// of its last few dozen writes: one block put per block the log touched,
// about a second with blocks on RADOS or S3, in the first write of a
// client switching daemons, TestSwitchWritesNoBlock in package daemon.)
var segCount = 1024

// keptLogs is how many write logs of writers before it a writer that
// took the volume from a clean release keeps at open (OpenOptions.Handover);
// past it the open checkpoints them. Handovers back and forth between two
// writers that only flush in place would otherwise add a log each, up to
// blockmap.MaxLogs, past which a writer cannot log.
const keptLogs = 3

// checkpointers is how many blocks a checkpoint writes at once.
const checkpointers = 8

// checkpointMem bounds the block buffers of the checkpoints in flight in
// a process (checkpointers per volume, times every volume a daemon
// checkpoints at once: the writers a drained host's handoffs open): a
// block write of a checkpoint holds a block's size of it, two where the
// store has no in-place writes (the block is built whole, then put).
// 256 MiB: 8 volumes' checkpoints at once at full speed with 4 MiB
// blocks, 4 with 32 MiB blocks on a store with in-place writes.
var checkpointMem = semaphore.NewWeighted(256 << 20)

// segTries is how many times a segment write whose outcome is unknown
// (a timeout) is tried.
const segTries = 4

// bound is the size past which the writer's log is checkpointed.
func (v *Volume) bound() int64 {
	if v.segLog {
		return logBound * segBoundFactor
	}
	return logBound
}

// segChunk is a piece of a segmented log cut from the writer's buffer,
// to be written as the segment name.
type segChunk struct {
	name   string
	data   []byte
	failed bool
}

// logBurst is how many bytes of writes since the last flush a caller
// asked for (Flush, FUA) a writer logs at most. The log pays for itself
// when flushes are frequent (each flush then costs one append and one
// sync instead of a head swap); writes that no flush follows gain
// nothing from it, and a checkpoint copies them a second time. Past the
// burst, writes that logged bytes do not hold to the log (logsBlock)
// take the map path as before the log, and a flush in the background
// checkpoints the records logged so far, so that the blocks they touched
// take it too.
var logBurst int64 = 256 << 10

// logDefault turns the write log on for writers that do not ask for it
// (tests run the model with it).
var logDefault = false

var logCRC = crc32.MakeTable(crc32.Castagnoli)

// logFile is one write log as a handle knows it: the head's reference,
// and where its valid records end (the next append goes there); made:
// this writer made it exist (created it, or an append to it landed), so
// that it is missing only if a garbage collection deleted it before a
// stored head named it (see Volume.checkExist).
type logFile struct {
	ref  blockmap.LogRef
	name string
	end  int64
	made bool
	// segs: a segmented log's segments from From on that this handle
	// wrote or read (deleted when a checkpoint moves From past them).
	segs []string
	// chained: a replay followed the log as a chain of segments, which
	// ends at tail: the start of the first segment missing (or fenced:
	// fenced), where the log's writer would create its next one.
	chained bool
	fenced  bool
	tail    int64
	// seen: the segments a replay read (their place in the log), for
	// the write log index.
	seen []blockmap.IndexSeg
}

// logExt is a range of a block whose newest bytes are in a log: [off,
// off+n) in the block, read from the object name at pos.
type logExt struct {
	off, n int64
	name   string
	pos    int64
}

func encodeLogRecord(ref blockmap.LogRef, off int64, data []byte) []byte {
	b := make([]byte, 0, logHeader+len(data))
	b = append(b, logMagic...)
	b = binary.BigEndian.AppendUint64(b, ref.Epoch)
	b = binary.BigEndian.AppendUint64(b, ref.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(off))
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	crc := crc32.Update(crc32.Checksum(b, logCRC), logCRC, data)
	b = binary.BigEndian.AppendUint32(b, crc)
	return append(b, data...)
}

// addExt makes x's range of a block whose extents are exts (sorted by
// offset, not overlapping) read from x's log position, replacing what
// overlaps it, and returns the extents, changed in place: callers hand
// out copies (overlapping), never the index's slices. O(log n) to find
// the place, and a move of the extents after it.
func addExt(exts []logExt, x logExt) []logExt {
	end := x.off + x.n
	i := overlapStart(exts, x.off)
	j := i + sort.Search(len(exts)-i, func(k int) bool { return exts[i+k].off >= end })
	repl := make([]logExt, 0, 3)
	if i < j && exts[i].off < x.off {
		e := exts[i]
		repl = append(repl, logExt{off: e.off, n: x.off - e.off, name: e.name, pos: e.pos})
	}
	repl = append(repl, x)
	if i < j {
		if e := exts[j-1]; e.off+e.n > end {
			repl = append(repl, logExt{off: end, n: e.off + e.n - end, name: e.name, pos: e.pos + end - e.off})
		}
	}
	return slices.Replace(exts, i, j, repl...)
}

// overlapStart returns the index of the first of exts (sorted, not
// overlapping) that ends after off.
func overlapStart(exts []logExt, off int64) int {
	return sort.Search(len(exts), func(k int) bool { return exts[k].off+exts[k].n > off })
}

// overlapping returns a copy of those of exts (sorted, not overlapping)
// that overlap [off, off+n).
func overlapping(exts []logExt, off, n int64) []logExt {
	if len(exts) == 0 {
		return nil
	}
	i := overlapStart(exts, off)
	j := i
	for j < len(exts) && exts[j].off < off+n {
		j++
	}
	if i == j {
		return nil
	}
	return slices.Clone(exts[i:j])
}

// replayMem bounds the bytes by which the windows of the log replays in
// flight in a process grow past logReadChunk: every writer's open and
// every follower's reload replays, and a daemon opens many volumes at
// once (a drained host's handoffs), each window up to logReadMax. A
// replay that finds it exhausted reads on in the window it holds.
var replayMem = semaphore.NewWeighted(64 << 20)

// logReader reads one log's records in order through a window, which
// grows at each read (logReadMax) while replayMem allows; done gives its
// share back.
type logReader struct {
	v     *Volume
	name  string
	buf   []byte
	start int64 // the window is [start, start+len(buf))
	chunk int64 // the next read's length (0: logReadChunk)
	held  int64 // of replayMem
}

func (r *logReader) at(ctx context.Context, pos, n int64) ([]byte, error) {
	if pos < r.start || pos+n > r.start+int64(len(r.buf)) {
		r.chunk = min(max(2*r.chunk, logReadChunk), logReadMax)
		if more := r.chunk - logReadChunk - r.held; more > 0 {
			if replayMem.TryAcquire(more) {
				r.held += more
			} else {
				r.chunk = logReadChunk + r.held
			}
		}
		size := max(n, r.chunk)
		if int64(cap(r.buf)) < size {
			r.buf = make([]byte, size)
		}
		r.buf = r.buf[:size]
		if err := r.v.readName(ctx, r.name, r.buf, pos); err != nil {
			return nil, err
		}
		r.start = pos
	}
	return r.buf[pos-r.start : pos-r.start+n], nil
}

func (r *logReader) done() {
	if r.held > 0 {
		replayMem.Release(r.held)
		r.held = 0
	}
}

// errLogMissing: a log the head names does not exist (see logGone).
var errLogMissing = errors.New("volume: a write log the head names is missing")

// errLogMoved: a log the head names was deleted, so the head moved on (a
// writer deletes a log only after storing a head that no longer names
// it): read the head again, as for a missing segment.
var errLogMoved = fmt.Errorf("%w: a write log the head names is gone (the head moved on)", ErrCorrupt)

// logGone tells what a log found missing by a reader of the head at
// version ver means: nothing (nil: not written yet, and so empty) if the
// head is still at ver, else errLogMoved.
func (v *Volume) logGone(ctx context.Context, ver objstore.Version) error {
	in, err := v.store.Stat(ctx, blockmap.HeadName(v.id))
	switch {
	case objstore.IsNotExist(err):
		return fmt.Errorf("%w: %s", ErrNotFound, v.id)
	case err != nil:
		return err
	case in.Version != ver:
		return errLogMoved
	}
	return nil
}

// replayLog reads lf's valid records from lf.end on, calls add for each
// (the block, the range in it, the data's position), and moves lf.end
// past them. A log that does not exist returns errLogMissing.
func (v *Volume) replayLog(ctx context.Context, lf *logFile, size uint64, add func(b int64, x logExt)) error {
	if v.segLog {
		return v.replaySegs(ctx, lf, size, add)
	}
	return v.replayObject(ctx, lf, size, add)
}

// replayOther is replayLog on a log stored in the form this handle's
// store does not write (an object where logs are segmented, or
// segments where logs are written in place): the form follows the
// store's capabilities, and those of a store of several pools change with
// its configuration (a pool without in-place writes added or removed),
// so a writer that died before that left its log in the other form. The
// object read is added to lf.segs, which a checkpoint deletes.
func (v *Volume) replayOther(ctx context.Context, lf *logFile, size uint64, add func(b int64, x logExt)) error {
	if !v.segLog {
		return v.replaySegs(ctx, lf, size, add)
	}
	if err := v.replayObject(ctx, lf, size, add); err != nil {
		return err
	}
	lf.segs = append(lf.segs, lf.name)
	lf.chained = false // (its writer writes in place, and checks the head)
	return nil
}

// replayObject is replayLog on a log stored as one object.
func (v *Volume) replayObject(ctx context.Context, lf *logFile, size uint64, add func(b int64, x logExt)) error {
	r := &logReader{v: v, name: lf.name}
	defer r.done()
	type rec struct {
		b int64
		x logExt
	}
	var pending []rec
	for pos := lf.end; ; {
		h, err := r.at(ctx, pos, logHeader)
		if objstore.IsNotExist(err) {
			return errLogMissing
		}
		if err != nil {
			return err
		}
		off, n := int64(binary.BigEndian.Uint64(h[20:])), int64(binary.BigEndian.Uint32(h[28:]))
		if string(h[:4]) != logMagic || binary.BigEndian.Uint64(h[4:]) != lf.ref.Epoch || binary.BigEndian.Uint64(h[12:]) != lf.ref.Seq ||
			n > v.bs || off < 0 || n > 0 && off>>v.shift != (off+n-1)>>v.shift || n == 0 && off != 0 {
			return nil
		}
		want := binary.BigEndian.Uint32(h[32:])
		crc := crc32.Checksum(h[:32], logCRC)
		data, err := r.at(ctx, pos+logHeader, n)
		if objstore.IsNotExist(err) {
			return errLogMissing
		}
		if err != nil {
			return err
		}
		if crc32.Update(crc, logCRC, data) != want {
			return nil
		}
		if n == 0 {
			for _, p := range pending {
				add(p.b, p.x)
			}
			pending = pending[:0]
			lf.end = pos + logHeader
		} else if uint64(off)+uint64(n) <= size {
			// (One past the end was written before a shrink that a
			// later head stores: nothing reads it.)
			pending = append(pending, rec{off >> v.shift, logExt{off: off & (v.bs - 1), n: n, name: lf.name, pos: pos + logHeader}})
		}
		pos += logHeader + n
	}
}

// loadedLogs is what loadLogs read: the logs, the index (the stored
// write log index's extents, with the logs' records over them), the
// segments whose place it knows (segInfo), those the stored index
// references (idxSegs), and how many extents the logs' replays added
// (fresh).
type loadedLogs struct {
	logs    []logFile
	index   map[int64][]logExt
	segInfo map[string]blockmap.IndexSeg
	idxSegs map[string]bool
	fresh   int
}

// loadLogs reads the write log index head names, if any (loadIndex), then
// the logs it names over it into a new index. A log found missing is
// empty if the head is still at ver (not written yet); otherwise it was
// deleted after a head that no longer names it was stored, and loadLogs
// returns errLogMoved (an ErrCorrupt): the caller reads the head again.
//
// fence: the caller takes the volume over (it swapped in its own head at
// ver): each log replayed as a chain of segments is fenced at its end
// (fenceChain).
func (v *Volume) loadLogs(ctx context.Context, head *blockmap.Head, ver objstore.Version, fence bool) (*loadedLogs, error) {
	ld := &loadedLogs{logs: make([]logFile, len(head.Logs)), index: map[int64][]logExt{}, segInfo: map[string]blockmap.IndexSeg{}}
	var err error
	if ld.idxSegs, err = v.loadIndex(ctx, head, ver, ld); err != nil {
		return nil, err
	}
	logs, index := ld.logs, ld.index
	for i, ref := range head.Logs {
		logs[i] = logFile{ref: ref, name: blockmap.LogName(head.ID, ref.Epoch, ref.Seq), end: int64(ref.From)}
		add := func(b int64, x logExt) {
			index[b] = addExt(index[b], x)
			ld.fresh++
		}
		err := v.replayLog(ctx, &logs[i], head.Size, add)
		if errors.Is(err, errLogMissing) && logs[i].end == int64(ref.From) && len(logs[i].segs) == 0 {
			// Nothing in this store's form: the other one's?
			// (TestReviewSegLogFormFlips)
			err = v.replayOther(ctx, &logs[i], head.Size, add)
		}
		if errors.Is(err, errLogMissing) {
			err = v.logGone(ctx, ver)
		}
		if err == nil && fence && logs[i].chained && !logs[i].fenced {
			err = v.fenceChain(ctx, &logs[i], head.Size, add)
		}
		if err != nil {
			return nil, err
		}
		for _, sg := range logs[i].seen {
			ld.segInfo[sg.Name(head.ID)] = sg
		}
		logs[i].seen = nil
	}
	return ld, nil
}

// loadIndex reads the write log index head (stored at version ver) names
// into ld's index and segInfo, and returns the names of the segments it
// references. An index found missing means the head moved on (a writer
// deletes an index only after storing a head that no longer names it:
// errLogMoved) unless the head is still at ver (then the store lost it:
// ErrCorrupt).
func (v *Volume) loadIndex(ctx context.Context, head *blockmap.Head, ver objstore.Version, ld *loadedLogs) (map[string]bool, error) {
	if head.Index.IsZero() {
		return nil, nil
	}
	name := blockmap.IndexName(head.ID, head.Index.Epoch, head.Index.Seq)
	data, _, err := v.store.Get(ctx, name)
	if objstore.IsNotExist(err) {
		if err := v.logGone(ctx, ver); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: the write log index %s that the head names is missing", ErrCorrupt, name)
	}
	if err != nil {
		return nil, fmt.Errorf("volume: read the write log index %s: %w", name, err)
	}
	x, err := blockmap.DecodeIndex(data, head.ID, head.Index)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
	}
	names := make([]string, len(x.Segs))
	refs := make(map[string]bool, len(x.Segs))
	for i, sg := range x.Segs {
		names[i] = sg.Name(head.ID)
		ld.segInfo[names[i]] = sg
		refs[names[i]] = true
	}
	for _, e := range x.Exts {
		if e.Block >= head.Blocks() || int64(e.Off)+int64(e.Len) > head.BlockLen(e.Block) {
			return nil, fmt.Errorf("%w: %s: an extent of block %d (%d bytes at %d) outside the volume", ErrCorrupt, name, e.Block, e.Len, e.Off)
		}
		ld.index[e.Block] = append(ld.index[e.Block], logExt{off: int64(e.Off), n: int64(e.Len), name: names[e.Seg], pos: int64(e.Pos)})
	}
	return refs, nil
}

// fenceMagic starts a fence: an object a taker creates at the end of an
// old writer's segment chain (see fenceChain). It never starts a segment
// (whose first record starts with logMagic), so a fence's bytes never
// equal a segment's.
const fenceMagic = "AFNC"

// encodeFence returns the fence a writer of epoch taker puts at the end
// of the chain of log ref: fenceMagic, the log's epoch and seq, the
// taker's epoch.
func encodeFence(ref blockmap.LogRef, taker uint64) []byte {
	b := []byte(fenceMagic)
	b = binary.BigEndian.AppendUint64(b, ref.Epoch)
	b = binary.BigEndian.AppendUint64(b, ref.Seq)
	return binary.BigEndian.AppendUint64(b, taker)
}

func isFence(data []byte) bool { return bytes.HasPrefix(data, []byte(fenceMagic)) }

// fenceChain ends the chain of segments of lf, an old writer's log that
// a replay followed to lf.tail, by creating a fence there (create if
// absent): the name the old writer's next segment would have, so that
// its create fails and its flush reports ErrFenced. The caller (a writer
// taking the volume over) has swapped in its head already. If the old
// writer's create came first, the fence's fails: the segment is read
// (replayed from lf.end on, as any segment) and the fence goes at the new
// end. A fence already there (an earlier taker's, or this one's whose
// create timed out and landed) is the end. The fence is not in lf.segs:
// a checkpoint leaves it for the collector, which deletes it past its
// grace (see "Fencing the chain" in docs/format.md).
func (v *Volume) fenceChain(ctx context.Context, lf *logFile, size uint64, add func(b int64, x logExt)) error {
	v.mu.Lock()
	fence := encodeFence(lf.ref, v.mu.head.Epoch)
	v.mu.Unlock()
	for try := 1; ; try++ {
		if err := v.checkGuard(); err != nil {
			return err
		}
		name := blockmap.LogSegmentName(v.id, lf.ref.Epoch, lf.ref.Seq, lf.tail)
		_, err := v.store.Create(ctx, name, fence)
		if err == nil {
			lf.fenced = true
			return nil
		}
		if !errors.Is(err, objstore.ErrExists) {
			if settled(err) || try >= segTries || ctx.Err() != nil {
				return fmt.Errorf("volume: fence the write log at %s: %w", name, err)
			}
			continue // (of unknown outcome: a fence found there next is this one)
		}
		err = v.replaySegs(ctx, lf, size, add)
		if err == nil {
			// The replay stopped at bytes that do not parse, short of
			// the chain's end (where the name just taken is): find
			// that end by the names alone.
			err = v.skipSegs(ctx, lf)
		}
		if err != nil && !errors.Is(err, errLogMissing) {
			return err
		}
		if lf.fenced {
			return nil
		}
	}
}

// chainSeg reads the segment of lf's chain that starts at pos: its name
// and bytes, or errLogMissing at the chain's end, where no segment is or a
// taker's fence (which sets lf.fenced: no data, and not deleted with the
// log's segments, see fenceChain), or ErrCorrupt for an empty one (no
// writer makes one: the chain would not move on).
func (v *Volume) chainSeg(ctx context.Context, lf *logFile, pos int64) (string, []byte, error) {
	name := blockmap.LogSegmentName(v.id, lf.ref.Epoch, lf.ref.Seq, pos)
	data, _, err := v.store.Get(ctx, name)
	switch {
	case objstore.IsNotExist(err):
		return name, nil, errLogMissing
	case err != nil:
		return name, nil, err
	case isFence(data):
		lf.fenced = true
		return name, nil, errLogMissing
	case len(data) == 0:
		return name, nil, fmt.Errorf("%w: an empty segment of the write log: %s", ErrCorrupt, name)
	}
	return name, data, nil
}

// skipSegs follows lf's chain from lf.tail by the segments' names and
// lengths only, to its end (a name missing: errLogMissing; or a fence),
// setting lf.tail there: the segments past one whose records do not
// parse, which a replay stops at, still take the names the fence must
// not. They go to lf.segs, for the checkpoint to delete.
func (v *Volume) skipSegs(ctx context.Context, lf *logFile) error {
	for {
		name, data, err := v.chainSeg(ctx, lf, lf.tail)
		if err != nil {
			return err
		}
		if !slices.Contains(lf.segs, name) {
			lf.segs = append(lf.segs, name)
		}
		lf.tail += int64(len(data))
	}
}

// replaySegs is replayLog on a segmented log: it follows the chain of
// segments from lf.end (where a segment starts: From, or the end of a
// commit, which ends its segment), the one starting where the one before
// ends, until one is missing or is a fence, which returns errLogMissing
// (the end of the chain, or a log deleted since: see logGone). It sets
// lf.tail to where the chain ends.
func (v *Volume) replaySegs(ctx context.Context, lf *logFile, size uint64, add func(b int64, x logExt)) error {
	type rec struct {
		b int64
		x logExt
	}
	var pending []rec
	lf.chained = true
	for pos := lf.end; ; {
		lf.tail = pos
		name, data, err := v.chainSeg(ctx, lf, pos)
		if err != nil {
			return err
		}
		lf.tail = pos + int64(len(data))
		if !slices.Contains(lf.segs, name) {
			lf.segs = append(lf.segs, name)
		}
		lf.seen = append(lf.seen, blockmap.IndexSeg{Epoch: lf.ref.Epoch, Seq: lf.ref.Seq, Start: pos, Len: uint32(len(data))})
		for at := int64(0); at < int64(len(data)); {
			h := data[at:]
			if len(h) < logHeader {
				return nil
			}
			off, n := int64(binary.BigEndian.Uint64(h[20:])), int64(binary.BigEndian.Uint32(h[28:]))
			if string(h[:4]) != logMagic || binary.BigEndian.Uint64(h[4:]) != lf.ref.Epoch || binary.BigEndian.Uint64(h[12:]) != lf.ref.Seq ||
				n > v.bs || off < 0 || n > 0 && off>>v.shift != (off+n-1)>>v.shift || n == 0 && off != 0 || int64(len(h)) < logHeader+n {
				return nil
			}
			crc := crc32.Update(crc32.Checksum(h[:32], logCRC), logCRC, h[logHeader:logHeader+n])
			if crc != binary.BigEndian.Uint32(h[32:]) {
				return nil
			}
			if n == 0 {
				for _, p := range pending {
					add(p.b, p.x)
				}
				pending = pending[:0]
				lf.end = pos + at + logHeader
			} else if uint64(off)+uint64(n) <= size {
				pending = append(pending, rec{off >> v.shift, logExt{off: off & (v.bs - 1), n: n, name: name, pos: at + logHeader}})
			}
			at += logHeader + n
		}
		pos += int64(len(data))
	}
}

// segResetLocked starts the writer's segment buffer at the end of its
// own log (the last), dropping what was buffered (a checkpoint wrote it
// into the blocks). The caller holds v.mu.
func (v *Volume) segResetLocked() {
	v.mu.segBuf, v.mu.segMem, v.mu.segName, v.mu.segStart = nil, nil, "", 0
	if !v.segLog || !v.logOn || len(v.mu.logs) == 0 {
		return
	}
	lf := &v.mu.logs[len(v.mu.logs)-1]
	v.mu.segStart = lf.end
	v.mu.segName = blockmap.LogSegmentName(v.id, lf.ref.Epoch, lf.ref.Seq, lf.end)
}

// cutSegLocked cuts the buffer into a chunk to be written as a segment
// (nil if empty). The caller holds v.mu.
func (v *Volume) cutSegLocked() *segChunk {
	if len(v.mu.segBuf) == 0 {
		return nil
	}
	c := &segChunk{name: v.mu.segName, data: v.mu.segBuf}
	v.mu.segMem = append(v.mu.segMem, c)
	lf := &v.mu.logs[len(v.mu.logs)-1]
	v.noteSegsLocked([]blockmap.IndexSeg{{Epoch: lf.ref.Epoch, Seq: lf.ref.Seq, Start: v.mu.segStart, Len: uint32(len(c.data))}})
	v.mu.segStart += int64(len(c.data))
	v.mu.segName = blockmap.LogSegmentName(v.id, lf.ref.Epoch, lf.ref.Seq, v.mu.segStart)
	v.mu.segBuf = nil
	return c
}

// noteSegsLocked notes where segs are in their logs (segInfo), for the
// write log index. The caller holds v.mu.
func (v *Volume) noteSegsLocked(segs []blockmap.IndexSeg) {
	if len(segs) == 0 {
		return
	}
	if v.mu.segInfo == nil {
		v.mu.segInfo = map[string]blockmap.IndexSeg{}
	}
	for _, sg := range segs {
		v.mu.segInfo[sg.Name(v.id)] = sg
	}
}

// writeSegs writes the chunks cut so far, in order, up to c: a chunk is
// written only after the one before it landed, so that the chain a
// replay follows never skips one. A chunk whose write failed stays in
// memory, and the log takes no more records (logBroken).
func (v *Volume) writeSegs(ctx context.Context, c *segChunk) error {
	v.segMu.Lock()
	defer v.segMu.Unlock()
	for {
		v.mu.Lock()
		if !slices.Contains(v.mu.segMem, c) {
			v.mu.Unlock()
			return nil
		}
		first := v.mu.segMem[0]
		v.mu.Unlock()
		if first.failed {
			return fmt.Errorf("volume: an earlier segment of the write log failed: %w", errLogBroken)
		}
		err := v.putSegment(ctx, first.name, first.data)
		v.mu.Lock()
		if err != nil {
			first.failed = true
			v.mu.logBroken, v.mu.logForce = true, true
			if errors.Is(err, ErrFenced) && v.mu.err == nil {
				v.mu.err = err
			}
			v.logUnsettledLocked(err)
			v.mu.Unlock()
			return err
		}
		v.mu.segMem = v.mu.segMem[1:]
		if n := len(v.mu.logs); n > 0 {
			lf := &v.mu.logs[n-1]
			lf.segs = append(lf.segs, first.name)
			lf.made = true
		}
		v.mu.Unlock()
	}
}

// errSegDiffers: a segment write of unknown outcome was tried again and
// found the segment holding other bytes.
var errSegDiffers = errors.New("volume: a segment of the write log exists with other bytes (written by a writer of the same log?)")

// putSegment creates the segment name. A write of unknown outcome (a
// timeout) may have landed: it is tried again, and a try that finds the
// segment there compares its bytes (equal: it is written; a taker's
// fence: ErrFenced; else the log is broken).
func (v *Volume) putSegment(ctx context.Context, name string, data []byte) error {
	for try := 1; ; try++ {
		if err := v.checkGuard(); err != nil {
			return err
		}
		_, err := v.store.Create(ctx, name, data)
		if errors.Is(err, objstore.ErrExists) {
			got, _, gerr := v.store.Get(ctx, name)
			switch {
			case gerr != nil:
				return fmt.Errorf("volume: write log: read back segment %s: %w", name, gerr)
			case isFence(got):
				return fmt.Errorf("%w: %s (its write log is fenced at %s)", ErrFenced, v.id, name)
			case !bytes.Equal(got, data):
				return fmt.Errorf("%w: %s", errSegDiffers, name)
			}
			return nil
		}
		if err == nil || settled(err) || try == segTries || ctx.Err() != nil {
			return err
		}
	}
}

// readLog reads p at off from the log object name: from memory if it
// is a segment of this writer's not stored yet, else from the store.
func (v *Volume) readLog(ctx context.Context, name string, p []byte, off int64) error {
	if v.segLog {
		v.mu.Lock()
		var src []byte
		if name == v.mu.segName {
			src = v.mu.segBuf
		} else {
			for _, c := range v.mu.segMem {
				if c.name == name {
					src = c.data
					break
				}
			}
		}
		if src != nil && off+int64(len(p)) <= int64(len(src)) {
			copy(p, src[off:])
			v.mu.Unlock()
			return nil
		}
		v.mu.Unlock()
	}
	return v.readName(ctx, name, p, off)
}

// createLog creates this writer's empty log, so that followers, which
// read its tail at each check of the head, find an object they keep open
// rather than looking an absent one up each time. Best effort: the first
// append creates it otherwise. It reports whether it created it.
func (v *Volume) createLog(ctx context.Context, name string) bool {
	if v.handles == nil {
		return false
	}
	ch, err := v.handles.get(ctx, name, true)
	if err != nil {
		return false
	}
	v.handles.put(ch)
	return true
}

// madeLocked notes that this writer made its log name exist. The caller
// holds v.mu.
func (v *Volume) madeLocked(name string) {
	for i := range v.mu.logs {
		if v.mu.logs[i].name == name {
			v.mu.logs[i].made = true
		}
	}
}

// readName reads p at off from the object name.
func (v *Volume) readName(ctx context.Context, name string, p []byte, off int64) error {
	if v.handles == nil {
		return v.store.ReadAt(ctx, name, p, off)
	}
	ch, err := v.handles.get(ctx, name, false)
	if err != nil {
		return err
	}
	defer v.handles.put(ch)
	return ch.h.ReadAt(p, off)
}

// logsBlock reports whether a write of [boff, boff+n) to block b (entry
// e) goes to the log: the handle logs, and the block is one it would copy
// on write (shared with a snapshot or a parent, another epoch's, a
// sub-block its partial block lacks), or the write overlaps logged bytes,
// which a later in-place write must not hide under, or it is a small
// write scattered away from the one before it (logScattered). A write to
// a zero block allocates it as before (a sparse object of its own and a
// map change): a volume being filled would otherwise write everything
// twice, into the log and at its checkpoint. A write over logged bytes
// while the log takes no more (broken) gets errLogBroken: no write may
// take the map path while the index overlays it with older bytes, which
// a later checkpoint would write over it (see Volume.shared). The caller
// holds b's stripe.
//
// A block the writer does not write in place that has logged bytes takes
// every write into the log, overlapping them or not: the map path would
// copy it on write from the map alone. One it writes in place takes only
// the writes that overlap them; its other bytes are the object's.
//
// On a segmented log (no in-place writes), every write smaller than a
// block within the burst is logged, to an owned block too: the map path
// would put the whole block.
func (v *Volume) logsBlock(b int64, e blockmap.Entry, owned bool, boff, n int64) (bool, error) {
	if !v.logOn {
		return false, nil
	}
	touched := v.subBlocks(boff, n)
	inPlace := owned && e.Mask()&touched == touched && !v.segLog
	v.mu.Lock()
	defer v.mu.Unlock()
	last := v.mu.lastBlock
	v.mu.lastBlock = b
	logged := len(v.mu.index[b]) > 0
	if inPlace && logged {
		logged = overlapsLogged(v.mu.index[b], boff, n)
	}
	if v.mu.logBroken || len(v.mu.logs) == 0 {
		if logged {
			return false, errLogBroken
		}
		return false, nil
	}
	if v.segLog {
		// No burst limit: on a store without in-place writes the map
		// path puts the whole block for each write, and a checkpoint
		// puts it once for all the writes logged to it.
		return logged || n < v.bs, nil
	}
	if logged {
		return true, nil
	}
	if v.mu.burst > logBurst || e.Kind() == blockmap.Zero {
		return false, nil
	}
	if !inPlace {
		return true, nil
	}
	return v.scatter && n <= logScattered && b != last && (len(v.mu.index[b]) > 0 || len(v.mu.index) < logScatterBlocks), nil
}

// overlapsLogged reports whether [off, off+n) of a block overlaps one of
// its logged extents (sorted, not overlapping).
func overlapsLogged(exts []logExt, off, n int64) bool {
	i := overlapStart(exts, off)
	return i < len(exts) && exts[i].off < off+n
}

// logScattered is the largest write to a block the writer owns that goes
// to the log rather than in place, within a burst (logBurst), when the
// write before it went to another block, on a store whose writes need a
// sync (the file store). A flush then syncs the one log object instead of
// one object per block written since the last flush; and on a file system
// where fdatasync also writes a file's inode when its mtime moved (ext4
// without a journal: the mtime moves once per clock tick, so every block
// file that is written seldom pays it), a guest's scattered synced writes
// cost what they cost in one image file. Writes that follow each other in
// one block (a sequential stream, a journal) stay in place: they sync one
// object anyway, and would only be copied twice.
var logScattered int64 = 16 << 10

// logScatterBlocks bounds how many blocks have logged bytes before
// scattered writes to blocks without any stay in place: a checkpoint
// writes and syncs each block the log touched, so with random writes
// over a large volume it would sync about one object per logged write
// (what the writes in place cost) after each write's log sync had been
// paid already. Within the bound, a checkpoint of a full log (logBound)
// syncs at most this many objects for thousands of logged writes.
var logScatterBlocks = 256

// scatterDefault sends scattered writes to the log on every store with
// in-place writes that need a sync (tests run the model with it).
var scatterDefault = false

// noteBurst counts a write of n bytes in the burst since the last flush a
// caller asked for (a write with FUA is one, and ends it); the write that
// takes the burst past logBurst starts a flush in the background if the
// log holds records (see logBurst).
func (v *Volume) noteBurst(ctx context.Context, n int64, fua bool) {
	if !v.logOn || v.segLog {
		// (A segmented log takes writes past the burst too: logsBlock.)
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if fua {
		v.mu.burst = 0
		return
	}
	before := v.mu.burst
	v.mu.burst += n
	if before <= logBurst && v.mu.burst > logBurst && len(v.mu.index) > 0 {
		// The flush must checkpoint even if nothing else makes it
		// (every write of the burst logged, no map change): the blocks
		// with logged bytes would otherwise keep taking writes into the
		// log.
		v.mu.logForce = true
		v.kickLocked(ctx)
	}
}

// kickLocked starts a flush in the background, unless one runs already:
// it checkpoints the log. The caller holds v.mu.
func (v *Volume) kickLocked(ctx context.Context) {
	if v.mu.logKick {
		return
	}
	v.mu.logKick = true
	go func() {
		v.flush(context.WithoutCancel(ctx))
		v.mu.Lock()
		v.mu.logKick = false
		v.mu.Unlock()
	}()
}

// errLogBroken: a write met logged bytes (see logsBlock) while the log
// takes no more records; it is run again once a flush checkpointed the
// log (see Volume.shared).
var errLogBroken = errors.New("volume: a block with logged bytes met a write log that takes no more records")

// appendLog appends data, to be written at boff in block b, to this
// writer's log. The caller holds b's stripe. A failed append may leave a
// torn record, or land later: the log takes no more records, and the
// next flush checkpoints into a new one.
func (v *Volume) appendLog(ctx context.Context, b, boff int64, data []byte) error {
	if err := v.checkGuard(); err != nil {
		return err
	}
	if v.segLog {
		return v.appendSeg(ctx, b, boff, data)
	}
	v.mu.Lock()
	lf := &v.mu.logs[len(v.mu.logs)-1]
	ref, name, pos := lf.ref, lf.name, lf.end
	lf.end += logHeader + int64(len(data))
	v.mu.logBytes += logHeader + int64(len(data))
	v.mu.Unlock()
	rec := encodeLogRecord(ref, b<<v.shift+boff, data)
	if err := v.writeLogAt(ctx, name, rec, pos); err != nil {
		v.mu.Lock()
		v.mu.logBroken, v.mu.logForce = true, true
		v.logUnsettledLocked(err)
		v.mu.Unlock()
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.madeLocked(name)
	v.mu.index[b] = addExt(v.mu.index[b], logExt{off: boff, n: int64(len(data)), name: name, pos: pos + logHeader})
	v.mu.idxNew++
	v.mu.logCommit = true
	if v.mu.logBytes > 4*v.bound() {
		// Writes that no flush follows (a guest flushes far more
		// often: this only bounds the log): a flush in the background
		// checkpoints, so that the log and its index stay bounded.
		v.kickLocked(ctx)
	}
	if v.syncer != nil {
		v.mu.dirtyObjs[name] = true
	} else {
		v.mu.fence = true
	}
	v.dirtiedLocked()
	return nil
}

// appendSeg is appendLog on a segmented log: the record goes to the
// buffer, which is written as a segment without a commit once it holds
// segMax bytes. A failed segment write leaves the record in memory,
// where reads and the next checkpoint find it, and breaks the log.
func (v *Volume) appendSeg(ctx context.Context, b, boff int64, data []byte) error {
	v.mu.Lock()
	if v.mu.logBroken {
		v.mu.Unlock()
		return errLogBroken
	}
	lf := &v.mu.logs[len(v.mu.logs)-1]
	rec := encodeLogRecord(lf.ref, b<<v.shift+boff, data)
	pos := int64(len(v.mu.segBuf))
	v.mu.segBuf = append(v.mu.segBuf, rec...)
	lf.end += int64(len(rec))
	v.mu.logBytes += int64(len(rec))
	v.mu.index[b] = addExt(v.mu.index[b], logExt{off: boff, n: int64(len(data)), name: v.mu.segName, pos: pos + logHeader})
	v.mu.idxNew++
	v.mu.logCommit = true
	if v.mu.logBytes > v.bound() {
		// Its bound is already large (a takeover replays the log):
		// writes that no flush follows checkpoint there.
		v.kickLocked(ctx)
	}
	v.mu.logged = true
	v.dirtiedLocked()
	var c *segChunk
	if len(v.mu.segBuf) >= segMax {
		c = v.cutSegLocked()
	}
	v.mu.Unlock()
	if c != nil {
		// (Its error broke the log: the next flush checkpoints what
		// the chunk holds, from memory.)
		_ = v.writeSegs(ctx, c)
	}
	return nil
}

// logUnsettledLocked notes that a write to this writer's log (the last)
// failed with an unknown outcome, if it did: landing after the next
// writer read the log, it could commit records that writer never saw, so
// a release must be unsettled (ErrUnsettled), and the next writer
// checkpoints the log at open instead of keeping it
// (TestHandoverAfterLogCommitOfUnknownOutcome), until a stored head no
// longer reads where it may land (settleLogs). The caller holds v.mu.
func (v *Volume) logUnsettledLocked(err error) {
	if settled(err) || len(v.mu.logs) == 0 {
		return
	}
	lf := v.mu.logs[len(v.mu.logs)-1]
	if v.mu.logSuspects == nil {
		v.mu.logSuspects = map[string]int64{}
	}
	v.mu.logSuspects[lf.name] = max(v.mu.logSuspects[lf.name], lf.end)
}

// settleLogs forgets the writes of unknown outcome to logs that head, just
// stored, does not read any more: a log it does not name, or names from
// past where they may land (a checkpoint moved its From there).
func (v *Volume) settleLogs(head *blockmap.Head) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for name, end := range v.mu.logSuspects {
		i := slices.IndexFunc(head.Logs, func(r blockmap.LogRef) bool { return blockmap.LogName(v.id, r.Epoch, r.Seq) == name })
		if i < 0 || int64(head.Logs[i].From) >= end {
			delete(v.mu.logSuspects, name)
		}
	}
}

// commitAtLocked reserves the place of a commit record after every
// record appended so far, if one is needed, and returns what writes it
// (nil if none is). On a segmented log the commit ends the buffer, which
// becomes the segment it writes. The caller holds the gate exclusively
// (no append in flight) and v.mu.
func (v *Volume) commitAtLocked() func(context.Context) error {
	if !v.mu.logCommit || len(v.mu.logs) == 0 {
		return nil
	}
	v.mu.logCommit = false
	lf := &v.mu.logs[len(v.mu.logs)-1]
	rec := encodeLogRecord(lf.ref, 0, nil)
	name, pos := lf.name, lf.end
	lf.end += logHeader
	v.mu.logBytes += logHeader
	if v.segLog {
		v.mu.segBuf = append(v.mu.segBuf, rec...)
		c := v.cutSegLocked()
		return func(ctx context.Context) error { return v.writeSegs(ctx, c) }
	}
	return func(ctx context.Context) error { return v.writeLogAt(ctx, name, rec, pos) }
}

// logAhead is how many bytes of zeros a writer writes past its log's
// tail at a time, on a store whose writes need a sync (files): a flush's
// sync of a log that grew commits its new size and blocks (on ext4 and
// XFS, a journal commit at each fdatasync: about 1.5x the sync of an
// in-place write, where a log written over its own zeros costs about
// what an in-place write's does). Replay stops at the zeros as it does
// at the end of the object (a record's magic is not zero), so they
// change nothing it reads.
var logAhead int64 = 1 << 20

var logZeros = make([]byte, logAhead)

// logAheadState is the part of the writer's log that is written with
// zeros: [start of the first record, end) of log name. failed: a write
// of zeros to it failed, and may still land: nothing more is written
// to it.
type logAheadState struct {
	mu     sync.Mutex // held while zeros are written
	name   string     // guarded by Volume.mu
	end    int64      // guarded by Volume.mu
	failed bool       // guarded by Volume.mu
}

// writeLogAt writes rec (a record, or a commit) at pos in the writer's
// log name, after the zeros ahead of it (aheadLog).
func (v *Volume) writeLogAt(ctx context.Context, name string, rec []byte, pos int64) error {
	if err := v.aheadLog(ctx, name, pos, pos+int64(len(rec))); err != nil {
		return err
	}
	return v.writeAt(ctx, name, rec, pos)
}

// aheadLog makes sure that the writer's log name is written (with zeros
// where no record is) up to at least end, before the record [pos, end)
// is written, if the store's writes need a sync. Zeros go only from the
// end of the part already written that way (or pos, in a log new to
// it) on, one writer at a time, and every record that ends past that
// end waits for them: so zeros never land over a record, whatever the
// order of appends in flight (positions are handed out in order, and
// records do not overlap).
func (v *Volume) aheadLog(ctx context.Context, name string, pos, end int64) error {
	if v.syncer == nil || v.syncWaits {
		return nil
	}
	a := &v.ahead
	ready := func() (bool, int64, error) {
		v.mu.Lock()
		defer v.mu.Unlock()
		if a.name != name {
			a.name, a.end, a.failed = name, pos, false
		}
		if a.failed {
			return false, 0, errLogBroken
		}
		return end <= a.end, a.end, nil
	}
	if ok, _, err := ready(); ok || err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ok, from, err := ready()
	if ok || err != nil {
		return err
	}
	to := (end/logAhead + 1) * logAhead
	for off := from; off < to; {
		n := min(to-off, int64(len(logZeros)))
		if err := v.writeAt(ctx, name, logZeros[:n], off); err != nil {
			v.mu.Lock()
			if a.name == name {
				a.failed = true
			}
			v.mu.Unlock()
			return err
		}
		off += n
	}
	v.mu.Lock()
	if a.name == name && a.end == from {
		a.end = to
	}
	v.mu.Unlock()
	return nil
}

// writeCommit writes a commit record reserved by commitAtLocked.
func (v *Volume) writeCommit(ctx context.Context, commit func(context.Context) error) error {
	if commit == nil {
		return nil
	}
	if err := commit(ctx); err != nil {
		v.mu.Lock()
		v.mu.logBroken, v.mu.logForce = true, true
		v.logUnsettledLocked(err)
		v.mu.Unlock()
		return fmt.Errorf("volume: flush: write a commit to the write log: %w", err)
	}
	return nil
}

// dropLogged forgets the logged bytes of block b (deallocated): the next
// flush checkpoints, so that no replay applies them again. The caller
// holds v.mu.
func (v *Volume) dropLoggedLocked(b int64) {
	if len(v.mu.index[b]) > 0 {
		delete(v.mu.index, b)
		v.mu.dropGen++
		v.mu.logForce = true
	}
}

// needCheckpoint reports whether a flush must checkpoint the log before
// its cut: it holds logged bytes, and the flush swaps the head anyway (a
// map change, a resize...), or the log outgrew logBound, or something
// (a trim of logged bytes, a failed append, Close) asked for it. The
// caller holds v.mu.
func (v *Volume) needCheckpointLocked() bool {
	h := v.mu.head.Logs
	own := v.ownLogsLocked(v.mu.kept)
	if !v.loggedLocked() && !v.mu.logForce && (own || len(h) == 0) {
		return false
	}
	segs := 0
	for _, lf := range v.mu.logs {
		segs += len(lf.segs)
	}
	return !own || v.mu.logForce || v.mu.logBytes > v.bound() || v.segLog && segs >= segCount ||
		len(v.mu.dirtyBlocks) > 0 || len(v.mu.dirtySegs) > 0 || len(v.mu.freed) > 0 || v.mu.headDirty || v.mu.checkpoint ||
		len(v.mu.pending) > 0 || !(v.freshStat || v.fenced) || v.age(v.mu.dirtySince) > MaxUnflushedAge
}

// loggedLocked reports whether the index holds extents that no stored
// write log index holds (appended or replayed since it was stored). The
// caller holds v.mu.
func (v *Volume) loggedLocked() bool {
	return len(v.mu.index) > 0 && (v.mu.head.Index.IsZero() || v.mu.idxNew > 0)
}

// ownLogsLocked reports whether the head names only logs this handle
// knows and may leave there: its own (the last, if it logs) and up to kept
// logs of writers before it that it kept at open (OpenOptions.Handover).
// The caller holds v.mu.
func (v *Volume) ownLogsLocked(kept int) bool {
	h := v.mu.head.Logs
	n := kept
	if v.logOn {
		n++
	}
	if len(h) == 0 || len(h) != n || len(h) != len(v.mu.logs) {
		return false
	}
	for i, r := range h {
		if r.Epoch != v.mu.logs[i].ref.Epoch || r.Seq != v.mu.logs[i].ref.Seq {
			return false
		}
	}
	return true
}

// checkpointIfLogged checkpoints the log into the blocks (materializes
// it, dropping a write log index) if anything in it is not in the map
// yet, or the head names another writer's log or an index; for what
// stores a map anyway and must not leave an index in it (a snapshot, a
// resize, a hash). The caller holds flushMu and the gate exclusively.
func (v *Volume) checkpointIfLogged(ctx context.Context) error {
	v.mu.Lock()
	h := v.mu.head.Logs
	need := len(v.mu.index) > 0 || v.mu.logForce || len(h) > 0 && !v.ownLogsLocked(0) || !v.mu.head.Index.IsZero()
	v.mu.Unlock()
	if !need {
		return nil
	}
	return v.checkpointLog(ctx, true)
}

// idxMaxExts caps the extents of a write log index: a checkpoint whose
// index would hold more materializes it instead (writes the blocks). It
// bounds the index's memory (about 60 bytes per extent: 30 MiB) and its
// object (24 bytes per extent: 12 MiB), which every checkpoint stores
// whole (tests lower it).
var idxMaxExts = 1 << 19

// idxGarbage: a checkpoint whose index would reference segments of more
// than idxGarbage times its live bytes plus the log's bound materializes
// it instead (tests lower it): overwritten records keep their segments,
// which nothing compacts, alive.
var idxGarbage int64 = 2

// buildIndexLocked returns the write log index of the extents of
// v.mu.index and the names of the segments it references, or false if
// the checkpoint must materialize them instead: past idxMaxExts, past
// the garbage bound (idxGarbage), or an extent in something other than
// a segment this handle knows the place of (a log in the other form).
// The caller holds v.mu.
func (v *Volume) buildIndexLocked() (*blockmap.LogIndex, map[string]bool, bool) {
	n, live := 0, int64(0)
	refs := map[string]bool{}
	for _, exts := range v.mu.index {
		n += len(exts)
		if n > idxMaxExts {
			return nil, nil, false
		}
		for _, e := range exts {
			sg, ok := v.mu.segInfo[e.name]
			if !ok || e.pos+e.n > int64(sg.Len) || sg.Len > blockmap.MaxIndexSegLen {
				return nil, nil, false
			}
			refs[e.name] = true
			live += e.n
		}
	}
	segs := make([]blockmap.IndexSeg, 0, len(refs))
	var held int64
	for name := range refs {
		segs = append(segs, v.mu.segInfo[name])
		held += int64(v.mu.segInfo[name].Len)
	}
	if held > idxGarbage*live+v.bound() {
		return nil, nil, false
	}
	slices.SortFunc(segs, func(a, b blockmap.IndexSeg) int {
		if c := cmpU64(a.Epoch, b.Epoch); c != 0 {
			return c
		}
		if c := cmpU64(a.Seq, b.Seq); c != 0 {
			return c
		}
		return int(min(max(a.Start-b.Start, -1), 1))
	})
	at := make(map[string]uint32, len(segs))
	for i, sg := range segs {
		at[sg.Name(v.id)] = uint32(i)
	}
	x := &blockmap.LogIndex{Segs: segs, Exts: make([]blockmap.IndexExt, 0, n)}
	for _, b := range slices.Sorted(maps.Keys(v.mu.index)) {
		for _, e := range v.mu.index[b] {
			x.Exts = append(x.Exts, blockmap.IndexExt{Block: b, Off: uint32(e.off), Len: uint32(e.n), Seg: at[e.name], Pos: uint32(e.pos)})
		}
	}
	return x, refs, true
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkpointIndex is checkpointLog on a segmented log that stores a write
// log index instead of writing blocks (see "Write log index" in
// docs/format.md): it writes the records buffered as a segment, stores
// the index of every extent (the stored index's and the logs' over it) as
// a new index object, and sets the head to name it, with this writer's
// log at From its end (or a new log past the bound; none at Close) and
// no other; the index and segments that no longer hold anything the new
// index references are deleted once that head is stored. It reports
// false, having written nothing but the buffered segment, where the
// checkpoint must materialize instead (a broken log, or buildIndexLocked
// says so). No block is written, so nothing here needs the head check
// of checkpointLog: a writer taken over writes its segment at a fenced
// name or on no chain a head names, and an index object no head names,
// and its head swap fails.
func (v *Volume) checkpointIndex(ctx context.Context) (bool, error) {
	v.mu.Lock()
	if v.mu.logBroken || len(v.mu.segMem) > 0 || len(v.mu.logs) == 0 {
		v.mu.Unlock()
		return false, nil
	}
	c := v.cutSegLocked()
	v.mu.Unlock()
	if c != nil {
		// The index may reference only what is stored.
		if err := v.writeSegs(ctx, c); err != nil {
			return false, err
		}
	}
	v.mu.Lock()
	x, refs, ok := v.buildIndexLocked()
	epoch := v.mu.head.Epoch
	v.mu.Unlock()
	if !ok || len(x.Exts) == 0 {
		// (Nothing indexed: the materializing checkpoint writes no
		// block and drops the stored index.)
		return false, nil
	}
	seq, err := v.allocSeq()
	if err != nil {
		return false, err
	}
	ref := blockmap.IndexRef{Epoch: epoch, Seq: seq}
	name := blockmap.IndexName(v.id, ref.Epoch, ref.Seq)
	if err := v.checkGuard(); err != nil {
		return false, err
	}
	// The index is an object no head names until this flush's swap: the
	// flush must check it is still there if the writer stalls past
	// MaxUnflushedAge before the swap (a collection deletes it past its
	// grace), as for a cut's other new objects, even with nothing else
	// unflushed (a Close after a flush): its age counts from now at the
	// latest (TestReviewIndexStallBeforeSwapAtClose).
	v.mu.Lock()
	v.dirtiedLocked()
	v.mu.Unlock()
	// (A put of unknown outcome that lands later is an object no head
	// names: the collector's.)
	if _, err := v.store.Create(ctx, name, blockmap.EncodeIndex(v.id, ref, x)); err != nil {
		return false, fmt.Errorf("volume: store the write log index %s: %w", name, err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var keep []logFile
	if v.logOn && !v.mu.logClosing {
		cur := v.mu.logs[len(v.mu.logs)-1]
		if v.mu.logBytes > v.bound() && v.mu.nextSeq < v.mu.seqEnd {
			seq := v.mu.nextSeq
			v.mu.nextSeq++
			lref := blockmap.LogRef{Epoch: cur.ref.Epoch, Seq: seq}
			keep = []logFile{{ref: lref, name: blockmap.LogName(v.id, lref.Epoch, lref.Seq)}}
		} else {
			cur.ref.From = uint64(cur.end)
			cur.segs = nil
			keep = []logFile{cur}
		}
	}
	var gone []string
	for name := range v.mu.idxSegs {
		if !refs[name] {
			gone = append(gone, name)
		}
	}
	for _, lf := range v.mu.logs {
		for _, name := range lf.segs {
			if !refs[name] && !v.mu.idxSegs[name] {
				gone = append(gone, name)
			}
		}
	}
	slices.Sort(gone)
	v.mu.freed = append(v.mu.freed, gone...)
	if !v.mu.head.Index.IsZero() {
		v.mu.freed = append(v.mu.freed, blockmap.IndexName(v.id, v.mu.head.Index.Epoch, v.mu.head.Index.Seq))
	}
	info := make(map[string]blockmap.IndexSeg, len(refs))
	for name := range refs {
		info[name] = v.mu.segInfo[name]
	}
	v.mu.head.Index, v.mu.idxSegs, v.mu.segInfo, v.mu.idxNew = ref, refs, info, 0
	v.restartLogsLocked(keep)
	return true, nil
}

// restartLogsLocked ends a checkpoint's changes to the write logs: keep
// is what the head names from now on, the logs' counters and failure
// marks start over, and the head is to be stored. The caller holds v.mu.
func (v *Volume) restartLogsLocked(keep []logFile) {
	v.mu.logs, v.mu.kept = keep, 0
	v.mu.head.Logs = nil
	for _, lf := range keep {
		v.mu.head.Logs = append(v.mu.head.Logs, lf.ref)
	}
	v.mu.logBytes, v.mu.logForce, v.mu.logBroken, v.mu.logCommit = 0, false, false, false
	v.mu.headDirty = true
	v.mu.dropRestart = v.mu.dropGen
	v.segResetLocked()
}

// checkpointLog writes every logged byte into the blocks (the same
// copy-on-write as a write without a log), empties the index and sets the
// head's logs for the next flush to store: this writer's log with From at
// its end (or a new log, past logBound or after a failed append), and no
// other; the logs dropped are deleted once that head is stored. The
// caller holds flushMu and the gate exclusively, and persists a cut next.
//
// It first checks that no other writer took the volume over (the head is
// the one this handle stored; nothing to check on a fenced store, which
// refuses a fenced writer's writes): a writer that stalled past its lease
// and wakes up to flush must not write its logged bytes into objects of
// its epoch that the taker's map still references. With a head swap of
// this handle of unknown outcome pending, the stored head must be the one
// at ver or one of those swaps (see checkPending).
func (v *Volume) checkpointLog(ctx context.Context, materialize bool) error {
	if !materialize && v.indexLog {
		if done, err := v.checkpointIndex(ctx); done || err != nil {
			return err
		}
	}
	v.mu.Lock()
	index := maps.Clone(v.mu.index)
	ver, pending := v.mu.headVer, slices.Clone(v.mu.pending)
	v.mu.Unlock()
	if len(index) > 0 && !v.fenced {
		check := v.checkFence
		if len(pending) > 0 {
			check = func(ctx context.Context, ver objstore.Version) error { return v.checkPending(ctx, ver, pending) }
		}
		if err := check(ctx, ver); err != nil {
			if errors.Is(err, ErrFenced) {
				v.mu.Lock()
				if v.mu.err == nil {
					v.mu.err = err
				}
				v.mu.Unlock()
			}
			return err
		}
	}
	if len(index) > 0 {
		// Writes into a tainted object (a write of unknown outcome, such
		// as an earlier checkpoint's, may still change it) would fail
		// with errTainted at every checkpoint: retire it first, as a
		// write does.
		if err := v.retireLocked(ctx); err != nil {
			return err
		}
		// The logged bytes are read back to be copied into the blocks,
		// and the logs then dropped unsynced: settle those this writer
		// appended to since its last flush (they are dirty; what it
		// appended before, that flush synced). A log of the writer before
		// (a checkpoint at open) is not this writer's to answer for: an
		// append of its that failed was never reported flushed.
		if err := v.settle(ctx, v.dirtyLogs(index)...); err != nil {
			return err
		}
	}
	blocks := slices.Sorted(maps.Keys(index))
	mem := v.bs
	if v.rw == nil {
		mem *= 2
	}
	one := func(b int64) error {
		if err := checkpointMem.Acquire(ctx, mem); err != nil {
			return err
		}
		defer checkpointMem.Release(mem)
		bp := v.bufs.Get().(*[]byte)
		defer v.bufs.Put(bp)
		if err := v.checkpointBlock(ctx, b, index[b], *bp); err != nil {
			return err
		}
		v.mu.Lock()
		delete(v.mu.index, b)
		v.mu.logGen++
		v.mu.dropGen++
		// Until the logs restart (below), the next flush must
		// checkpoint: a checkpoint that fails midway outside a flush
		// (a snapshot's, a resize's) leaves nothing else that asks
		// for it, and the stored head's log replays this block's
		// records over writes in place.
		v.mu.logForce = true
		v.mu.Unlock()
		return nil
	}
	// A write (or a put) and a sync per block, each at a store's latency
	// (a network's, or a disk's flush), and writers wait for it through a
	// handoff: several blocks at once.
	g := &errgroup.Group{}
	g.SetLimit(checkpointers)
	for _, b := range blocks {
		g.Go(func() error { return one(b) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	v.mu.Lock()
	var keep []logFile
	fresh := ""
	if v.logOn && len(v.mu.logs) > 0 && !v.mu.logClosing {
		cur := v.mu.logs[len(v.mu.logs)-1]
		if v.mu.logBroken || v.mu.logBytes > v.bound() {
			if v.mu.nextSeq < v.mu.seqEnd {
				seq := v.mu.nextSeq
				v.mu.nextSeq++
				ref := blockmap.LogRef{Epoch: cur.ref.Epoch, Seq: seq}
				keep = []logFile{{ref: ref, name: blockmap.LogName(v.id, ref.Epoch, ref.Seq)}}
				fresh = keep[0].name
			}
		} else {
			cur.ref.From = uint64(cur.end)
			// Its segments before From hold nothing the head needs.
			v.mu.freed = append(v.mu.freed, cur.segs...)
			cur.segs = nil
			keep = []logFile{cur}
		}
	}
	for _, lf := range v.mu.logs {
		if len(keep) == 0 || lf.name != keep[0].name {
			if v.segLog {
				v.mu.freed = append(v.mu.freed, lf.segs...)
				continue
			}
			v.mu.freed = append(v.mu.freed, lf.name)
			v.mu.freed = append(v.mu.freed, lf.segs...) // (replayOther)
			delete(v.mu.dirtyObjs, lf.name)
		}
	}
	if !v.mu.head.Index.IsZero() {
		// Every indexed byte is in the blocks now: the index and the
		// segments only it referenced go once the head is stored.
		v.mu.freed = append(v.mu.freed, blockmap.IndexName(v.id, v.mu.head.Index.Epoch, v.mu.head.Index.Seq))
		v.mu.freed = append(v.mu.freed, slices.Sorted(maps.Keys(v.mu.idxSegs))...)
		v.mu.head.Index = blockmap.IndexRef{}
	}
	v.mu.idxSegs, v.mu.segInfo, v.mu.idxNew = nil, nil, 0
	v.mu.logGen++
	v.restartLogsLocked(keep)
	v.mu.Unlock()
	if fresh != "" && !v.segLog && v.createLog(ctx, fresh) {
		v.mu.Lock()
		v.madeLocked(fresh)
		v.mu.Unlock()
	}
	return nil
}

// dirtyLogs returns the logs that index reads from and this writer
// appended to since its last flush, if the store settles (settle).
func (v *Volume) dirtyLogs(index map[int64][]logExt) []string {
	if v.settler == nil {
		return nil
	}
	var logs []string
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, exts := range index {
		for _, x := range exts {
			if v.mu.dirtyObjs[x.name] && !slices.Contains(logs, x.name) {
				logs = append(logs, x.name)
			}
		}
	}
	return logs
}

// checkpointBlock writes block b's logged extents exts (sorted, not
// overlapping) into the block, through buf (a block's buffer): in place
// if the block's object holds every sub-block they touch, else with one
// copy-on-write of just those sub-blocks, read through the log over the
// map (a partial block; see writeSubBlocks). A block that must be copied
// whole (a Zero entry, or one over an unsealed base) gets one write of
// the span from the first logged byte to the last, as a write without a
// log would. The caller holds the gate exclusively.
func (v *Volume) checkpointBlock(ctx context.Context, b int64, exts []logExt, buf []byte) error {
	e, epoch := v.entry(b)
	var touched uint64
	for _, x := range exts {
		touched |= v.subBlocks(x.off, x.n)
	}
	v.mu.Lock()
	owned := v.owns(e, epoch)
	whole := e.Kind() == blockmap.Zero || unsealed(&v.mu.head, e.Base()) || e.Kind() != blockmap.Partial && unsealed(&v.mu.head, e)
	v.mu.Unlock()
	switch {
	case v.segLog:
		// No in-place writes: one put of the block (below).
	case owned && e.Mask()&touched == touched:
		// In place: one write per run of adjacent extents.
		for i := 0; i < len(exts); {
			j := i + 1
			for j < len(exts) && exts[j].off == exts[j-1].off+exts[j-1].n {
				j++
			}
			lo, hi := exts[i].off, exts[j-1].off+exts[j-1].n
			p := buf[lo:hi]
			if err := v.readLogged(ctx, e, exts[i:j], p, lo); err != nil {
				return err
			}
			if err := v.writeObject(ctx, e.ObjectName(), e, lo, p); err != nil {
				return err
			}
			i = j
		}
		return nil
	case !whole:
		for rest := touched; rest != 0; {
			s := int64(bits.TrailingZeros64(rest))
			n := int64(bits.TrailingZeros64(^(rest >> s)))
			rest &^= v.subBlocks(s<<v.sshift, n<<v.sshift)
			lo, hi := s<<v.sshift, min((s+n)<<v.sshift, v.bs)
			if err := v.readLogged(ctx, e, exts, buf[lo:hi], lo); err != nil {
				return err
			}
		}
		obj := e
		if !owned {
			seq, err := v.allocSeq()
			if err != nil {
				return err
			}
			obj = blockmap.PrivateEntry(v.id, epoch, seq)
		}
		return v.writeSubBlocks(ctx, b, e, obj, touched, buf)
	}
	lo, hi := exts[0].off, exts[len(exts)-1].off+exts[len(exts)-1].n
	read := v.readLogged
	if v.segLog {
		// The whole block: the put below needs it all, and a write of
		// part of it would read the rest again.
		lo, hi, read = 0, min(v.bs, int64(v.Size())-b*v.bs), v.readOver
	}
	p := buf[lo:hi]
	if err := read(ctx, e, exts, p, lo); err != nil {
		return err
	}
	return v.writeBlockMap(ctx, b, lo, p, nil)
}

// segReaders is how many logged ranges of one block readOver reads at
// once.
const segReaders = 4

// readOver is readLogged for a store at a network's latency: it reads
// the block's range in one request, then the logged extents over it,
// several at once, instead of a request per gap between extents
// (a block that random 4 KiB writes touched 256 times cost 512 requests
// at its checkpoint, 257 now). The extents do not overlap (addExt), so
// the reads fill disjoint parts of p.
func (v *Volume) readOver(ctx context.Context, e blockmap.Entry, exts []logExt, p []byte, boff int64) error {
	end := boff + int64(len(p))
	if err := v.readEntry(ctx, e, p, boff); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(segReaders)
	for _, x := range overlapping(exts, boff, int64(len(p))) {
		lo, hi := max(x.off, boff), min(x.off+x.n, end)
		g.Go(func() error { return v.readLog(gctx, x.name, p[lo-boff:hi-boff], x.pos+lo-x.off) })
	}
	return g.Wait()
}

// checkPending is checkFence for a handle with head swaps of unknown
// outcome pending (from version ver): the stored head is still at ver, or
// is byte for byte one of those swaps (its reserved sequence numbers make
// it this handle's); anything else is another writer's, and fences the
// handle.
func (v *Volume) checkPending(ctx context.Context, ver objstore.Version, pending []pendingHead) error {
	cur, curVer, err := v.store.Get(ctx, blockmap.HeadName(v.id))
	switch {
	case objstore.IsNotExist(err):
		return fmt.Errorf("%w: %s (removed)", ErrFenced, v.id)
	case err != nil:
		return fmt.Errorf("volume: flush: check the map head: %w", err)
	case curVer != ver && !slices.ContainsFunc(pending, func(p pendingHead) bool { return bytes.Equal(p.data, cur) }):
		return fmt.Errorf("%w: %s", ErrFenced, v.id)
	}
	return v.checkGuard()
}

// overlayLocked returns a copy of block b's logged extents that overlap
// [boff, boff+n). The caller holds v.mu.
func (v *Volume) overlayLocked(b, boff, n int64) []logExt {
	if len(v.mu.index) == 0 {
		return nil
	}
	return overlapping(v.mu.index[b], boff, n)
}

// readLogged reads p at boff in block b: the logged extents exts (sorted,
// not overlapping) over the block e describes, one request per extent or
// gap.
func (v *Volume) readLogged(ctx context.Context, e blockmap.Entry, exts []logExt, p []byte, boff int64) error {
	end := boff + int64(len(p))
	i := overlapStart(exts, boff)
	for pos := boff; pos < end; {
		if i < len(exts) && exts[i].off <= pos {
			x := &exts[i]
			n := min(x.off+x.n, end) - pos
			if err := v.readLog(ctx, x.name, p[pos-boff:pos-boff+n], x.pos+pos-x.off); err != nil {
				return err
			}
			pos += n
			i++
			continue
		}
		next := end
		if i < len(exts) {
			next = min(next, exts[i].off)
		}
		if err := v.readEntry(ctx, e, p[pos-boff:next-boff], pos); err != nil {
			return err
		}
		pos = next
	}
	return nil
}

// tailLogs reads the records appended to the logs since this handle last
// looked (a follower whose head did not change). A log found missing
// returns errLogMoved if the head changed since (see loadLogs).
func (v *Volume) tailLogs(ctx context.Context) error {
	v.mu.Lock()
	logs := slices.Clone(v.mu.logs)
	gen, size, ver := v.mu.logGen, v.mu.head.Size, v.mu.headVer
	v.mu.Unlock()
	if len(logs) == 0 {
		return nil
	}
	var found []struct {
		b int64
		x logExt
	}
	lf := &logs[len(logs)-1]
	err := v.replayLog(ctx, lf, size, func(b int64, x logExt) {
		found = append(found, struct {
			b int64
			x logExt
		}{b, x})
	})
	if errors.Is(err, errLogMissing) {
		err = v.logGone(ctx, ver)
	}
	if err != nil || len(found) == 0 {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mu.logGen != gen {
		return nil // reloaded meanwhile
	}
	for _, f := range found {
		v.mu.index[f.b] = addExt(v.mu.index[f.b], f.x)
	}
	v.mu.idxNew += len(found)
	v.noteSegsLocked(lf.seen)
	v.mu.logs[len(v.mu.logs)-1].end = lf.end
	v.mu.logGen++
	return nil
}
