package volume

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"fmt"
	"github.com/archipelago-go/archip/internal/blockmap"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// segStore hides every optional capability of the store it wraps but a
// fresh Stat: a store without in-place writes whose Stat is a HEAD (S3),
// where the write log is stored as segments.
type segStore struct{ objstore.Store }

func (segStore) FreshStat() bool { return true }

func wrapSeg(s objstore.Store) objstore.Store { return segStore{s} }

// setSegMax sets how many bytes a segmented log buffers before it writes
// a segment without a commit.
func setSegMax(n int) func() {
	old := segMax
	segMax = n
	return func() { segMax = old }
}

// setSegCount sets how many segments a segmented log holds before a
// flush checkpoints it.
func setSegCount(n int) func() {
	old := segCount
	segCount = n
	return func() { segCount = old }
}

// TestModelSegLog (issue 13): the volume model on a store without
// in-place writes, with the segmented write log: segments written at
// flushes and past a few records, checkpoints putting whole blocks.
func TestModelSegLog(t *testing.T) {
	for seed := uint64(1); seed <= seeds(12); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if seed%3 == 0 {
				defer setLogBurst(8 << 10)()
			}
			defer setSegMax([]int{64, 1 << 10, 1 << 20}[seed%3])()
			defer setSegCount([]int{3, 1024}[seed%2])()
			// Checkpoints store a write log index, or past a small cap
			// materialize it.
			defer setIdxMaxExts([]int{1 << 19, 16, 1 << 19, 64}[seed%4])()
			m := runModel(t, segStore{objstore.NewMem()}, seed, 300, nil, false)
			if m.logged == 0 && !t.Failed() {
				t.Fatal("no logged write was seen")
			}
		})
	}
}

// TestModelSegLogStalls is TestModelStalls on the segmented log: stale
// writers whose writes and flushes land late.
func TestModelSegLogStalls(t *testing.T) {
	for seed := uint64(1); seed <= seeds(12); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			defer setSegMax([]int{64, 1 << 10, 1 << 20}[seed%3])()
			defer setSegCount([]int{3, 1024}[seed%2])()
			defer setIdxMaxExts([]int{1 << 19, 16, 1 << 19, 64}[seed%4])()
			runModel(t, segStore{objstore.NewMem()}, seed, 300, nil, true)
		})
	}
}

// TestModelSegLogCrash is TestModelCrash (and with stalls,
// TestModelCrashStalls) on the segmented log: crash images before each
// segment create, head swap and head check.
func TestModelSegLogCrash(t *testing.T) {
	for seed := uint64(1); seed <= seeds(12); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if seed%2 == 0 {
				defer setMaxDelta(2)()
			}
			if seed%3 == 0 {
				defer setLogBurst(8 << 10)()
			}
			defer setSegMax([]int{64, 1 << 10, 1 << 20}[seed%3])()
			defer setSegCount([]int{1024, 3, 1024, 1024, 3}[seed%5])()
			defer setIdxMaxExts([]int{1 << 19, 16, 1 << 19, 64}[seed%4])()
			mem := objstore.NewCrashable()
			cp := &crashPoints{Store: mem, mem: mem}
			m := runModelWith(t, &model{wrap: wrapSeg}, segStore{cp}, seed, 300, cp, seed%4 == 1)
			if cp.images == 0 && !t.Failed() {
				t.Fatalf("no crash image was taken inside an operation (%d steps)", len(m.vols))
			}
			if m.logged == 0 && !t.Failed() {
				t.Fatal("no logged write was seen")
			}
		})
	}
}

// TestModelSegLogFollow: the model with followers on the segmented log
// (a follower tails the chain of segments).
func TestModelSegLogFollow(t *testing.T) {
	n := seeds(4)
	if testing.Short() {
		n = 1 // (the race detector's run: followers read all the time, 200 s for 2 seeds)
	}
	for seed := uint64(1); seed <= n; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			defer setSegMax([]int{64, 1 << 10, 1 << 20}[seed%3])()
			defer setSegCount([]int{3, 1024}[seed%2])()
			mem := objstore.NewCrashable()
			cp := &crashPoints{Store: mem, mem: mem}
			runModelWith(t, &model{follow: true, wrap: wrapSeg}, segStore{cp}, seed+50, 300, cp, false)
		})
	}
}

