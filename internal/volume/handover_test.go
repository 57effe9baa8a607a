package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

var errNoLease = errors.New("test: no lease")

// TestGuard: once the guard refuses, the handle writes nothing to the
// store: neither data, nor map segments, nor the head.
func TestGuard(t *testing.T) {
	s := objstore.NewMem()
	id, err := Create(ctx, s, CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	var refuse atomic.Bool
	guard := func() error {
		if refuse.Load() {
			return errNoLease
		}
		return nil
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true, Guard: guard})
	if err != nil {
		t.Fatal(err)
	}
	v.WriteAt(ctx, fill(bs, 1), 0, true)
	v.WriteAt(ctx, fill(bs, 2), bs, false) // written, not flushed

	before := snapshotStore(t, s)
	refuse.Store(true)
	for what, err := range map[string]error{
		"write":  v.WriteAt(ctx, fill(bs, 3), 2*bs, false),
		"zero":   v.WriteZeroes(ctx, 0, bs, false, false),
		"flush":  v.Flush(ctx),
		"resize": v.Resize(ctx, 8*bs),
	} {
		if !errors.Is(err, errNoLease) {
			t.Errorf("%s without the lease: %v", what, err)
		}
	}
	if _, err := v.Snapshot(ctx); !errors.Is(err, errNoLease) {
		t.Errorf("snapshot without the lease: %v", err)
	}
	if after := snapshotStore(t, s); len(after) != len(before) {
		t.Fatalf("objects changed while the guard refused: %d before, %d after", len(before), len(after))
	} else {
		for name, ver := range before {
			if after[name] != ver {
				t.Errorf("%s changed while the guard refused", name)
			}
		}
	}
	refuse.Store(false)
	if err := v.Flush(ctx); err != nil {
		t.Fatalf("flush once the guard allows again: %v", err)
	}
	r, _ := Open(ctx, s, id, OpenOptions{})
	wantBytes(t, r, bs, fill(bs, 2), "block written before the refusal, flushed after")
	wantBytes(t, r, 2*bs, fill(bs, 0), "refused write")
}

