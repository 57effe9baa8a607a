package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// The model-based test: random operations on several volumes, each
// checked byte for byte against a plain in-memory oracle.

type modelVol struct {
	id       blockmap.ID
	h        *Volume
	data     []byte // what it must read now
	durable  []byte // what it read at its last flush
	dirty    []bool // bytes written since the last flush
	readOnly bool
	removed  bool
	// f, with model.follow, is a following read-only handle.
	f *Volume
}

func (m *modelVol) markFlushed() {
	m.durable = append(m.durable[:0], m.data...)
	clear(m.dirty)
}

func (m *modelVol) resize(n int) {
	if n < len(m.data) {
		m.data, m.durable, m.dirty = m.data[:n], m.durable[:n], m.dirty[:n]
		return
	}
	grow := n - len(m.data)
	m.data = append(m.data, make([]byte, grow)...)
	m.durable = append(m.durable, make([]byte, grow)...)
	m.dirty = append(m.dirty, make([]bool, grow)...)
}

type model struct {
	t     *testing.T
	ctx   context.Context
	rng   *rand.Rand
	store objstore.Store
	vols  []*modelVol
	// cp, if set, is the crashable store under test.
	cp *crashPoints
	// stalls turns on takeovers of writers that stall with a write in
	// flight, and the late landing of those writes.
	stalls  bool
	zombies []zombieWrite
	// shaky: objects (by name) of holders taken over that they wrote in place
	// without a sync, before the takeover or late: what a crash leaves of
	// them is unknown, in any map that still references them.
	shaky map[string]bool
	// partials counts the partial blocks seen by check, so that a test
	// can tell they were exercised.
	partials int
	// logged counts the sightings of logged bytes (the write log):
	// sightLogged.
	logged int
	// scattered: sightings of logged bytes in an owned object's
	// sub-blocks (logScattered).
	scattered int
	// follow: every volume also has a following handle (OpenOptions.Follow),
	// which check reads: every byte flushed and not written since.
	follow bool
	// noLog: writers do not use the write log (OpenOptions.Log), which
	// the model otherwise turns on for every writer.
	noLog bool
	// wrap: the crash images are read through it (the store under test
	// wraps the crashable one).
	wrap func(objstore.Store) objstore.Store
}

// zombieWrite is a write of a holder whose lease was taken over: it
// passed the holder's lease check, then the holder stalled (SIGSTOP, an
// NFS hang) past the takeover; it lands whenever the model says.
type zombieWrite struct {
	h     *Volume   // the stale handle, abandoned at the takeover
	vol   *modelVol // the volume it was taken from
	entry blockmap.Entry
	off   int
	p     []byte
}

const bs = 1 << SmallShift

func (m *model) fatalf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf(format, args...)
}

