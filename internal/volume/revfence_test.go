package volume

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// fencesIn lists the fences in s.
// wantFencedFlush writes p at off through v, which must succeed, and
// flushes, which must fail with ErrFenced (what names the flush).
func wantFencedFlush(t *testing.T, v *Volume, p []byte, off int64, what string) {
	t.Helper()
	if err := v.WriteAt(context.Background(), p, off, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(context.Background()); !errors.Is(err, ErrFenced) {
		t.Fatalf("%s: %v, want ErrFenced", what, err)
	}
}

func fencesIn(t *testing.T, s objstore.Store) []string {
	t.Helper()
	var names []string
	err := s.List(context.Background(), "vol/", func(in objstore.Info) error {
		if n := blockmap.ParseName(in.Name); n.Kind == blockmap.LogObject && n.Log != in.Name && fenceObject(t, s, in.Name) {
			names = append(names, in.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestFenceTwoTakersBeforeWake (issue 13 review): A is taken over by B,
// which writes and flushes, then B by C, all before A wakes: A's late
// write and flush fail (ErrFenced), C holds B's flush and none of A's.
func TestFenceTwoTakersBeforeWake(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	id, a := newSegVolume(t, s, 3)
	if err := a.WriteAt(ctx, pattern(4096, 7), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WriteAt(ctx, pattern(4096, 8), int64(bs), false); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	wantFencedFlush(t, a, pattern(4096, 9), 2*int64(bs), "A's flush after two takeovers")
	wantFencedFlush(t, b, pattern(4096, 10), 2*int64(bs), "B's flush after C took over")
	if got := readAll(t, c); got[0] != 7 || got[bs] != 8 || got[2*bs] != 1 {
		t.Fatalf("C reads %d %d %d, want 7 8 1", got[0], got[bs], got[2*bs])
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestFenceTakerDiesBeforeFence (issue 13 review): B swaps its head in
// and fails before its fence lands (its create refused); A's flush in
// between succeeds (its chain is still named by the head), C fences
// and holds it; A's next flush fails.
func TestFenceTakerDiesBeforeFence(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	id, a := newSegVolume(t, s, 3)
	if err := a.WriteAt(ctx, pattern(4096, 7), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.onCreate = func(name string, data []byte) (objstore.Version, error) {
		if isFence(data) {
			return 0, objstore.ErrNoSpace
		}
		return s.Store.Create(ctx, name, data)
	}
	if _, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true}); err == nil {
		t.Fatal("B opened without its fence")
	}
	s.onCreate = nil
	if err := a.WriteAt(ctx, pattern(4096, 9), int64(bs), false); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatalf("A's flush, its chain still named and unfenced: %v", err)
	}
	c, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c); got[0] != 7 || got[bs] != 9 {
		t.Fatalf("C reads %d %d, want 7 9 (both flushed)", got[0], got[bs])
	}
	wantFencedFlush(t, a, pattern(4096, 11), 2*int64(bs), "A's flush after C")
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestFenceEmptyChain (issue 13 review): the old writer never wrote a
// segment (its chain is empty): the taker fences at From, and the old
// writer's first flush fails.
func TestFenceEmptyChain(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	id, a := newSegVolume(t, s, 3)
	b, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(fencesIn(t, s)) == 0 {
		t.Fatal("no fence on an empty chain")
	}
	wantFencedFlush(t, a, pattern(4096, 9), int64(bs), "A's flush")
	if got := readAll(t, b); got[bs] != 1 {
		t.Fatalf("B reads %d, want 1", got[bs])
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestFenceCollectedOldWriterChecks (issue 13 review): the collector
// deletes the taker's fence past its grace while the old writer is
// stalled; the old writer's flush then checks the head and fails.
func TestFenceCollectedOldWriterChecks(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	id, a := newSegVolume(t, s, 3)
	now := time.Now()
	a.now = func() time.Time { return now }
	if err := a.WriteAt(ctx, pattern(4096, 7), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	fences := fencesIn(t, s)
	if len(fences) == 0 {
		t.Fatal("no fence")
	}
	now = now.Add(MaxUnflushedAge + 5*time.Minute + time.Second) // (the collector's MinGrace)
	for _, f := range fences {
		if err := s.Store.Delete(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	wantFencedFlush(t, a, pattern(4096, 9), int64(bs), "A's flush after its fence was collected")
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestFenceCorruptSegmentMidChain (issue 13 review): a segment in the
// old writer's chain that does not parse, followed by another: the
// taker's replay stops at it (as before the fence) and its open must
// end (fenced, or failed), not loop on the name it finds taken.
func TestFenceCorruptSegmentMidChain(t *testing.T) {
	defer setSegMax(64)()
	ctx := context.Background()
	s := newOpStore()
	id, a := newSegVolume(t, s, 3)
	for i := range 4 {
		if err := a.WriteAt(ctx, pattern(512, byte(7+i)), int64(i*512), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	segs := segments(t, s)
	if len(segs) < 3 {
		t.Fatalf("segments %v, want 3 or more", segs)
	}
	first := blockmap.LogSegmentName(id, a.Head().Logs[0].Epoch, a.Head().Logs[0].Seq, int64(a.Head().Logs[0].From))
	if !slices.Contains(segs, first) {
		t.Fatalf("no segment %s in %v", first, segs)
	}
	end := int64(a.Head().Logs[0].From)
	for _, n := range segs {
		b, _, err := s.Store.Get(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		end += int64(len(b))
	}
	segs[0] = first
	data, _, err := s.Store.Get(ctx, segs[0])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 0xff // (its CRC fails)
	if _, err := s.Store.Put(ctx, segs[0], data); err != nil {
		t.Fatal(err)
	}
	octx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	calls := 0
	s.onCreate = func(name string, data []byte) (objstore.Version, error) {
		if isFence(data) {
			calls++
			if calls > 100 {
				cancel()
				return 0, context.Canceled
			}
		}
		return s.Store.Create(ctx, name, data)
	}
	b, err := Open(octx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if calls > 100 {
		t.Fatalf("the taker tried its fence %d times (a loop)", calls)
	}
	if err != nil {
		t.Fatalf("the taker's open: %v", err)
	}
	if f := fencesIn(t, s); len(f) != 1 || !strings.HasSuffix(f[0], "/"+strconv.FormatInt(end, 16)) {
		t.Fatalf("fences %v, want one at the chain's end (%d)", f, end)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestFenceCreateUnknownOutcome (issue 13 review): the taker's fence
// create times out, having landed or not, and the old writer's segment
// lands between the taker's tries: the taker's retry ends on its own
// fence, or reads the old writer's segment and fences past it; either
// way the old writer's flush reports what the taker holds.
func TestFenceCreateUnknownOutcome(t *testing.T) {
	for _, mode := range []string{"landed", "lost, old lands"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			s := newOpStore()
			id, a := newSegVolume(t, s, 3)
			if err := a.WriteAt(ctx, pattern(4096, 7), 0, false); err != nil {
				t.Fatal(err)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := a.WriteAt(ctx, pattern(4096, 9), int64(bs), false); err != nil {
				t.Fatal(err)
			}
			var oldErr error
			tries := 0
			s.onCreate = func(name string, data []byte) (objstore.Version, error) {
				if !isFence(data) {
					return s.Store.Create(ctx, name, data)
				}
				tries++
				if tries == 1 {
					if mode == "landed" {
						s.Store.Create(ctx, name, data)
					} else {
						s.onCreate = nil
						oldErr = a.Flush(ctx) // (its segment lands at the fence's name)
						s.onCreate = nil
					}
					return 0, objstore.ErrTimeout
				}
				return s.Store.Create(ctx, name, data)
			}
			b, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
			if err != nil {
				t.Fatal(err)
			}
			s.onCreate = nil
			if mode == "landed" {
				oldErr = a.Flush(ctx)
				if !errors.Is(oldErr, ErrFenced) {
					t.Fatalf("A's flush: %v, want ErrFenced", oldErr)
				}
			} else if oldErr != nil {
				t.Fatalf("A's flush, landed before the fence: %v", oldErr)
			}
			want := byte(1)
			if oldErr == nil {
				want = 9
			}
			if got := readAll(t, b); got[0] != 7 || got[bs] != want {
				t.Fatalf("B reads %d %d, want 7 %d", got[0], got[bs], want)
			}
			if f := fencesIn(t, s); len(f) != 1 {
				t.Fatalf("fences %v, want one", f)
			}
			if err := a.WriteAt(ctx, pattern(4096, 11), 2*int64(bs), false); err != nil && !errors.Is(err, ErrFenced) {
				t.Fatal(err)
			}
			if err := a.Flush(ctx); !errors.Is(err, ErrFenced) {
				t.Fatalf("A's next flush: %v, want ErrFenced", err)
			}
			if err := b.Close(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFenceAfterCheckpointMovedFrom (issue 13 review): the old writer
// checkpointed (From moved, its segments before it deleted), then wrote
// a segment past From without a commit (segMax) and one with: the taker
// replays from From and fences where the next would go.
func TestFenceAfterCheckpointMovedFrom(t *testing.T) {
	defer setSegMax(3000)()
	ctx := context.Background()
	s := newOpStore()
	id, a := newSegVolume(t, s, 3)
	if err := a.WriteAt(ctx, pattern(4096, 7), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Head().Logs[0].From == 0 {
		t.Fatal("From did not move")
	}
	if err := a.WriteAt(ctx, pattern(4096, 8), int64(bs), false); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteAt(ctx, pattern(1024, 9), 2*int64(bs), false); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, b); got[0] != 7 || got[bs] != 8 || got[2*bs] != 9 {
		t.Fatalf("B reads %d %d %d, want 7 8 9", got[0], got[bs], got[2*bs])
	}
	wantFencedFlush(t, a, pattern(4096, 11), 0, "A's flush")
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestFenceFollowerAcrossTakeover (issue 13 review): a follower tailing
// the old writer's chain meets the taker's fence, whether the taker
// checkpointed the old log out of its head or died before that (its head
// still names the fenced log), and reads what the taker's head says.
func TestFenceFollowerAcrossTakeover(t *testing.T) {
	for _, died := range []bool{false, true} {
		t.Run(map[bool]string{false: "checkpointed", true: "taker died"}[died], func(t *testing.T) {
			ctx := context.Background()
			s := newOpStore()
			id, a := newSegVolume(t, s, 3)
			f, err := Open(ctx, s, id, OpenOptions{Follow: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.WriteAt(ctx, pattern(4096, 7), 0, false); err != nil {
				t.Fatal(err)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, f); got[0] != 7 {
				t.Fatalf("follower reads %d, want 7", got[0])
			}
			if died {
				// The taker's checkpoint fails (after its fence landed).
				s.onCreate = nil
				failPut := true
				s2 := &failPutStore{opStore: s, fail: &failPut}
				if _, err := Open(ctx, s2, id, OpenOptions{Writable: true, Log: true, NewEpoch: true}); err == nil {
					t.Fatal("the taker opened without its checkpoint")
				}
				if len(fencesIn(t, s)) == 0 {
					t.Fatal("no fence")
				}
			} else {
				b, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
				if err != nil {
					t.Fatal(err)
				}
				if err := b.WriteAt(ctx, pattern(4096, 8), int64(bs), false); err != nil {
					t.Fatal(err)
				}
				if err := b.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				defer b.Close(ctx)
			}
			want := byte(1)
			if !died {
				want = 8
			}
			if got := readAll(t, f); got[0] != 7 || got[bs] != want {
				t.Fatalf("follower reads %d %d, want 7 %d", got[0], got[bs], want)
			}
		})
	}
}

// failPutStore fails every Put and Swap while *fail (a taker that dies
// at its checkpoint).
type failPutStore struct {
	*opStore
	fail *bool
}

func (s *failPutStore) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if *s.fail {
		return 0, objstore.ErrNoSpace
	}
	return s.opStore.Put(ctx, name, data)
}

func (s *failPutStore) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	if *s.fail && blockmap.ParseName(name).Kind == blockmap.HeadObject {
		if h, err := blockmap.DecodeHead(data); err == nil && len(h.Logs) <= 1 {
			return 0, objstore.ErrNoSpace // (its checkpoint's swap; its first one goes)
		}
	}
	return s.opStore.Swap(ctx, name, data, old)
}

// TestFenceRemoveDeletesFences (issue 13 review): a taker fenced the old
// writer's chain and died before its checkpoint, so its head still names
// the fenced log: Remove deletes the fence with the log's segments.
func TestFenceRemoveDeletesFences(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	id, a := newSegVolume(t, s, 3)
	if err := a.WriteAt(ctx, pattern(4096, 7), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	fail := true
	if _, err := Open(ctx, &failPutStore{opStore: s, fail: &fail}, id, OpenOptions{Writable: true, Log: true, NewEpoch: true}); err == nil {
		t.Fatal("the taker opened without its checkpoint")
	}
	if len(fencesIn(t, s)) == 0 {
		t.Fatal("no fence")
	}
	if err := Remove(ctx, s, id); err != nil {
		t.Fatal(err)
	}
	if f, segs := fencesIn(t, s), segments(t, s); len(f) != 0 || len(segs) != 0 {
		t.Fatalf("after Remove: fences %v, segments %v", f, segs)
	}
}

// getLimitStore fails a Get of one name past 100 (a replay that loops).
type getLimitStore struct {
	*opStore
	name string
	n    int
}

func (s *getLimitStore) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if name == s.name {
		if s.n++; s.n > 100 {
			return nil, 0, errors.New("looping on " + name)
		}
	}
	return s.opStore.Get(ctx, name)
}

// TestFenceEmptySegment (issue 13 review): an empty object at a name of
// the old writer's chain (no writer makes one) ends a replay with an
// error (ErrCorrupt) instead of reading it again forever.
func TestFenceEmptySegment(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	id, a := newSegVolume(t, s, 3)
	if err := a.WriteAt(ctx, pattern(4096, 7), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	segs := segments(t, s)
	if len(segs) != 1 {
		t.Fatalf("segments %v, want 1", segs)
	}
	b, _, err := s.Store.Get(ctx, segs[0])
	if err != nil {
		t.Fatal(err)
	}
	ref := a.Head().Logs[0]
	name := blockmap.LogSegmentName(id, ref.Epoch, ref.Seq, int64(ref.From)+int64(len(b)))
	if _, err := s.Store.Create(ctx, name, nil); err != nil {
		t.Fatal(err)
	}
	g := &getLimitStore{opStore: s, name: name}
	_, err = Open(ctx, g, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if g.n > 100 || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("the taker's open: %v after %d reads of %s, want ErrCorrupt", err, g.n, name)
	}
}
