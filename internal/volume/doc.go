// Package volume is the engine: a Volume is a block device made of the
// objects its map (package blockmap) points at.
//
// An open Volume serves ReadAt, WriteAt (with FUA), WriteZeroes, Trim,
// Flush and BlockStatus. A write to a block the volume owns in its current
// epoch changes that private object in place; a write to any other block
// (zero, content, or private to a snapshot or parent) first copies it to a
// new private object (copy-on-write), and a write to a zero block only
// writes the bytes given (objects are sparse).
//
// On a store with in-place writes (objstore.RangeWriter), copy-on-write
// copies sub-blocks (1/64 of a block: 64 KiB at 4 MiB blocks), not
// blocks: the first write to a shared block makes it a partial block
// (blockmap.Partial), a new private object holding only the sub-blocks
// the write touched, over the old block as its base; a sub-block the
// write covers only in part is filled from the base first, through this
// process. Later writes to sub-blocks it holds go in place; the first
// later write that needs a sub-block it lacks copies every missing one
// from the base (under the block's stripe lock) and the block is private
// again: each mask change is a map change, which a guest that flushes
// after each write pays with a head write, so a block costs at most two.
// A writer with the write log leaves the block partial (the guest that
// flushes often writes it through the log; see writePartial).
// A write after a snapshot copies only
// the sub-blocks the old partial object holds. A read of a partial block
// makes one request per run of consecutive sub-blocks in the same object.
// A block of an unsealed epoch (see below) is still copied whole, so that
// no partial block reads from an object that a late write may change.
// Stores without in-place writes replace whole private objects.
//
// A data write that fails with an unknown outcome (a timeout: see
// objstore.Store) may still land later. The object it went to is then
// never written in place again: before the next write, resize or
// snapshot, with no write in flight, each block stored in such an object
// is copied to a new one, so the late write changes only an object that
// the next flushed map no longer references, and a snapshot never shares
// it. Close and Discard tell OnClose (ErrUnsettled), and the lease is
// released so that the next writer starts a new epoch.
//
// # Write log
//
// A writer opened with OpenOptions.Log, on a store with in-place writes
// whose flush can check the head without swapping it (or see below),
// appends each write
// it would copy on write (a block shared with a snapshot or a parent or
// of another epoch, a sub-block its partial block lacks) to its own log
// object,
// which the head names (blockmap.Head.Logs), instead of writing a new
// object and changing the map; an index in memory overlays the map for
// reads. A flush writes a commit record, syncs the log and checks the
// head: no map is written. Where writes need a sync (files), the log is
// written with zeros ahead of its tail, so that its sync commits no new
// size (aheadLog). Past a size bound, and before anything that
// swaps the head anyway (a map change, a snapshot, a resize, a hash,
// Close), the flush checkpoints: it writes the logged bytes into the
// blocks, copying on write only the sub-blocks they touch, and stores the
// map with the log's position moved past them. Every open replays the committed
// records of the logs the head names; a writer's open first swaps in a
// head naming its own log, then replays the others and checkpoints them
// out of the head, so that a writer taken over can have no flush
// acknowledged after the replay; after a clean release
// (OpenOptions.Handover: nothing appends to them any more) it keeps them
// in the head until its next checkpoint, and its open writes no block.
// The record format and the crash, takeover and handover arguments are in
// docs/format.md ("Write log").
//
// On a store without in-place writes (no objstore.RangeWriter: S3) that
// has create-if-absent and a fresh Stat, the log is stored as immutable
// segments (blockmap.LogSegmentName: the log and the segment's start
// position): records wait in memory, where reads find them, and a flush
// writes them with their commit as one new segment (one PUT: no head
// check, as a writer that takes the volume over creates a fence where the
// old writer's chain ends, so that its next segment's create fails; see
// "Fencing the chain" in docs/format.md); every small write within the
// burst is logged. A checkpoint (past a bound of 512 MiB or 1024
// segments, at Close, at a takeover) stores the write log index instead
// of writing blocks (blockmap.IndexName, named by the head: the extents
// whose bytes are in segments, which every reader loads before it
// replays the logs; see "Write log index" in docs/format.md); a
// snapshot, resize or hash, a writer that does not log, and the index's
// bounds (extents, garbage) materialize it: each block it touched is put
// whole. Replay follows the chain of segments from the
// head's From; an open that finds a log only in the other form (the
// store's capabilities changed: a store of several pools gained or lost
// one without in-place writes) replays that one.
//
// # Durability (invariants I1 and I2)
//
// Writes change objects and the in-memory map. Flush takes a consistent
// cut under the write gate (the set of objects written since the last
// flush and a copy of the map segments that changed, or of the changed
// entries: up to blockmap.MaxDelta of them go in the head's delta instead
// of segments, see blockmap.Head.Delta), then, outside the
// gate so writes go on: syncs those objects (their creates too: a
// writer creates its private blocks through objstore.LazyCreator where
// the store has it, which the object's Sync makes durable), writes the
// changed segments as new immutable objects, and swaps the head to point
// at them. A flush
// that changed at most blockmap.MaxDelta entries (counting those the head's
// delta already holds) writes no segment: it stores them in the head's
// delta (blockmap.Head.Delta); past that, after a resize or a hash, or at
// Checkpoint, it writes their segments and empties the delta. Data is
// durable before the map that points at it, so a flushed map never
// references missing or unsynced data. Objects that a flush made
// unreferenced (trimmed private blocks, replaced segments) are deleted
// only after the head swap; a crash in between leaves orphans for the
// garbage collector, never a dangling reference. A flush that changed no
// map entry (only in-place writes to blocks this writer owns) writes no
// map: it syncs those objects and then checks that the head is still the
// one it stored (ErrFenced otherwise), which is what the head swap would
// have found out; FUA does the same for one write's objects (see
// persistInPlace). A writer whose store fences it when its volume is taken
// over (OpenOptions.Fenced: RADOS, whose OSDs then refuse its operations)
// skips that check: the store refuses whatever it would have caught, and
// such a refusal (objstore.ErrFenced) fences the handle (ErrFenced).
//
// The head swap is a compare-and-swap, and one that fails with anything
// but a conflict (a timeout, a deadline) may have been applied anyway, or
// may still be. Such a swap is remembered; when a later swap of the same
// handle then meets a conflict, it reads the head, and if it is byte for
// byte one this handle wrote (its reserved sequence numbers make it
// unique) adopts it and swaps again. Any other head means another writer
// took over (ErrFenced).
//
// A garbage collection deletes unreferenced objects older than its grace
// period, which covers a writer's unflushed objects only while they are
// younger than MaxUnflushedAge. So a flush whose oldest write is older
// than that (the writer stalled, or nothing flushed it) first checks that
// every object its map will reference still exists, under a collection
// hold (OpenOptions.Hold) so that a collection already sweeping cannot
// delete one after the check and before the head swap; if one is gone, the
// handle is fenced (ErrStale, a kind of ErrFenced): that flush and every
// later write or flush fail, and the map is never persisted. The garbage
// collector refuses a grace that does not exceed MaxUnflushedAge.
//
// Sequence numbers of new private objects and segments are never reused:
// a writer reserves 2^32 of them in the head when it opens the volume, so
// an object left by a writer that crashed is never written into again.
//
// # Snapshots and clones (I4, I6)
//
// A snapshot is a new read-only head that shares every segment; the
// volume then starts a new epoch, so its next write to any block copies
// it. A clone is a new writable head that shares a read-only head's
// segments. Neither copies data: their cost is the size of the head.
//
// Except after a takeover. A writer whose lease was taken over (or
// released unsettled, see ErrUnsettled) may still be finishing a write that passed its lease check
// before it stalled, and that write lands late in its own epoch's object,
// which the new writer's map still references (no store can refuse a
// late write to a plain object). The new writer opens in a new epoch
// (OpenOptions.NewEpoch), so it never writes those objects in place, and
// records the epoch that ended as unsealed in the head
// (blockmap.Head.Unsealed). Before its next snapshot (or a later
// writer's), seal reads every block of an unsealed epoch that the map
// still references, stores it as a content block (immutable), points the
// map at it, and clears the record; so neither the snapshot nor the
// volume reads an object a late write can change once the snapshot is
// taken. Until then, a late write may still show in a block the new
// writer has not written, as a write in flight at the takeover would, and
// what the old writer wrote in place without flushing is read but not
// durable (nobody synced it: a crash of the store may drop it); Seal
// does the same as a snapshot's first step without a snapshot, for a
// writer that wants that window short. The cost is one read of the old writer's blocks, once
// per takeover, paid at the first Seal or snapshot after it; sealing runs
// beside writes. Hash seals too, since it leaves no private block.
//
// # Concurrency
//
// Every method is safe for concurrent use. Writes to the same block are
// serialized by a striped lock; reads never wait for writes except for a
// few microseconds on the map lock. No lock is held across backend I/O
// except the block's own stripe during its write and the flush lock
// during a flush (or a seal). The write guard (a lease) is never asked
// under the map lock, so a guard that waits holds up writes only.
//
// # Memory
//
// An open volume holds one 40-byte blockmap.Entry per block, 48 bytes
// more for each partial block, and a fixed 256-stripe lock table, so
// under 41 bytes per block (89 for a partial one): a 1 TiB volume of
// 4 MiB blocks costs about 10.5 MB, 23 MB if every block is partial.
package volume