func (m *model) live(writable bool) *modelVol {
	var c []*modelVol
	for _, v := range m.vols {
		if !v.removed && (!writable || !v.readOnly) {
			c = append(c, v)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[m.rng.IntN(len(c))]
}

func (m *model) newVol(id blockmap.ID, data []byte, readOnly bool) *modelVol {
	h, err := Open(m.ctx, m.store, id, OpenOptions{Writable: !readOnly})
	if err != nil {
		m.fatalf("open %s: %v", id, err)
	}
	v := &modelVol{id: id, h: h, data: data, readOnly: readOnly,
		durable: append([]byte(nil), data...), dirty: make([]bool, len(data))}
	m.openFollower(v)
	m.vols = append(m.vols, v)
	return v
}

// openFollower opens v's following handle, with model.follow.
func (m *model) openFollower(v *modelVol) {
	if !m.follow {
		return
	}
	f, err := Open(m.ctx, m.store, v.id, OpenOptions{Follow: true})
	if err != nil {
		m.fatalf("open a follower of %s: %v", v.id, err)
	}
	v.f = f
}

// checkFollower reads v through its following handle: what was flushed
// and not written since must read as the oracle says.
func (m *model) checkFollower(v *modelVol) {
	m.t.Helper()
	if v.f == nil {
		return
	}
	got := make([]byte, len(v.data))
	if err := v.f.ReadAt(m.ctx, got, 0); err != nil {
		m.fatalf("follower of %s: read: %v", v.id, err)
	}
	var entries []blockmap.Entry
	for i := range got {
		if !v.dirty[i] && got[i] != v.data[i] {
			// A late write of a writer taken over shows where the stored
			// map still reads its object (see land).
			if entries == nil {
				entries = v.f.Entries()
			}
			if !m.shakyAt(v.f, entries, i) {
				m.fatalf("follower of %s reads byte %d (block %d) = %#x, flushed %#x", v.id, i, i/bs, got[i], v.data[i])
			}
		}
	}
}

// arm turns crash images inside operations on or off. Under the crash
// points' lock: a flush the volume starts in the background may reach a
// crash point while the model is between operations, and must then take
// no image (nor draw from the model's random source).
func (m *model) arm(on bool) {
	if m.cp != nil {
		m.cp.mu.Lock()
		m.cp.armed = on
		m.cp.mu.Unlock()
	}
}

// span picks a random range, biased towards block boundaries.
func (m *model) span(size int) (int, int) {
	if size == 0 {
		return 0, 0
	}
	off := m.rng.IntN(size)
	if m.rng.IntN(3) == 0 {
		off = off / bs * bs
	}
	n := 1 + m.rng.IntN(min(size-off, 3*bs))
	if m.rng.IntN(4) == 0 {
		n = min(size-off, bs)
	}
	return off, n
}

func (m *model) check(v *modelVol) {
	m.t.Helper()
	got := make([]byte, len(v.data))
	if err := v.h.ReadAt(m.ctx, got, 0); err != nil {
		m.fatalf("read %s: %v", v.id, err)
	}
	if !bytes.Equal(got, v.data) {
		i := 0
		for got[i] == v.data[i] {
			i++
		}
		m.fatalf("volume %s differs from the oracle at byte %d (block %d): got %#x want %#x",
			v.id, i, i/bs, got[i], v.data[i])
	}
	if sz := v.h.Size(); sz != int64(len(v.data)) {
		m.fatalf("volume %s has size %d, oracle %d", v.id, sz, len(v.data))
	}
	for _, e := range v.h.Entries() {
		if e.Kind() == blockmap.Partial {
			m.partials++
		}
	}
	m.sightLogged(v)
}

// sightLogged counts logged bytes in v's writer (logged), and logged
// bytes in an object it owns (scattered). It runs at every check and
// after every write: a flush in the background (the burst) or a
// checkpoint (the log's bound) may empty the index at any moment, so
// sightings at checks alone may miss every scattered write of a run.
func (m *model) sightLogged(v *modelVol) {
	v.h.mu.Lock()
	if len(v.h.mu.index) > 0 {
		m.logged++
	}
	index := maps.Clone(v.h.mu.index)
	v.h.mu.Unlock()
	for b, exts := range index {
		// Logged bytes in sub-blocks of an object the writer owns:
		// only a scattered write (logScattered) logs those.
		e, epoch := v.h.entry(b)
		if touched := v.h.subBlocks(exts[0].off, exts[0].n); v.h.owns(e, epoch) && e.Mask()&touched == touched {
			m.scattered++
		}
	}
}

// checkCrashImage opens every volume on a crashed store and checks that
// every byte flushed before the crash is there, and that nothing fails
// to read (no map points at a missing or corrupt object).
func (m *model) checkCrashImage(s objstore.Store, vols []*modelVol) {
	m.t.Helper()
	if m.wrap != nil {
		s = m.wrap(s)
	}
	for _, v := range vols {
		if v.removed {
			continue
		}
		h, err := Open(m.ctx, s, v.id, OpenOptions{})
		if err != nil {
			m.fatalf("after crash: open %s: %v", v.id, err)
		}
		got := make([]byte, h.Size())
		if len(got) != len(v.data) {
			m.fatalf("after crash: %s has size %d, want %d", v.id, len(got), len(v.data))
		}
		if err := h.ReadAt(m.ctx, got, 0); err != nil {
			m.fatalf("after crash: read %s: %v", v.id, err)
		}
		entries := h.Entries()
		for i := range got {
			// NB: shakyAt last: it is slow, and only excuses a mismatch.
			if !v.dirty[i] && got[i] != v.durable[i] && !m.shakyAt(h, entries, i) {
				m.fatalf("after crash: %s byte %d (block %d) = %#x, flushed %#x", v.id, i, i/bs, got[i], v.durable[i])
			}
		}
	}
}

// shakyAt reports whether byte i of the volume h, whose map is entries,
// reads from a shaky object.
func (m *model) shakyAt(h *Volume, entries []blockmap.Entry, i int) bool {
	src, _ := h.runAt(entries[i/bs], int64(i%bs))
	return m.shaky[src.ObjectName()]
}

// restart replaces the store's state with a crash image and reopens
// every volume; the old handles are abandoned, as a crashed process's.
func (m *model) restart() {
	img := m.cp.mem.Crash(m.rng)
	m.checkCrashImage(img, m.vols)
	// The crashed process runs no further: flushes its handles started
	// in the background end in the store it crashed on, before the image
	// replaces it. (Left running into the image, a checkpoint that swapped
	// the head after the image was taken went on to delete objects that
	// the image's older head still maps: "object not found" after the
	// crash, under load, in one of three runs of the package.)
	for _, v := range m.vols {
		v.h.waitKick()
	}
	for _, z := range m.zombies {
		z.h.waitKick()
	}
	m.cp.mem, m.cp.Store = img, img
	// The stalled writers ran on the machine that crashed: their writes
	// in flight are in the image or lost, and none lands afterwards.
	// (Kept alive, their late writes landed in the store the crash left,
	// where the model's account of what may show is not exact:
	// TestModelCrashStalls failed in about one run in ten.)
	m.zombies = nil
	s := m.store
	for _, v := range m.vols {
		if v.removed {
			continue
		}
		h, err := Open(m.ctx, s, v.id, OpenOptions{Writable: !v.readOnly})
		if err != nil {
			m.fatalf("reopen %s after crash: %v", v.id, err)
		}
		v.h = h
		if err := h.ReadAt(m.ctx, v.data, 0); err != nil {
			m.fatalf("read %s after crash: %v", v.id, err)
		}
		v.markFlushed()
		m.openFollower(v)
	}
}

func (m *model) step(i int) string {
	rng := m.rng
	switch op := rng.IntN(100); {
	case op < 35: // write
		v := m.live(true)
		off, n := m.span(len(v.data))
		if rng.IntN(3) == 0 {
			// A few sub-blocks or less: partial blocks after a snapshot
			// or in a clone.
			n = 1 + rng.IntN(min(len(v.data)-off, 3*bs/blockmap.SubBlocks))
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.IntN(255) + 1)
		}
		if m.follow && rng.IntN(3) == 0 {
			m.checkFollower(v) // its map before the write: a follower reads during writes
		}
		if rng.IntN(8) == 0 {
			// A run of zeros inside data: content blocks trim them.
			clear(p[n/2:])
		}
		fua := rng.IntN(10) == 0
		for j := off; j < off+n; j++ {
			v.dirty[j] = true
		}
		m.arm(true)
		err := v.h.WriteAt(m.ctx, p, int64(off), fua)
		m.arm(false)
		if err != nil {
			m.fatalf("step %d write: %v", i, err)
		}
		m.sightLogged(v)
		copy(v.data[off:], p)
		if fua {
			// FUA makes this write durable, not the others.
			copy(v.durable[off:], p)
			clear(v.dirty[off : off+n])
		}
		return fmt.Sprintf("write %s %d+%d fua=%v", v.id, off, n, fua)
	case op < 45: // zero or trim
		v := m.live(true)
		off, n := m.span(len(v.data))
		noHole := rng.IntN(2) == 0
		for j := off; j < off+n; j++ {
			v.dirty[j] = true
		}
		m.arm(true)
		err := v.h.WriteZeroes(m.ctx, int64(off), int64(n), noHole, false)
		m.arm(false)
		if err != nil {
			m.fatalf("step %d zero: %v", i, err)
		}
		clear(v.data[off : off+n])
		return fmt.Sprintf("zero %s %d+%d", v.id, off, n)
	case op < 55: // flush
		v := m.live(true)
		m.arm(true)
		err := v.h.Flush(m.ctx)
		m.arm(false)
		if err != nil {
			m.fatalf("step %d flush: %v", i, err)
		}
		v.markFlushed()
		return "flush " + v.id.String()
	case op < 62: // snapshot
		v := m.live(true)
		sid, err := v.h.Snapshot(m.ctx)
		if err != nil {
			m.fatalf("step %d snapshot: %v", i, err)
		}
		v.markFlushed()
		m.newVol(sid, append([]byte(nil), v.data...), true)
		return "snapshot " + v.id.String()
	case op < 68: // clone a snapshot, sometimes bigger
		src := m.live(false)
		if !src.readOnly {
			return "no clone"
		}
		size := len(src.data)
		if rng.IntN(3) == 0 {
			size += rng.IntN(4 * bs)
		}
		cid, err := Clone(m.ctx, m.store, src.id, uint64(size))
		if err != nil {
			m.fatalf("step %d clone: %v", i, err)
		}
		data := make([]byte, size)
		copy(data, src.data)
		m.newVol(cid, data, false)
		return "clone " + src.id.String()
	case op < 74: // resize
		v := m.live(true)
		size := max(1, len(v.data)+rng.IntN(6*bs)-3*bs)
		if err := v.h.Resize(m.ctx, uint64(size)); err != nil {
			m.fatalf("step %d resize: %v", i, err)
		}
		v.resize(size)
		v.markFlushed()
		return fmt.Sprintf("resize %s %d", v.id, size)
	case op < 80: // reopen
		v := m.live(false)
		if !v.readOnly && rng.IntN(2) == 0 {
			// A handover (a daemon's handoff): flush, release, and the
			// next writer keeps the write logs it finds.
			if err := v.h.Flush(m.ctx); err != nil {
				m.fatalf("step %d flush before a handover: %v", i, err)
			}
			v.markFlushed()
			old := v.h
			if err := old.Discard(m.ctx); err != nil {
				m.fatalf("step %d discard at a handover: %v", i, err)
			}
			m.arm(true) // crash images at the open's head swap
			h, err := Open(m.ctx, m.store, v.id, OpenOptions{Writable: true, Handover: true})
			m.arm(false)
			if err != nil {
				m.fatalf("step %d open after a handover: %v", i, err)
			}
			v.h = h
			// The writer before, woken up late, writes nothing.
			if err := old.WriteAt(m.ctx, []byte{1}, 0, false); err == nil {
				m.fatalf("step %d: the writer that handed over wrote after its release", i)
			}
			return "handover " + v.id.String()
		}
		if err := v.h.Close(m.ctx); err != nil {
			m.fatalf("step %d close: %v", i, err)
		}
		v.markFlushed()
		h, err := Open(m.ctx, m.store, v.id, OpenOptions{Writable: !v.readOnly})
		if err != nil {
			m.fatalf("step %d reopen: %v", i, err)
		}
		v.h = h
		return "reopen " + v.id.String()
	case op < 84: // hash a snapshot's blocks into content blocks
		v := m.live(false)
		if !v.readOnly {
			return "no hash"
		}
		h, err := Open(m.ctx, m.store, v.id, OpenOptions{Remap: true})
		if err != nil {
			m.fatalf("step %d open for hash: %v", i, err)
		}
		if _, err := h.Hash(m.ctx, nil); err != nil {
			m.fatalf("step %d hash: %v", i, err)
		}
		h.Close(m.ctx)
		if v.h, err = Open(m.ctx, m.store, v.id, OpenOptions{}); err != nil {
			m.fatalf("step %d reopen after hash: %v", i, err)
		}
		return "hash " + v.id.String()
	case op < 87: // remove a snapshot (clones of it must not notice)
		v := m.live(false)
		if !v.readOnly || rng.IntN(2) == 0 {
			return "no remove"
		}
		if err := Remove(m.ctx, m.store, v.id); err != nil {
			m.fatalf("step %d remove: %v", i, err)
		}
		v.removed = true
		return "remove " + v.id.String()
	case op < 90 && m.cp != nil:
		m.restart()
		return "crash"
	case op < 94 && m.stalls:
		return m.takeover()
	case op < 98 && m.stalls && len(m.zombies) > 0:
		return m.land()
	default: // read a random range
		v := m.live(false)
		off, n := m.span(len(v.data))
		var p []byte
		var err error
		if m.rng.IntN(2) == 0 {
			p = make([]byte, n)
			err = v.h.ReadAt(m.ctx, p, int64(off))
		} else {
			err = v.h.ReadTo(m.ctx, int64(off), int64(n), func(bufs [][]byte) error {
				for _, b := range bufs {
					p = append(p, b...)
				}
				return nil
			})
		}
		if err != nil {
			m.fatalf("step %d read: %v", i, err)
		}
		if !bytes.Equal(p, v.data[off:off+n]) {
			m.fatalf("step %d: read %s %d+%d differs from the oracle", i, v.id, off, n)
		}
		return "read"
	}
}

// takeover stalls the writer of a volume with a write to a block it owns
// in flight, and opens the volume in a new epoch as a node that took its
// lease over does.
func (m *model) takeover() string {
	v := m.live(true)
	old := v.h
	entries := old.Entries()
	b := m.rng.IntN(len(entries))
	e := entries[b]
	if !old.owns(e, old.Head().Epoch) {
		return "no takeover"
	}
	if m.rng.IntN(2) == 0 {
		if err := old.Flush(m.ctx); err != nil {
			m.fatalf("flush before the stall: %v", err)
		}
		v.markFlushed()
	}
	blen := min(bs, len(v.data)-b*bs)
	boff := m.rng.IntN(blen)
	n := 1 + m.rng.IntN(blen-boff)
	p := make([]byte, n)
	for j := range p {
		p[j] = byte(m.rng.IntN(255) + 1)
	}
	m.zombies = append(m.zombies, zombieWrite{h: old, vol: v, entry: e, off: b*bs + boff, p: p})

	h, err := Open(m.ctx, m.store, v.id, OpenOptions{Writable: true, NewEpoch: true})
	if err != nil {
		m.fatalf("open after the takeover: %v", err)
	}
	// The new holder reads what the old one flushed, and perhaps some of
	// what it wrote in place since.
	got := make([]byte, h.Size())
	if err := h.ReadAt(m.ctx, got, 0); err != nil {
		m.fatalf("read after the takeover: %v", err)
	}
	// What the old holder wrote in place and did not sync may be lost
	// in a crash as long as a map references its object (its own map may
	// no longer: a trim it did not flush).
	entries = h.Entries()
	for i, d := range v.dirty {
		if e := entries[i/bs]; d && e.IsPrivate() && e.Owner() == v.id && e.Epoch() < h.Head().Epoch {
			m.shaky[e.ObjectName()] = true
		}
	}
	for i := range got {
		if !v.dirty[i] && got[i] != v.durable[i] && !m.shakyAt(h, entries, i) {
			m.fatalf("after the takeover of %s: byte %d (block %d) = %#x, flushed %#x", v.id, i, i/bs, got[i], v.durable[i])
		}
	}
	v.h, v.data = h, got
	v.markFlushed()
	return fmt.Sprintf("takeover of %s with a write to block %d in flight", v.id, b)
}

// land makes a stalled write land late, through the stale handle. No
// snapshot may change; the live volume may show it only in a block that
// still is the old holder's object (none after a snapshot).
func (m *model) land() string {
	i := m.rng.IntN(len(m.zombies))
	z := m.zombies[i]
	m.zombies = append(m.zombies[:i], m.zombies[i+1:]...)
	// A flush the stale handle started in the background (its writes
	// passed the log's burst, or its bound) may have found it fenced:
	// then it refuses every request, this write included, before writing
	// anything.
	z.h.waitKick()
	if z.h.fencedErr() != nil {
		if err := z.h.WriteAt(m.ctx, z.p, int64(z.off), false); !errors.Is(err, ErrFenced) {
			m.fatalf("late write of a fenced stale writer: %v, want ErrFenced", err)
		}
		return fmt.Sprintf("late write to %s %d+%d refused: fenced", z.vol.id, z.off, len(z.p))
	}
	if err := z.h.WriteAt(m.ctx, z.p, int64(z.off), false); err != nil {
		m.fatalf("late write of a stalled writer: %v", err)
	}
	if v := z.vol; !v.removed && z.off+len(z.p) <= len(v.data) {
		// It shows where the live map reads from the object it went to:
		// in its sub-blocks of a partial block; not where the live
		// holder's log overlays it, nor if it went to the stale
		// holder's own log (which the live holder dropped at its open).
		e := v.h.Entries()[z.off/bs]
		for j := range z.p {
			if src, _ := v.h.runAt(e, int64((z.off+j)%bs)); src.ObjectName() == z.entry.ObjectName() &&
				!v.h.loggedAt(int64(z.off+j)) && !z.h.loggedAt(int64(z.off+j)) {
				// It may or may not survive a crash, also once the
				// live holder copies the block into an object of its
				// own: until the next flush, either is right.
				v.data[z.off+j] = z.p[j]
				v.dirty[z.off+j] = true
			}
		}
	}
	m.shaky[z.entry.ObjectName()] = true
	if m.rng.IntN(2) == 0 {
		// The late write is in the store (in place, or in the stale
		// writer's log), so its flush has something to persist, and it
		// must find out it was taken over: the head check, or on a
		// segmented log the taker's fence at the end of the chain.
		if err := z.h.Flush(m.ctx); !errors.Is(err, ErrFenced) {
			m.fatalf("flush of a stale writer: %v, want ErrFenced", err)
		}
	}
	return fmt.Sprintf("late write to %s %d+%d", z.vol.id, z.off, len(z.p))
}

// waitKick waits for a flush the volume started in the background.
func (v *Volume) waitKick() {
	for {
		v.mu.Lock()
		kick := v.mu.logKick
		v.mu.Unlock()
		if !kick {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// fencedErr is the error that makes the handle refuse every request.
func (v *Volume) fencedErr() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.err
}

// loggedAt reports whether byte off of the volume reads from a write log.
func (v *Volume) loggedAt(off int64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	boff := off & (v.bs - 1)
	for _, x := range v.mu.index[off>>v.shift] {
		if x.off <= boff && boff < x.off+x.n {
			return true
		}
	}
	return false
}

// runModel runs steps random operations on s. With cp (which must wrap
// s), it also crashes the store between and inside operations.
func runModel(t *testing.T, s objstore.Store, seed uint64, steps int, cp *crashPoints, stalls bool) *model {
	return runModelWith(t, &model{}, s, seed, steps, cp, stalls)
}

// runModelWith is runModel with m's options (follow).
func runModelWith(t *testing.T, m *model, s objstore.Store, seed uint64, steps int, cp *crashPoints, stalls bool) *model {
	m.t, m.ctx, m.rng, m.store, m.cp, m.stalls, m.shaky = t, context.Background(), rand.New(rand.NewPCG(seed, 7)), s, cp, stalls, map[string]bool{}
	defer setLog(!m.noLog)()
	if seed%3 == 0 {
		// Checkpoints into a new log every few writes.
		defer setLogBound(3 * bs)()
	}
	if cp != nil {
		cp.m = m
	}
	for k := 0; k < 2; k++ {
		id, err := Create(m.ctx, s, CreateOptions{Size: uint64(5*bs + 1000*k), BlockShift: SmallShift})
		if err != nil {
			t.Fatal(err)
		}
		m.newVol(id, make([]byte, 5*bs+1000*k), false)
	}
	var trace []string
	defer func() {
		if t.Failed() {
			start := max(0, len(trace)-15)
			t.Logf("seed %d, last steps:\n%v", seed, trace[start:])
		}
	}()
	for i := 0; i < steps; i++ {
		trace = append(trace, m.step(i))
		if i%10 == 0 {
			for _, v := range m.vols {
				if !v.removed {
					m.check(v)
				}
			}
		}
		for _, v := range m.vols {
			if !v.removed && m.follow && i%3 == 0 {
				m.checkFollower(v)
			}
		}
	}
	for _, v := range m.vols {
		if !v.removed {
			m.check(v)
		}
	}
	return m
}

// seeds is how many random runs a model test makes (fewer with -short,
// which the race-detector run uses).
func seeds(n uint64) uint64 {
	if testing.Short() {
		return min(n, 2)
	}
	return n
}

func TestModelMem(t *testing.T) {
	for seed := uint64(1); seed <= seeds(12); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if seed%3 == 0 {
				// Bursts of writes without a flush past a few KiB:
				// background checkpoints, and writes past them taking
				// the map path beside logged blocks.
				defer setLogBurst(8 << 10)()
			}
			defer scatterSeed(seed)()
			m := runModel(t, objstore.NewMem(), seed, 300, nil, false)
			if m.partials == 0 && !t.Failed() {
				t.Fatal("no partial block was seen")
			}
			if m.logged == 0 && !t.Failed() {
				t.Fatal("no logged write was seen")
			}
			if scatterDefault && m.scattered == 0 && !t.Failed() {
				t.Fatal("no scattered write to an owned block was seen logged")
			}
		})
	}
}