// opStore counts a store's operations and the bytes written, offers no
// capability but a fresh Stat (segStore), and runs onCreate, if set,
// instead of each Create.
type opStore struct {
	objstore.Store
	mu       sync.Mutex
	ops      map[string]int
	written  int64
	onCreate func(name string, data []byte) (objstore.Version, error)
}

func newOpStore() *opStore { return &opStore{Store: objstore.NewMem(), ops: map[string]int{}} }

func (s *opStore) FreshStat() bool { return true }

func (s *opStore) note(op string, n int) {
	s.mu.Lock()
	s.ops[op]++
	s.written += int64(n)
	s.mu.Unlock()
}

// take returns the counts since the last take, and resets them.
func (s *opStore) take() (map[string]int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ops, n := s.ops, s.written
	s.ops, s.written = map[string]int{}, 0
	return ops, n
}

func (s *opStore) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	s.note("put", len(data))
	return s.Store.Put(ctx, name, data)
}

func (s *opStore) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	s.note("create", len(data))
	s.mu.Lock()
	f := s.onCreate
	s.mu.Unlock()
	if f != nil {
		return f(name, data)
	}
	return s.Store.Create(ctx, name, data)
}

func (s *opStore) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	s.note("swap", len(data))
	return s.Store.Swap(ctx, name, data, old)
}

func (s *opStore) Stat(ctx context.Context, name string) (objstore.Info, error) {
	s.note("stat", 0)
	return s.Store.Stat(ctx, name)
}

// ReadAt counts "read log" for a log segment, "read" for anything else.
func (s *opStore) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if blockmap.ParseName(name).Kind == blockmap.LogObject {
		s.note("read log", 0)
	} else {
		s.note("read", 0)
	}
	return s.Store.ReadAt(ctx, name, p, off)
}

func (s *opStore) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	s.note("get", 0)
	return s.Store.Get(ctx, name)
}

// fenceObject reports whether the object name in s is a taker's fence
// (left for the collector: see fenceChain).
func fenceObject(t *testing.T, s objstore.Store, name string) bool {
	t.Helper()
	b, _, err := s.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return isFence(b)
}

