package volume

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestLogFlushKeepsLogSize: on the file store, a flush of logged writes
// does not change the log's size (the log is written with zeros ahead of
// its tail, logAhead at a time), so that its fdatasync writes the data
// and no metadata: a file that grows at each flush costs a journal commit
// per fdatasync, about 1.5x the sync of an in-place write. The bytes
// written stay readable through a reopen.
func TestLogFlushKeepsLogSize(t *testing.T) {
	s, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	id := newClone(t, s, 8)
	v := openLogged(t, s, id, OpenOptions{})
	lf := v.Head().Logs[0]
	name := blockmap.LogName(id, lf.Epoch, lf.Seq)
	want := pattern(8*bs, 1)
	var sizes []int64
	for k := range 32 {
		off := (k%8)*bs + 512*k
		p := pattern(4096, byte(10+k))
		if err := v.WriteAt(ctx, p, int64(off), false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		info, err := s.Stat(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, info.Size)
	}
	end := int64(32 * (2*logHeader + 4096))
	if sizes[0] < end || sizes[len(sizes)-1] != sizes[0] {
		t.Errorf("the log's size after each of 32 flushes: %v; want one size, at least %d", sizes, end)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantStored(t, s, id, want, "a reopen")
}

// holdZeros holds the first write of zeros to a log (aheadLog's) until
// release is closed, after telling held.
type holdZeros struct {
	*objstore.Mem
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

func (m *holdZeros) hold(name string, p []byte) {
	if strings.Contains(name, "/l/") && len(p) >= 4096 && !slices.ContainsFunc(p, func(c byte) bool { return c != 0 }) {
		m.once.Do(func() {
			close(m.held)
			<-m.release
		})
	}
}

func (m *holdZeros) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	m.hold(name, p)
	return m.Mem.WriteAt(ctx, name, p, off)
}

func (m *holdZeros) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	h, err := m.Mem.OpenHandle(ctx, name, create, writable)
	if err != nil {
		return nil, err
	}
	return holdHandle{h, m, name}, nil
}

type holdHandle struct {
	objstore.Handle
	m    *holdZeros
	name string
}

func (h holdHandle) WriteAt(p []byte, off int64) error {
	h.m.hold(h.name, p)
	return h.Handle.WriteAt(p, off)
}

// TestLogZerosNeverOverRecord: the zeros written ahead of the log's tail
// never land over a record. The first append writes zeros past its
// record, held; a second append, whose record lies inside those zeros,
// must wait for them: were it written first, the zeros would erase it,
// and the flush after both would lose it. (The hold ends when the second
// write returns, or after a while: a correct writer never returns
// first, so the test cannot fail on a slow machine.)
func TestLogZerosNeverOverRecord(t *testing.T) {
	defer func(n int64) { logAhead = n }(logAhead)
	logAhead = 16 << 10
	s := &holdZeros{Mem: objstore.NewMem(), held: make(chan struct{}), release: make(chan struct{})}
	id := newClone(t, s, 4)
	v := openLogged(t, s, id, OpenOptions{})
	want := pattern(4*bs, 1)
	a, b := pattern(4096, 7), pattern(1000, 8)
	copy(want[100:], a)
	copy(want[bs+100:], b)
	errs := make(chan error, 2)
	go func() { errs <- v.WriteAt(ctx, a, 100, false) }()
	<-s.held
	second := make(chan error, 1)
	go func() { second <- v.WriteAt(ctx, b, bs+100, false) }()
	select {
	case err := <-second:
		errs <- err
	case <-time.After(200 * time.Millisecond):
		go func() { errs <- <-second }()
	}
	close(s.release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantStored(t, s, id, want, "a reopen after the flush of two writes")
}

// syncNames records the names of the objects synced.
type syncNames struct {
	*objstore.Mem
	mu    sync.Mutex
	names []string
	swaps int
}

func (m *syncNames) note(name string) {
	m.mu.Lock()
	m.names = append(m.names, name)
	m.mu.Unlock()
}

func (m *syncNames) Sync(ctx context.Context, name string) error {
	m.note(name)
	return m.Mem.Sync(ctx, name)
}

func (m *syncNames) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	m.mu.Lock()
	m.swaps++
	m.mu.Unlock()
	return m.Mem.Swap(ctx, name, data, old)
}

func (m *syncNames) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	h, err := m.Mem.OpenHandle(ctx, name, create, writable)
	if err != nil {
		return nil, err
	}
	return syncNamesHandle{h, m, name}, nil
}