// TestModelMemNoLog is TestModelMem with writers that do not log
// (OpenOptions.Log off: copying writers, stores without in-place writes).
func TestModelMemNoLog(t *testing.T) {
	for seed := uint64(1); seed <= seeds(6); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runModelWith(t, &model{noLog: true}, objstore.NewMem(), seed, 300, nil, false)
		})
	}
}

// TestModelCrashNoLog is TestModelCrash without the write log.
func TestModelCrashNoLog(t *testing.T) {
	for seed := uint64(1); seed <= seeds(6); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			mem := objstore.NewCrashable()
			cp := &crashPoints{Store: mem, mem: mem}
			runModelWith(t, &model{noLog: true}, cp, seed, 300, cp, true)
		})
	}
}

func TestModelFile(t *testing.T) {
	for seed := uint64(1); seed <= seeds(3); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s, err := objstore.OpenFile(t.TempDir(), true)
			if err != nil {
				t.Fatal(err)
			}
			defer scatterSeed(seed)()
			runModel(t, s, seed, 200, nil, false)
		})
	}
}

// lending is the memory store lending what it reads, in three pieces,
// as RADOS does (objstore.Lender): ReadTo's path without a copy.
type lending struct{ *objstore.Mem }

func (l lending) ReadLend(ctx context.Context, name string, off int64, n int, fn func([][]byte) error) error {
	in, err := l.Stat(ctx, name)
	if err != nil {
		return err
	}
	p := make([]byte, max(min(off+int64(n), in.Size)-off, 0))
	if err := l.ReadAt(ctx, name, p, off); err != nil {
		return err
	}
	a, b := len(p)/3, 2*len(p)/3
	return fn([][]byte{p[:a], p[a:b], p[b:]})
}