// snapshotStore returns every object's version.
func snapshotStore(t *testing.T, s objstore.Store) map[string]objstore.Version {
	t.Helper()
	out := map[string]objstore.Version{}
	if err := s.List(ctx, "", func(in objstore.Info) error { out[in.Name] = in.Version; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNewEpoch: a writer that takes over with a new epoch copies blocks
// before writing them, so a late in-place write by the writer it replaced
// changes nothing it reads.
func TestNewEpoch(t *testing.T) {
	for name, s := range map[string]objstore.Store{"mem": objstore.NewMem(), "file": newFileStore(t)} {
		t.Run(name, func(t *testing.T) {
			old := NewTestVolume(t, s, 4*bs, SmallShift)
			old.WriteAt(ctx, fill(bs, 1), 0, true)
			oldEntry := old.Entries()[0]

			nv, err := Open(ctx, s, old.ID(), OpenOptions{Writable: true, NewEpoch: true})
			if err != nil {
				t.Fatal(err)
			}
			defer nv.Close(ctx)
			if got, want := nv.Head().Epoch, old.Head().Epoch+1; got != want {
				t.Fatalf("epoch after takeover %d, want %d", got, want)
			}
			nv.WriteAt(ctx, fill(10, 2), 0, true)
			if e := nv.Entries()[0]; e == oldEntry {
				t.Fatal("the new writer wrote the old writer's object in place")
			}
			// The stale writer is not fenced yet (it has not tried to
			// flush): its in-place write lands in its own old object only.
			old.WriteAt(ctx, fill(bs, 9), 0, false)
			want := fill(bs, 1)
			copy(want, fill(10, 2))
			wantBytes(t, nv, 0, want, "block 0 after a stale in-place write")
			r, _ := Open(ctx, s, old.ID(), OpenOptions{})
			wantBytes(t, r, 0, want, "block 0 reopened")
			if err := old.Flush(ctx); !errors.Is(err, ErrFenced) {
				t.Fatalf("stale writer's flush: %v", err)
			}
		})
	}
}

func newFileStore(t *testing.T) objstore.Store {
	s, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFollow: a following reader sees every flush of the writer at its
// next read, including trims, growth and segments that went away, and
// never needs reopening.
func TestFollow(t *testing.T) {
	s := objstore.NewMem()
	w := NewTestVolume(t, s, 4*bs, SmallShift)
	w.WriteAt(ctx, fill(bs, 1), 0, true)
	r, err := Open(ctx, s, w.ID(), OpenOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	wantBytes(t, r, 0, fill(bs, 1), "block 0")

	w.WriteAt(ctx, fill(bs, 2), 3*bs, true)
	wantBytes(t, r, 3*bs, fill(bs, 2), "block 3 after the writer's flush")
	w.Trim(ctx, 0, bs)
	w.Flush(ctx)
	wantBytes(t, r, 0, fill(bs, 0), "block 0 after a flushed trim")
	if err := w.Resize(ctx, 6*bs); err != nil {
		t.Fatal(err)
	}
	w.WriteAt(ctx, fill(bs, 3), 5*bs, true)
	wantBytes(t, r, 5*bs, fill(bs, 3), "block 5 after growth")
	ext, err := r.BlockStatus(ctx, 0, 6*bs)
	if err != nil || len(ext) != 4 || ext[0].Zero != true || ext[3].Zero != false {
		t.Fatalf("block status of the follower: %+v, %v", ext, err)
	}
	// Many segments' worth of blocks, rewritten: the follower reloads
	// only what changed and still reads everything right.
	big := NewTestVolume(t, s, 3*blockmap.SegmentEntries*uint64(bs), SmallShift)
	for i := int64(0); i < 3; i++ {
		big.WriteAt(ctx, fill(bs, byte(10+i)), i*blockmap.SegmentEntries*bs, false)
	}
	big.Flush(ctx)
	f, _ := Open(ctx, s, big.ID(), OpenOptions{Follow: true})
	defer f.Close(ctx)
	wantBytes(t, f, blockmap.SegmentEntries*bs, fill(bs, 11), "segment 1")
	big.WriteAt(ctx, fill(bs, 21), blockmap.SegmentEntries*bs, true)
	wantBytes(t, f, blockmap.SegmentEntries*bs, fill(bs, 21), "segment 1 rewritten")
	wantBytes(t, f, 2*blockmap.SegmentEntries*bs, fill(bs, 12), "segment 2 unchanged")

	// A plain read-only handle keeps the map it opened with.
	plain, _ := Open(ctx, s, w.ID(), OpenOptions{})
	w.WriteAt(ctx, fill(bs, 4), 0, true)
	wantBytes(t, plain, 0, fill(bs, 0), "block 0 through a non-following handle")
	wantBytes(t, r, 0, fill(bs, 4), "block 0 through the follower")

	if err := Remove(ctx, s, w.ID()); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadAt(ctx, make([]byte, 1), 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("reading a removed volume: %v", err)
	}
}

// TestDiscard: a discarded handle's unflushed writes never reach the map,
// and the release hook runs either way.
func TestDiscard(t *testing.T) {
	s := objstore.NewMem()
	id, _ := Create(ctx, s, CreateOptions{Size: 2 * bs, BlockShift: SmallShift})
	var closed []error
	onClose := func(_ context.Context, err error) error { closed = append(closed, err); return nil }
	v, err := Open(ctx, s, id, OpenOptions{Writable: true, OnClose: onClose})
	if err != nil {
		t.Fatal(err)
	}
	v.WriteAt(ctx, fill(bs, 1), 0, true)
	v.WriteAt(ctx, fill(bs, 2), bs, false)
	if err := v.Discard(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, fill(1, 1), 0, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after discard: %v", err)
	}
	r, _ := Open(ctx, s, id, OpenOptions{})
	wantBytes(t, r, 0, fill(bs, 1), "flushed block")
	wantBytes(t, r, bs, fill(bs, 0), "discarded block")
	v2, _ := Open(ctx, s, id, OpenOptions{Writable: true, OnClose: onClose})
	v2.Close(ctx)
	if len(closed) != 2 || closed[0] != nil || closed[1] != nil {
		t.Fatalf("close hook calls: %v", closed)
	}
}

// TestFollowConcurrent: readers of a follower share head checks, yet each
// read sees at least what the writer had flushed when the read began.
func TestFollowConcurrent(t *testing.T) {
	s := objstore.NewMem()
	w := NewTestVolume(t, s, 2*bs, SmallShift)
	w.WriteAt(ctx, []byte{0}, 0, true)
	r, err := Open(ctx, s, w.ID(), OpenOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	var flushed atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 1)
			for {
				select {
				case <-stop:
					return
				default:
				}
				want := flushed.Load()
				if err := r.ReadAt(ctx, p, 0); err != nil {
					t.Error(err)
					return
				}
				if int32(p[0]) < want {
					t.Errorf("read %d after the writer had flushed %d", p[0], want)
					return
				}
			}
		}()
	}
	for k := int32(1); k < 250; k++ {
		// Each round moves block 0 to a new object, so a stale map reads
		// an old value (or a deleted object).
		w.Trim(ctx, 0, bs)
		if err := w.WriteAt(ctx, []byte{byte(k)}, 0, true); err != nil {
			t.Fatal(err)
		}
		flushed.Store(k)
	}
	close(stop)
	wg.Wait()
}

// TestFollowShrink: a follower's reads near the end race the writer's
// shrinks and grows (another host's, in production): each read returns
// the data or ErrOutOfRange, never panics (issue 10 #8).
func TestFollowShrink(t *testing.T) {
	s := objstore.NewMem()
	const blocks = 8
	w := NewTestVolume(t, s, blocks*bs, SmallShift)
	r, err := Open(ctx, s, w.ID(), OpenOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads atomic.Int64
	for k := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 512)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := int64(blocks-1)*bs + int64(i%4)*512
				var err error
				switch k % 3 {
				case 0:
					err = r.ReadAt(ctx, p, off)
				case 1:
					err = r.ReadTo(ctx, off, int64(len(p)), func([][]byte) error { return nil })
				case 2:
					_, err = r.BlockStatus(ctx, off, int64(len(p)))
				}
				if err != nil && !errors.Is(err, ErrOutOfRange) {
					t.Error(err)
					return
				}
				reads.Add(1)
			}
		}()
	}
	for range 500 {
		for _, size := range []uint64{bs, blocks * bs} {
			if err := w.Resize(ctx, size); err != nil {
				t.Fatal(err)
			}
			// Let the readers run between changes.
			for n := reads.Load(); reads.Load() < n+8; {
				runtime.Gosched()
			}
		}
	}
	close(stop)
	wg.Wait()
}