type syncNamesHandle struct {
	objstore.Handle
	m    *syncNames
	name string
}

func (h syncNamesHandle) Sync() error {
	h.m.note(h.name)
	return h.Handle.Sync()
}

// TestInPlaceFlushSyncsItsObject: on a volume whose every block this
// writer owns (written, then reopened with the log on), each 4 KiB write
// and flush syncs one object, the block's, and nothing else (not the
// log: an owned block is written in place, see logsBlock), and swaps no
// head, on a store whose sync does not write the inode. (Routing such
// writes through the log, whose sync with zeros ahead costs about what
// an object's does there, gains nothing and adds a checkpoint stall:
// docs/benchmarks.md. Where the sync writes the inode, scattered writes
// go to the log: TestScatterSyncsTheLogOnly.)
func TestInPlaceFlushSyncsItsObject(t *testing.T) {
	s := &syncNames{Mem: objstore.NewMem()}
	id, err := Create(ctx, s, CreateOptions{Size: 4 * bs, BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	v := openLogged(t, s, id, OpenOptions{})
	if err := v.WriteAt(ctx, pattern(4*bs, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.names, s.swaps = nil, 0
	s.mu.Unlock()
	for k := range 8 {
		b := k % 4
		if err := v.WriteAt(ctx, pattern(4096, byte(10+k)), int64(b*bs+4096*k), false); err != nil {
			t.Fatal(err)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		names, swaps := s.names, s.swaps
		s.names = nil
		s.mu.Unlock()
		e, _ := v.entry(int64(b))
		want := e.ObjectName()
		if len(names) != 1 || names[0] != want || swaps != 0 {
			t.Fatalf("write and flush %d synced %v and swapped the head %d times, want one sync of %s and no swap", k, names, swaps, want)
		}
	}
}

// TestLogZerosCrashImages: a log that crosses the zeros ahead of its tail
// many times (logAhead lowered), with a flush after every few writes: in
// every crash image (a random subset of the unsynced writes landed, the
// zeros' among them), a reopen reads every flushed write, and each later
// write either whole or not at all (replay stops at zeros as at the end
// of the log, never before a committed record, and never reads zeros as
// a record).
func TestLogZerosCrashImages(t *testing.T) {
	defer func(n int64) { logAhead = n }(logAhead)
	logAhead = 8 << 10
	mem := objstore.NewCrashable()
	id := newClone(t, mem, 4)
	v := openLogged(t, mem, id, OpenOptions{})
	flushed := pattern(4*bs, 1)
	rng := rand.New(rand.NewPCG(11, 0))
	for k := range 60 {
		var unflushed [][2]int
		cur := slices.Clone(flushed)
		for j := range 1 + k%3 {
			n := 512 * (1 + (k+j)%9)
			off := (k+j)%4*bs + (k*977+j*131)%(bs-n)
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(k + j + 2)
			}
			// a run of zeros inside the record, at a 4 KiB boundary of
			// the volume and somewhere in the log
			clear(p[n/4 : n/2])
			if err := v.WriteAt(ctx, p, int64(off), false); err != nil {
				t.Fatal(err)
			}
			copy(cur[off:], p)
			unflushed = append(unflushed, [2]int{off, n})
		}
		if k%2 == 0 {
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			flushed = cur
			unflushed = nil
		}
		for range 3 {
			img := mem.Crash(rng)
			r, err := Open(ctx, img, id, OpenOptions{})
			if err != nil {
				t.Fatalf("write %d: open a crash image: %v", k, err)
			}
			got := make([]byte, len(flushed))
			if err := r.ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			if len(unflushed) == 0 && !bytes.Equal(got, flushed) {
				t.Fatalf("write %d: a crash image after a flush reads other bytes than were flushed", k)
			}
			// Unflushed writes were not committed: a replay drops them.
			if len(unflushed) > 0 && !bytes.Equal(got, flushed) {
				t.Fatalf("write %d: a crash image reads writes no flush committed", k)
			}
		}
		if k%2 != 0 {
			flushed = cur
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// lateZeros fails the first write of zeros to a log (aheadLog's) with an
// error of unknown outcome, and keeps it, to land later (land).
type lateZeros struct {
	*objstore.Mem
	mu   sync.Mutex
	done bool
	name string
	off  int64
	n    int
}

var errZerosTimeout = errors.New("test: the write of zeros timed out (it may land)")

func (m *lateZeros) fail(name string, p []byte, off int64) bool {
	if !strings.Contains(name, "/l/") || len(p) < 4096 || slices.ContainsFunc(p, func(c byte) bool { return c != 0 }) {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		return false
	}
	m.done, m.name, m.off, m.n = true, name, off, len(p)
	return true
}

func (m *lateZeros) land(t *testing.T) {
	t.Helper()
	if !m.done {
		t.Fatal("no write of zeros to a log was held")
	}
	if err := m.Mem.WriteAt(ctx, m.name, make([]byte, m.n), m.off); err != nil {
		t.Fatal(err)
	}
}

func (m *lateZeros) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	if m.fail(name, p, off) {
		return errZerosTimeout
	}
	return m.Mem.WriteAt(ctx, name, p, off)
}

func (m *lateZeros) OpenHandle(ctx context.Context, name string, create, writable bool) (objstore.Handle, error) {
	h, err := m.Mem.OpenHandle(ctx, name, create, writable)
	if err != nil {
		return nil, err
	}
	return lateZerosHandle{h, m, name}, nil
}

type lateZerosHandle struct {
	objstore.Handle
	m    *lateZeros
	name string
}

func (h lateZerosHandle) WriteAt(p []byte, off int64) error {
	if h.m.fail(h.name, p, off) {
		return errZerosTimeout
	}
	return h.Handle.WriteAt(p, off)
}

// TestLogLateZerosLoseNoFlush: a write of zeros ahead of the log fails
// with an unknown outcome and lands after later writes were flushed (the
// zero writer that wakes up late). The write that needed them fails; the
// writes after it and their flushes succeed, and a reopen, a crash image
// and a writer taking over read every flushed write.
func TestLogLateZerosLoseNoFlush(t *testing.T) {
	defer func(n int64) { logAhead = n }(logAhead)
	logAhead = 8 << 10
	mem := objstore.NewCrashable()
	s := &lateZeros{Mem: mem}
	id := newClone(t, s, 4)
	v := openLogged(t, s, id, OpenOptions{})
	want := pattern(4*bs, 1)
	write := func(off int, b byte) error {
		p := pattern(3000, b)
		err := v.WriteAt(ctx, p, int64(off), false)
		if err == nil {
			copy(want[off:], p)
		}
		return err
	}
	failed := false
	for k := range 8 {
		if err := write(k%4*bs+100*k, byte(10+k)); err != nil {
			if !errors.Is(err, errZerosTimeout) || failed {
				t.Fatalf("write %d: %v", k, err)
			}
			failed = true
		}
	}
	if !failed {
		t.Fatal("no write failed with the held zeros")
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for k := 8; k < 12; k++ {
		if err := write(k%4*bs+100*k, byte(10+k)); err != nil {
			t.Fatalf("write %d: %v", k, err)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s.land(t)
	check := func(what string, st objstore.Store) {
		t.Helper()
		r, err := Open(ctx, st, id, OpenOptions{})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		got := make([]byte, len(want))
		if err := r.ReadAt(ctx, got, 0); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s reads other bytes than were flushed", what)
		}
	}
	check("a reopen", s)
	check("a crash image", mem.Crash(rand.New(rand.NewPCG(1, 2))))
	w, err := Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	check("a reopen after a takeover", s)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	check("a reopen after the taker's Close", s)
}