func TestModelLending(t *testing.T) {
	for seed := uint64(1); seed <= seeds(4); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runModel(t, lending{objstore.NewMem()}, seed, 300, nil, false)
		})
	}
}

// TestModelWholeBlockBackend runs the model on a store without in-place
// writes (the S3 case): every write replaces whole private objects.
func TestModelWholeBlockBackend(t *testing.T) {
	type putOnly struct{ objstore.Store }
	for seed := uint64(1); seed <= seeds(4); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runModel(t, putOnly{objstore.NewMem()}, seed, 200, nil, false)
		})
	}
}

// TestModelStalls runs the model with writers that stall past their
// lease with a write in flight (issue 10 #2): the volume is taken over in
// a new epoch, snapshotted, cloned, written, and the stale write lands
// late at a random later step. Every snapshot still reads what it held.
func TestModelStalls(t *testing.T) {
	type putOnly struct{ objstore.Store }
	for seed := uint64(1); seed <= seeds(12); seed++ {
		stores := map[string]func() objstore.Store{
			"mem":         func() objstore.Store { return objstore.NewMem() },
			"whole-block": func() objstore.Store { return putOnly{objstore.NewMem()} },
		}
		if seed <= 2 {
			stores["file"] = func() objstore.Store { return newFileStore(t) }
		}
		for name, mk := range stores {
			t.Run(fmt.Sprintf("%s/%d", name, seed), func(t *testing.T) {
				defer scatterSeed(seed)()
				runModel(t, mk(), seed, 300, nil, true)
			})
		}
	}
}

