package manage

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestInfoCountsWriteLog: a clone's writer logs a flushed write (the
// write log, not yet checkpointed into blocks): Info counts the log
// object the head names as the volume's (LogBytes, and in ExclusiveBytes:
// removing the volume frees it), and nothing once Close checkpointed it.
func TestInfoCountsWriteLog(t *testing.T) {
	s := objstore.NewMem()
	m := New(s)
	if _, err := m.CreateVolume(ctx, "vm", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	WriteT(t, m, "vm", 0, bytes.Repeat([]byte{1}, 4*bs))
	if _, err := m.Snapshot(ctx, "vm", "vm@s"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Clone(ctx, "vm@s", "c", 0); err != nil {
		t.Fatal(err)
	}
	v, r, err := m.Open(ctx, "c", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, []byte("x"), 2*bs+10, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var logs int64
	for _, ref := range v.Head().Logs {
		in, err := s.Stat(ctx, blockmap.LogName(r.ID, ref.Epoch, ref.Seq))
		if err != nil {
			t.Fatal(err)
		}
		logs += in.Size
	}
	if logs == 0 {
		t.Fatal("the clone's flushed write left no log bytes (not logged?)")
	}
	in, err := m.Info(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if in.LogBytes != logs || in.ExclusiveBytes != logs {
		t.Fatalf("info of a clone with a logged write: log %d, exclusive %d bytes; want both %d (its log)", in.LogBytes, in.ExclusiveBytes, logs)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	in, err = m.Info(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	sub := int64(bs / blockmap.SubBlocks)
	if in.LogBytes != 0 || in.ExclusiveBytes != sub {
		t.Fatalf("info after Close checkpointed the log: log %d, exclusive %d bytes; want 0 and %d", in.LogBytes, in.ExclusiveBytes, sub)
	}
}

// segOnly is a store without in-place writes whose Stat is fresh (S3):
// the write log is stored as segments.
type segOnly struct{ objstore.Store }

func (segOnly) FreshStat() bool { return true }

// TestInfoCountsWriteLogSegments (issue 13): on a store without in-place
// writes, Info counts the segments of the log the head names.
func TestInfoCountsWriteLogSegments(t *testing.T) {
	s := segOnly{objstore.NewMem()}
	m := New(s)
	if _, err := m.CreateVolume(ctx, "vm", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	v, r, err := m.Open(ctx, "vm", true)
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for i := range 3 {
		if err := v.WriteAt(ctx, []byte("x"), int64(i*bs+10), false); err != nil {
			t.Fatal(err)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	err = s.List(ctx, blockmap.VolumePrefix(r.ID)+"l/", func(in objstore.Info) error {
		want += in.Size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want == 0 {
		t.Fatal("no log segment was written")
	}
	in, err := m.Info(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	if in.LogBytes != want {
		t.Fatalf("info: log %d bytes, want %d (its segments)", in.LogBytes, want)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// fakeClock is a clock tests move.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// slowReplay is a segmented store on which, while armed, each read of a
// log segment takes a second of the fake clock, and lets the lease's
// keeper renew (one tick of its sleep) before it returns.
type slowReplay struct {
	segOnly
	clk     *fakeClock
	armed   atomic.Bool
	tick    chan struct{}
	renewed chan struct{}
}

func (s *slowReplay) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if n := blockmap.ParseName(name); s.armed.Load() && n.Kind == blockmap.LogObject && n.Log != name {
		s.clk.advance(time.Second)
		select {
		case s.tick <- struct{}{}:
			<-s.renewed
		case <-time.After(10 * time.Second): // nothing renews the lease
		}
	}
	return s.segOnly.Get(ctx, name)
}

func (s *slowReplay) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	v, err := s.segOnly.Swap(ctx, name, data, old)
	if strings.HasPrefix(name, "lease/") && s.armed.Load() {
		select {
		case s.renewed <- struct{}{}:
		default:
		}
	}
	return v, err
}

// TestOpenWriterKeepsLeaseDuringReplay (issue 13): a writer that takes a
// volume over replays the write log of the writer before it, which on a
// store without in-place writes takes a request per segment; the lease is
// renewed meanwhile, so an open that outlasts the lease's validity does
// not fail, nor does the first write after it. (The lease was kept only
// from the end of the open: the open failed with lease.ErrStale.)
func TestOpenWriterKeepsLeaseDuringReplay(t *testing.T) {
	const ttl = 2 * time.Second
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	s := &slowReplay{segOnly: segOnly{objstore.NewMem()}, clk: clk, tick: make(chan struct{}), renewed: make(chan struct{}, 1)}
	manager := func(node string, tick chan struct{}) *Manager {
		m := New(s)
		l, err := lease.NewManager(s, lease.Config{Node: node, TTL: ttl, MaxDrift: 100 * time.Millisecond, Clock: clk,
			Sleep: func(ctx context.Context, d time.Duration) error {
				if d != ttl/3 {
					clk.advance(d)
					return nil
				}
				select {
				case <-tick:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		m.Leases = l
		return m
	}
	m := manager("a", nil)
	r, err := m.CreateVolume(ctx, "vm", 4*bs, 16)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := m.OpenWriter(ctx, r.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := v.WriteAt(ctx, []byte{byte(i + 1)}, int64(i*100), false); err != nil {
			t.Fatal(err)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The writer dies; its lease expires; another node takes over.
	clk.advance(time.Minute)
	s.armed.Store(true)
	m2 := manager("b", s.tick)
	w, l, err := m2.OpenWriter(ctx, r.ID, nil)
	if err != nil {
		t.Fatalf("open after a replay longer than the lease's validity: %v", err)
	}
	s.armed.Store(false)
	if err := l.Valid(); err != nil {
		t.Fatalf("the lease after the open: %v", err)
	}
	got := make([]byte, 500)
	if err := w.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if got[i*100] != byte(i+1) {
			t.Fatalf("byte %d = %d, want %d (flushed before the takeover)", i*100, got[i*100], i+1)
		}
	}
	if err := w.WriteAt(ctx, []byte{9}, 1, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