// TestGuardDoesNotBlockReads: a guard that stalls (a lease renewal
// holding its lock across a slow store write) holds up only the write
// that asked it, never a concurrent read.
func TestGuardDoesNotBlockReads(t *testing.T) {
	s := objstore.NewMem()
	id, err := Create(ctx, s, CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	var stall atomic.Bool
	entered, release := make(chan struct{}, 1), make(chan struct{})
	guard := func() error {
		if stall.Load() {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
		}
		return nil
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true, Guard: guard})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	stall.Store(true)
	wrote := make(chan error, 1)
	go func() { wrote <- v.WriteAt(ctx, fill(bs, 1), 0, false) }()
	<-entered
	read := make(chan error, 1)
	go func() { read <- v.ReadAt(ctx, make([]byte, bs), 2*bs) }()
	select {
	case err := <-read:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // a deadlock detector, not a speed limit
		stall.Store(false)
		close(release)
		t.Fatal("a read waited for a write's stalled guard")
	}
	stall.Store(false)
	close(release)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotAfterTakeover (issue 10 #2): holder A writes block X in
// place; its next in-place write to X passes its lease check and stalls
// while B takes the volume over (a new epoch); B, or a clean writer after
// B, snapshots; then A's late write lands in X's object. The snapshot
// must still read what it held when taken, and so must the live volume.
func TestSnapshotAfterTakeover(t *testing.T) {
	for _, reopen := range []bool{false, true} {
		for name, s := range map[string]objstore.Store{"mem": objstore.NewMem(), "file": newFileStore(t)} {
			t.Run(fmt.Sprintf("%s/reopened=%v", name, reopen), func(t *testing.T) {
				a := NewTestVolume(t, s, 4*bs, SmallShift)
				a.WriteAt(ctx, fill(bs, 1), 0, true)
				a.WriteAt(ctx, fill(bs, 2), bs, true)

				b, err := Open(ctx, s, a.ID(), OpenOptions{Writable: true, NewEpoch: true})
				if err != nil {
					t.Fatal(err)
				}
				if h := b.Head(); h.Unsealed != a.Head().Epoch {
					t.Fatalf("head after the takeover: unsealed from %d, want %d", h.Unsealed, a.Head().Epoch)
				}
				b.WriteAt(ctx, fill(bs, 3), bs, false) // copied: no longer the zombie's
				if reopen {
					// A clean handover after the takeover: the record of
					// the unsealed epoch survives it.
					if err := b.Close(ctx); err != nil {
						t.Fatal(err)
					}
					if b, err = Open(ctx, s, a.ID(), OpenOptions{Writable: true}); err != nil {
						t.Fatal(err)
					}
				}
				defer b.Close(ctx)
				sid, err := b.Snapshot(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if h := b.Head(); h.Unsealed != 0 {
					t.Fatalf("head after the snapshot: unsealed from %d", h.Unsealed)
				}

				// A's stalled write lands (its guard was passed before
				// the stall).
				if err := a.WriteAt(ctx, fill(bs, 9), 0, false); err != nil {
					t.Fatal(err)
				}
				snap, err := Open(ctx, s, sid, OpenOptions{})
				if err != nil {
					t.Fatal(err)
				}
				want := append(fill(bs, 1), fill(bs, 3)...)
				wantBytes(t, snap, 0, want, "snapshot after the stale write")
				wantBytes(t, b, 0, want, "live volume after the snapshot and the stale write")
				r, _ := Open(ctx, s, a.ID(), OpenOptions{})
				wantBytes(t, r, 0, want, "volume reopened")

				// I6 once sealed: a snapshot stores no block.
				blocks := func() (n int) {
					s.List(ctx, "blk/", func(objstore.Info) error { n++; return nil })
					return n
				}
				before := blocks()
				b.WriteAt(ctx, fill(bs, 4), 2*bs, false)
				if _, err := b.Snapshot(ctx); err != nil {
					t.Fatal(err)
				}
				if n := blocks(); n != before {
					t.Fatalf("a snapshot without a takeover stored %d blocks", n-before)
				}
			})
		}
	}
}

// TestSealBesideWrites: sealing (by Seal or a snapshot) runs while
// writers write the blocks it seals; every block ends as its last write
// made it, each snapshot holds for each block one of the values written
// to it, and no map references an unsealed block afterwards.
func TestSealBesideWrites(t *testing.T) {
	const blocks = 24
	for _, how := range []string{"seal", "snapshot"} {
		t.Run(how, func(t *testing.T) {
			s := objstore.NewMem()
			a := NewTestVolume(t, s, blocks*bs, SmallShift)
			for b := 0; b < blocks; b++ {
				a.WriteAt(ctx, fill(bs, 1), int64(b)*bs, false)
			}
			a.Flush(ctx)
			v, err := Open(ctx, s, a.ID(), OpenOptions{Writable: true, NewEpoch: true})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close(ctx)
			var wg sync.WaitGroup
			last := make([]byte, blocks)
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := byte(2); k < 6; k++ {
						for b := w; b < blocks; b += 4 {
							if err := v.WriteAt(ctx, fill(bs/2, k), int64(b)*bs, false); err != nil {
								t.Error(err)
								return
							}
							last[b] = k
						}
					}
				}()
			}
			var sid blockmap.ID
			if how == "seal" {
				err = v.Seal(ctx)
			} else {
				sid, err = v.Snapshot(ctx)
			}
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			h := v.Head()
			if h.Unsealed != 0 {
				t.Fatalf("unsealed from %d after %s", h.Unsealed, how)
			}
			check := func(r *Volume, what string, any bool) {
				got := mustRead(t, r, 0, blocks*bs)
				for b := 0; b < blocks; b++ {
					blk := got[b*bs : (b+1)*bs]
					if !bytes.Equal(blk[bs/2:], fill(bs/2, 1)) || (!any && blk[0] != last[b]) || blk[0] < 1 || blk[0] > 5 ||
						!bytes.Equal(blk[:bs/2], fill(bs/2, blk[0])) {
						t.Fatalf("%s: block %d reads %x...%x", what, b, blk[:4], blk[bs-4:])
					}
				}
				for b, e := range r.Entries() {
					if e.IsPrivate() && e.Epoch() <= a.Head().Epoch || e.Base().Kind() == blockmap.Private && e.Base().Epoch() <= a.Head().Epoch {
						t.Fatalf("%s: block %d is still the old writer's %v", what, b, e)
					}
				}
			}
			check(v, "live volume", false)
			if how == "snapshot" {
				snap, err := Open(ctx, s, sid, OpenOptions{})
				if err != nil {
					t.Fatal(err)
				}
				check(snap, "snapshot", true)
			}
		})
	}
}

// TestInPlaceFlushAfterTakeover: a flush (or a FUA write) that changed
// no map entry writes no head, but still finds out that another writer
// took the volume over, and does not report a write durable that went in
// place into an object the new writer has copied and dropped.
func TestInPlaceFlushAfterTakeover(t *testing.T) {
	for _, fua := range []bool{false, true} {
		t.Run(fmt.Sprintf("fua=%v", fua), func(t *testing.T) {
			ctx := context.Background()
			s := objstore.NewMem()
			id, err := Create(ctx, s, CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
			if err != nil {
				t.Fatal(err)
			}
			a, err := Open(ctx, s, id, OpenOptions{Writable: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.WriteAt(ctx, []byte("first"), 0, true); err != nil {
				t.Fatal(err)
			}
			_, headVer, _ := ReadHead(ctx, s, id)
			if err := a.WriteAt(ctx, []byte("again"), 0, fua); err != nil {
				t.Fatal(err)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if _, ver, _ := ReadHead(ctx, s, id); ver != headVer {
				t.Fatalf("an in-place write and flush wrote the head (version %d, was %d)", ver, headVer)
			}
			b, err := Open(ctx, s, id, OpenOptions{Writable: true, NewEpoch: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.WriteAt(ctx, []byte("b"), 100, true); err != nil { // copies block 0
				t.Fatal(err)
			}
			err = a.WriteAt(ctx, []byte("late!"), 0, fua)
			if err == nil && !fua {
				err = a.Flush(ctx)
			}
			if !errors.Is(err, ErrFenced) {
				t.Fatalf("a's write after b took over: %v, want ErrFenced", err)
			}
			got := make([]byte, 5)
			if err := b.ReadAt(ctx, got, 0); err != nil || string(got) != "again" {
				t.Fatalf("b reads %q, %v", got, err)
			}
		})
	}
}

// setMaxDelta lowers the head delta's limit for a test; the returned
// function puts it back.
// setLog turns the write log on or off for writers that do not say.
func setLog(on bool) func() {
	old := logDefault
	logDefault = on
	return func() { logDefault = old }
}

// setLogBound sets how large a write log grows before a checkpoint.
func setLogBound(n int64) func() {
	old := logBound
	logBound = n
	return func() { logBound = old }
}

func setMaxDelta(n int) func() {
	old := maxDelta
	maxDelta = n
	return func() { maxDelta = old }
}

// TestFlushDelta: a flush that changes a few entries writes only the
// head, with the entries in its delta; past the limit a flush writes
// segments and empties the delta (a checkpoint); a follower, a reopen
// and a clone of a snapshot read every flushed byte either way.
func TestFlushDelta(t *testing.T) {
	defer setMaxDelta(3)()
	s := objstore.NewMem()
	f := objstore.NewFaulty(s)
	var segs atomic.Int64
	f.Add(objstore.Rule{Op: objstore.OpCreate, Prefix: "vol/", Hook: func(_ context.Context, _ objstore.Op, name string) {
		if strings.Contains(name, "/s/") {
			segs.Add(1)
		}
	}})
	v := NewTestVolume(t, f, 16*bs, SmallShift)
	follower, err := Open(ctx, f, v.ID(), OpenOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close(ctx)
	want := make([]byte, 16*bs)
	write := func(b int64, c byte) {
		t.Helper()
		copy(want[b*bs:], fill(100, c))
		if err := v.WriteAt(ctx, fill(100, c), b*bs, false); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string) {
		t.Helper()
		for _, h := range []*Volume{v, follower} {
			wantBytes(t, h, 0, want, what)
		}
		r, err := Open(ctx, s, v.ID(), OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantBytes(t, r, 0, want, what+", reopened")
		r.Close(ctx)
	}
	write(0, 1)
	write(1, 2)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := ReadHead(ctx, s, v.ID()); segs.Load() != 0 || len(h.Delta) != 2 {
		t.Fatalf("a flush of 2 new blocks wrote %d segments, head delta %v", segs.Load(), h.Delta)
	}
	check("after a delta flush")
	write(1, 3) // in place: no map change
	write(2, 4)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := ReadHead(ctx, s, v.ID()); segs.Load() != 0 || len(h.Delta) != 3 {
		t.Fatalf("a second delta flush wrote %d segments, head delta %v", segs.Load(), h.Delta)
	}
	check("after a second delta flush")
	write(5, 5) // a fourth entry: past the limit
	if err := v.Trim(ctx, 0, bs); err != nil {
		t.Fatal(err)
	}
	clear(want[:bs])
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := ReadHead(ctx, s, v.ID()); segs.Load() != 1 || len(h.Delta) != 0 {
		t.Fatalf("a flush past the delta's limit wrote %d segments, head delta %v", segs.Load(), h.Delta)
	}
	check("after a checkpoint")
	write(7, 6)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := v.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := Clone(ctx, s, snap, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(ctx, s, cl, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	wantBytes(t, c, 0, want, "a clone of a snapshot taken with a delta")
	check("after the snapshot")
}

// setLogBurst sets how many bytes of writes without a flush a writer logs.
func setLogBurst(n int64) func() {
	old := logBurst
	logBurst = n
	return func() { logBurst = old }
}