// scatterSeed sends small scattered writes to owned blocks to the log
// (logScattered) on the seeds 1 and 3 modulo 4, the latter with at most
// two blocks with logged bytes (logScatterBlocks), as on a store whose
// sync writes the inode; it returns what undoes it.
func scatterSeed(seed uint64) func() {
	old, oldBlocks := scatterDefault, logScatterBlocks
	scatterDefault = seed%4 == 1 || seed%4 == 3
	if seed%4 == 3 {
		logScatterBlocks = 2
	}
	return func() { scatterDefault, logScatterBlocks = old, oldBlocks }
}

// TestModelCrash runs the model on the crashable store: crashes between
// operations, and crash images taken at random moments inside them
// (before a data sync, a segment write or a head swap) are checked at
// once.
func TestModelCrash(t *testing.T) {
	// Sightings of scattered writes logged, by scatterSeed's kind (seed
	// modulo 4), over all seeds: crashes inside operations and flushes
	// in the background make a run's count vary, and one seed with at
	// most two logged blocks may see none.
	scattered := map[uint64]int{}
	for seed := uint64(1); seed <= seeds(12); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if seed%2 == 0 {
				// A delta of at most 2 entries: most flushes that change
				// the map then checkpoint it into segments.
				defer setMaxDelta(2)()
			}
			if seed%3 == 0 {
				defer setLogBurst(8 << 10)() // as in TestModelMem
			}
			defer scatterSeed(seed)()
			mem := objstore.NewCrashable()
			cp := &crashPoints{Store: mem, mem: mem}
			m := runModel(t, cp, seed, 300, cp, false)
			if cp.images == 0 && !t.Failed() {
				t.Fatalf("no crash image was taken inside an operation (%d steps)", len(m.vols))
			}
			if m.partials == 0 && !t.Failed() {
				t.Fatal("no partial block was seen")
			}
			if m.logged == 0 && !t.Failed() {
				t.Fatal("no logged write was seen")
			}
			if scatterDefault {
				scattered[seed%4] += m.scattered
			}
		})
	}
	for kind, n := range scattered {
		if n == 0 && !t.Failed() {
			t.Errorf("no scattered write to an owned block was seen logged on the seeds %d modulo 4", kind)
		}
	}
}