// segments lists the segments of write logs in s (fences aside).
func segments(t *testing.T, s objstore.Store) []string {
	t.Helper()
	var names []string
	err := s.List(context.Background(), "vol/", func(in objstore.Info) error {
		if n := blockmap.ParseName(in.Name); n.Kind == blockmap.LogObject && n.Log != in.Name && !fenceObject(t, s, in.Name) {
			names = append(names, in.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// newSegVolume creates a volume of blocks blocks on s, every block
// written (whole blocks take the map path), and opens it logging.
func newSegVolume(t *testing.T, s objstore.Store, blocks int) (blockmap.ID, *Volume) {
	t.Helper()
	ctx := context.Background()
	id, err := Create(ctx, s, CreateOptions{Size: uint64(blocks * bs), BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	v := openLogged(t, s, id, OpenOptions{})
	for b := range blocks {
		if err := v.WriteAt(ctx, pattern(bs, 1), int64(b*bs), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return id, v
}

// takeOver opens volume id on s as the writer after one that died (a new
// epoch), checks that it reads want (every flushed byte), and returns it
// for the caller to close.
func takeOver(t *testing.T, s objstore.Store, id blockmap.ID, want []byte) *Volume {
	t.Helper()
	taker, err := Open(context.Background(), s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, taker); !bytes.Equal(got, want) {
		t.Fatal("the taker reads other bytes than were flushed")
	}
	return taker
}

func readAll(t *testing.T, v *Volume) []byte {
	t.Helper()
	got := make([]byte, v.Size())
	if err := v.ReadAt(context.Background(), got, 0); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestSegLogFlushOneCreate (issue 13): on a store without in-place
// writes, a flush after small writes to owned blocks is one segment
// create: no block put, no head swap, and no head stat (a taker fences
// the chain instead; see fenceChain). Only once the writer's last look
// at the head is older than MaxUnflushedAge does a flush check it again
// (a fence lives at least the collector's grace). (Before the segmented
// log, each flush put every written block and swapped the head; before
// the fence, it also made a HEAD.)
func TestSegLogFlushOneCreate(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	_, v := newSegVolume(t, s, 4)
	now := time.Now()
	v.now = func() time.Time { return now }
	want := readAll(t, v)
	s.take()
	for i := range 5 {
		if i == 3 {
			// (Before the writes: data older than that is checkpointed.)
			now = now.Add(MaxUnflushedAge + time.Second)
		}
		for k := range 3 {
			off := int64(k*bs + i*4096 + 512)
			if err := v.WriteAt(ctx, pattern(4096, byte(10+i)), off, false); err != nil {
				t.Fatal(err)
			}
			copy(want[off:], pattern(4096, byte(10+i)))
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		ops, _ := s.take()
		if i == 3 {
			if ops["create"] != 1 || ops["stat"] != 1 || len(ops) != 2 {
				t.Fatalf("flush %d, long after the last head check: store operations %v, want one create and one stat", i, ops)
			}
			continue
		}
		if ops["create"] != 1 || len(ops) != 1 {
			t.Fatalf("flush %d: store operations %v, want one create", i, ops)
		}
	}
	if got := readAll(t, v); !bytes.Equal(got, want) {
		t.Fatal("the writer reads other bytes than it wrote")
	}
	if n := len(segments(t, s)); n != 5 {
		t.Fatalf("%d segments, want 5", n)
	}
}

// TestSegLogReplayAcrossSegments: a writer that dies after flushes whose
// records span many segments (some without a commit) is replayed by the
// next writer, segment by segment; records after the last commit are
// dropped.
func TestSegLogReplayAcrossSegments(t *testing.T) {
	defer setSegMax(3000)()
	ctx := context.Background()
	s := newOpStore()
	id, v := newSegVolume(t, s, 4)
	want := readAll(t, v)
	for i := range 40 {
		off := int64((i*7919)%(4*bs-1000)) &^ 511
		p := pattern(1000, byte(i+2))
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
		if i%13 == 12 {
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Unflushed, past a segment bound: a segment without a commit.
	for i := range 4 {
		if err := v.WriteAt(ctx, pattern(1000, 0xee), int64(i*1000), false); err != nil {
			t.Fatal(err)
		}
	}
	segs := segments(t, s)
	if len(segs) < 10 {
		t.Fatalf("%d segments, want many", len(segs))
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); !bytes.Equal(got, want) {
		t.Fatal("a reader of the head reads other bytes than were flushed")
	}
	// The writer dies; the next one replays, checkpoints (stores the
	// write log index) and deletes the old log's segments the index does
	// not reference once its head is stored.
	taker := takeOver(t, s, id, want)
	refs := indexSegs(t, s, id)
	for _, name := range segments(t, s) {
		if !refs[name] {
			t.Fatalf("segment %s left after the takeover, not in the index", name)
		}
	}
	if err := taker.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSegLogUnknownOutcome: a segment create that timed out may have
// happened. Tried again: if it landed, the retry finds the same bytes
// and the flush succeeds; if it did not, the retry writes it; if other
// bytes are there, the flush fails and the next one checkpoints through
// the map, losing nothing.
func TestSegLogUnknownOutcome(t *testing.T) {
	for _, mode := range []string{"landed", "lost", "differs"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			s := newOpStore()
			id, v := newSegVolume(t, s, 2)
			want := readAll(t, v)
			tries := 0
			s.onCreate = func(name string, data []byte) (objstore.Version, error) {
				tries++
				if tries == 1 {
					switch mode {
					case "landed":
						s.Store.Create(ctx, name, data)
					case "differs":
						s.Store.Create(ctx, name, append(slices.Clone(data), 1))
						return 0, objstore.ErrTimeout
					}
					return 0, objstore.ErrTimeout
				}
				return s.Store.Create(ctx, name, data)
			}
			if err := v.WriteAt(ctx, pattern(4096, 3), 100, false); err != nil {
				t.Fatal(err)
			}
			copy(want[100:], pattern(4096, 3))
			err := v.Flush(ctx)
			s.onCreate = nil
			if mode == "differs" {
				if !errors.Is(err, errSegDiffers) {
					t.Fatalf("flush: %v, want errSegDiffers", err)
				}
				if err := v.Flush(ctx); err != nil {
					t.Fatalf("the flush after: %v", err)
				}
			} else if err != nil {
				t.Fatalf("flush: %v", err)
			}
			r, err := Open(ctx, s, id, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, r); !bytes.Equal(got, want) {
				t.Fatal("a reader of the head reads other bytes than were flushed")
			}
		})
	}
}

// TestSegLogTakeoverWhileFlushing: a writer stalls inside a flush, its
// segment create in flight, while another takes the volume over and
// reads the log; the segment lands after that read, and the stale
// writer's head check fails: the flush is not acknowledged, and nothing
// of it shows.
func TestSegLogTakeoverWhileFlushing(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	id, old := newSegVolume(t, s, 3)
	if err := old.WriteAt(ctx, pattern(4096, 7), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := old.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var taker *Volume
	s.onCreate = func(name string, data []byte) (objstore.Version, error) {
		s.onCreate = nil
		var err error
		taker, err = Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
		if err != nil {
			t.Error(err)
		}
		return s.Store.Create(ctx, name, data)
	}
	if err := old.WriteAt(ctx, pattern(4096, 9), int64(bs), false); err != nil {
		t.Fatal(err)
	}
	if err := old.Flush(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("the stale writer's flush: %v, want ErrFenced", err)
	}
	if taker == nil {
		t.Fatal("no takeover")
	}
	got := readAll(t, taker)
	if got[0] != 7 || got[bs] != 1 {
		t.Fatalf("taker reads %d at 0 (want 7, flushed) and %d in block 1 (want 1: the stale flush failed)", got[0], got[bs])
	}
	if err := taker.WriteAt(ctx, pattern(10, 5), int64(2*bs), false); err != nil {
		t.Fatal(err)
	}
	if err := taker.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); got[0] != 7 || got[bs] != 1 || got[2*bs] != 5 {
		t.Fatalf("after the taker closed: %d %d %d, want 7 1 5", got[0], got[bs], got[2*bs])
	}
}

// TestSegLogFollowerTails: a follower sees each flush of the writer
// through the chain of segments, also across segments without a commit
// and across a checkpoint.
func TestSegLogFollowerTails(t *testing.T) {
	defer setSegMax(5000)()
	ctx := context.Background()
	s := newOpStore()
	id, v := newSegVolume(t, s, 3)
	want := readAll(t, v)
	f, err := Open(ctx, s, id, OpenOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		off := int64((i*4099)%(3*bs-2000)) &^ 511
		p := pattern(2000, byte(i+2))
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
		if i%4 == 3 {
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, f); !bytes.Equal(got, want) {
				t.Fatalf("after flush %d the follower reads other bytes", i/4)
			}
		}
		if i == 15 {
			if err := v.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f); !bytes.Equal(got, want) {
		t.Fatal("after close the follower reads other bytes")
	}
	// (Close stores the write log index: only the segments it
	// references stay.)
	refs := indexSegs(t, s, id)
	for _, name := range segments(t, s) {
		if !refs[name] {
			t.Fatalf("segment %s left after close, not in the index (%v)", name, refs)
		}
	}
}

// TestSegLogAmplification logs what the segmented log writes to a store
// without in-place writes for 4 KiB random writes with a flush every 32,
// over 64 MiB of 4 MiB blocks (written whole first): bytes written to the
// store per byte written, and PUTs per flush; then the same with the
// checkpoint Close makes. A log line, not a timed assertion; it fails only
// if a flush is more than one PUT.
func TestSegLogAmplification(t *testing.T) {
	const (
		shift  = 22
		blocks = 16
		writes = 4096
		w      = 4096
	)
	ctx := context.Background()
	s := newOpStore()
	id, err := Create(ctx, s, CreateOptions{Size: blocks << shift, BlockShift: shift})
	if err != nil {
		t.Fatal(err)
	}
	v := openLogged(t, s, id, OpenOptions{})
	for b := range blocks {
		if err := v.WriteAt(ctx, pattern(1<<shift, 1), int64(b)<<shift, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.take()
	rng := rand.New(rand.NewPCG(13, 13))
	p := pattern(w, 7)
	flushes := 0
	for i := 1; i <= writes; i++ {
		off := rng.Int64N(blocks<<shift/w) * w
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		if i%32 == 0 {
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			flushes++
		}
	}
	ops, n := s.take()
	puts := ops["create"] + ops["put"] + ops["swap"]
	t.Logf("4 KiB random writes, a flush every 32, %d writes over %d MiB: %.3f bytes written per byte, %.2f PUTs and %.2f HEADs per flush",
		writes, blocks<<shift>>20, float64(n)/float64(writes*w), float64(puts)/float64(flushes), float64(ops["stat"])/float64(flushes))
	if puts != flushes {
		t.Errorf("%d PUTs for %d flushes (%v)", puts, flushes, ops)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ops2, n2 := s.take()
	t.Logf("with the checkpoint at Close (%d block PUTs): %.3f bytes written per byte", ops2["put"], float64(n+n2)/float64(writes*w))
}

// TestSegLogRemoveDeletesSegments: removing a volume whose head names a
// segmented log deletes its segments.
func TestSegLogRemoveDeletesSegments(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	id, v := newSegVolume(t, s, 2)
	if err := v.WriteAt(ctx, pattern(100, 3), 10, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(segments(t, s)) == 0 {
		t.Fatal("no segment")
	}
	if err := Remove(ctx, s, id); err != nil {
		t.Fatal(err)
	}
	if left := segments(t, s); len(left) != 0 {
		t.Fatalf("segments left after remove: %v", left)
	}
}

// TestSegLogCheckpointReadsBlockOnce: a checkpoint on a segmented log
// reads each block it rewrites in one request, then its logged ranges,
// not a request per gap between them (a block random 4 KiB writes touched
// N times cost 2N requests; it failed with 17 block reads for 16 ranges).
//
// (A checkpoint that materializes: the write log index capped at none.)
func TestSegLogCheckpointReadsBlockOnce(t *testing.T) {
	defer setIdxMaxExts(0)()
	ctx := context.Background()
	s := newOpStore()
	_, v := newSegVolume(t, s, 1)
	want := readAll(t, v)
	for i := range 16 {
		off := int64(i*(bs/16) + 512)
		if err := v.WriteAt(ctx, pattern(1024, byte(20+i)), off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], pattern(1024, byte(20+i)))
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.take()
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ops, _ := s.take()
	if ops["read"] != 1 || ops["put"] != 1 {
		t.Fatalf("checkpoint at close: store operations %v, want one block read and one put", ops)
	}
	v = openLogged(t, s, v.ID(), OpenOptions{})
	defer v.Close(ctx)
	if got := readAll(t, v); !bytes.Equal(got, want) {
		t.Fatal("the checkpointed block reads other bytes than were written")
	}
}

// TestSegLogBurstStaysInLog: on a segmented log, small writes that no
// flush follows stay in the log past the burst (where a store with
// in-place writes takes the map path): the map path would put a whole
// block per write, and the burst's background checkpoint a whole block
// per block touched (it failed with 53 block puts for 512 KiB of 4 KiB
// writes over 4 blocks). A flush after them is one create and one stat.
func TestSegLogBurstStaysInLog(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	_, v := newSegVolume(t, s, 4)
	defer v.Close(ctx)
	want := readAll(t, v)
	s.take()
	n := 2 * logBurst / 4096
	for i := range n {
		off := int64((i*7919)%(4*bs/4096)) * 4096
		p := pattern(4096, byte(30+i))
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	v.waitKick()
	if ops, _ := s.take(); ops["put"] != 0 {
		t.Fatalf("%d writes of 4 KiB without a flush: store operations %v, want no block put", n, ops)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if ops, _ := s.take(); ops["create"] != 1 || len(ops) != 1 {
		t.Fatalf("flush: store operations %v, want one create", ops)
	}
	if got := readAll(t, v); !bytes.Equal(got, want) {
		t.Fatal("the writer reads other bytes than it wrote")
	}
}