// TestModelFollowDelta (issue 11 review2): the model with a following
// handle on every volume and snapshot, read every third step and before
// some writes, with the
// head's delta limited to 1, 2 and 256 entries, on the crashable store
// (crash images inside flushes and checkpoints) and on the file store.
func TestModelFollowDelta(t *testing.T) {
	deltas, n := []int{1, 2, blockmap.MaxDelta}, seeds(4)
	if testing.Short() {
		deltas, n = deltas[:1], 1 // (the race detector's run: followers read all the time)
	}
	for seed := uint64(1); seed <= n; seed++ {
		for _, md := range deltas {
			t.Run(fmt.Sprintf("%d/delta%d", seed, md), func(t *testing.T) {
				defer setMaxDelta(md)()
				mem := objstore.NewCrashable()
				cp := &crashPoints{Store: mem, mem: mem}
				m := &model{follow: true}
				runModelWith(t, m, cp, seed*100+uint64(md), 300, cp, false)
			})
		}
	}
	for seed := uint64(1); seed <= seeds(3) && !testing.Short(); seed++ {
		t.Run(fmt.Sprintf("file/%d", seed), func(t *testing.T) {
			defer setMaxDelta(2)()
			runModelWith(t, &model{follow: true}, newFileStore(t), seed, 200, nil, false)
		})
	}
}

// TestModelCrashStallsFollowDelta (issue 11 review2) is
// TestModelCrashStalls with followers and a head delta of one entry:
// late writes of writers taken over, crash images and checkpoints at
// almost every flush that changes the map.
func TestModelCrashStallsFollowDelta(t *testing.T) {
	if testing.Short() {
		t.Skip("slow under the race detector; TestModelFollowDelta has followers in -short")
	}
	for seed := uint64(1); seed <= seeds(4)/2; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			defer setMaxDelta(1)()
			mem := objstore.NewCrashable()
			cp := &crashPoints{Store: mem, mem: mem}
			runModelWith(t, &model{follow: true}, cp, seed+30, 300, cp, true)
		})
	}
}

// TestModelCrashStalls is TestModelCrash with stalled writers taken over
// (TestModelStalls): crash images also see late writes.
func TestModelCrashStalls(t *testing.T) {
	for seed := uint64(1); seed <= seeds(6); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			mem := objstore.NewCrashable()
			cp := &crashPoints{Store: mem, mem: mem}
			runModel(t, cp, seed, 300, cp, true)
		})
	}
}

// crashPoints wraps the crashable store. While armed (during writes,
// zeroes and flushes), each sync, segment create and head swap may first
// take a crash image and check it against the model.
type crashPoints struct {
	objstore.Store
	mu     sync.Mutex // point runs from concurrent syncs
	mem    *objstore.Mem
	m      *model
	armed  bool
	images int
	split  *rand.Rand // where appends are torn (see WriteAt)
}

func (c *crashPoints) point() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed && c.m.rng.IntN(6) == 0 {
		c.images++
		c.m.checkCrashImage(c.mem.Crash(c.m.rng), c.m.vols)
	}
}

func (c *crashPoints) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	c.point()
	return c.Store.Create(ctx, name, data)
}

func (c *crashPoints) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	c.point()
	return c.Store.Swap(ctx, name, data, old)
}

// WriteAt may take a crash image before a write; an append to a write
// log is written in two pieces in either order, each with a crash point
// before it, so that images hold torn records (a header without its data
// and data without its header).
func (c *crashPoints) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	c.point()
	if !strings.Contains(name, "/l/") || len(p) < 2 {
		return c.mem.WriteAt(ctx, name, p, off)
	}
	c.mu.Lock()
	if c.split == nil {
		// Its own source: appends also come from flushes the volume
		// starts in the background, while the model draws from its own.
		c.split = rand.New(rand.NewPCG(uint64(len(p)), 7))
	}
	cut, first := 1+c.split.IntN(len(p)-1), c.split.IntN(2)
	c.mu.Unlock()
	parts := [][2]int{{0, cut}, {cut, len(p)}}
	for k := range 2 {
		pt := parts[(first+k)%2]
		if k == 1 {
			c.point()
		}
		if err := c.mem.WriteAt(ctx, name, p[pt[0]:pt[1]], off+int64(pt[0])); err != nil {
			return err
		}
	}
	return nil
}

// Stat may take a crash image before it reads: between a flush's sync
// and its head check.
func (c *crashPoints) Stat(ctx context.Context, name string) (objstore.Info, error) {
	c.point()
	return c.Store.Stat(ctx, name)
}

func (c *crashPoints) Sync(ctx context.Context, name string) error {
	c.point()
	return c.mem.Sync(ctx, name)
}

// FreshStat: the crashable store's Stat is authoritative, so flushes
// that change no map entry take their path (persistInPlace).
func (c *crashPoints) FreshStat() bool { return true }

func (c *crashPoints) Copy(ctx context.Context, src, dst string) error {
	return c.mem.Copy(ctx, src, dst)
}

// TestModelCrashMapPath (issue 11 review of the fresh-clone writes) is
// TestModelCrash with a log burst of 0: a logging writer's writes that
// are not FUA take the map path, so its partial blocks gain sub-blocks in
// place and stay partial, between crash images, snapshots, clones and
// takeovers.
func TestModelCrashMapPath(t *testing.T) {
	for seed := uint64(1); seed <= seeds(6); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			defer setLogBurst(0)()
			if seed%2 == 0 {
				defer setMaxDelta(2)()
			}
			mem := objstore.NewCrashable()
			cp := &crashPoints{Store: mem, mem: mem}
			m := runModel(t, cp, seed, 300, cp, false)
			if m.partials == 0 && !t.Failed() {
				t.Fatal("no partial block was seen")
			}
		})
	}
}
