package daemon

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// asyncStore models the RADOS store since in-place writes return once
// sent (internal/objstore/rados, writeMerger), over a mem store seen as a
// plain Store (no fresh Stat: the writer keeps no write log, and writes
// its own blocks in place): the next WriteAt of the object lose names
// returns nil and lands nothing (failed at the OSDs: its Sync and Settle
// fail from then on, sticky); the next WriteAt of the object hold names
// returns nil and lands only at land() (in flight: its Sync waits for it,
// or for its ctx, as writeMerger.Sync does).
type asyncStore struct {
	objstore.Store
	mem *objstore.Mem

	mu         sync.Mutex
	lose, hold string
	failed     map[string]error
	held       []heldW
	landed     chan struct{}
}

type heldW struct {
	name string
	p    []byte
	off  int64
}

var errOSD = errors.New("injected: operation failed at the OSD (EIO)")

func newAsyncStore() *asyncStore {
	m := objstore.NewMem()
	return &asyncStore{Store: m, mem: m, failed: map[string]error{}, landed: make(chan struct{})}
}

func (s *asyncStore) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	s.mu.Lock()
	switch name {
	case s.lose:
		s.lose = ""
		s.failed[name] = errOSD
		s.mu.Unlock()
		return nil
	case s.hold:
		s.hold = ""
		s.held = append(s.held, heldW{name, bytes.Clone(p), off})
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	return s.mem.WriteAt(ctx, name, p, off)
}

func (s *asyncStore) Sync(ctx context.Context, name string) error {
	s.mu.Lock()
	var wait chan struct{}
	for _, w := range s.held {
		if w.name == name {
			wait = s.landed
		}
	}
	s.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed[name]
}

func (s *asyncStore) Settle(ctx context.Context, name string) error { return s.Sync(ctx, name) }
func (s *asyncStore) SyncWaitsOnly() bool                           { return true }

func (s *asyncStore) inFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}

func (s *asyncStore) land() {
	s.mu.Lock()
	held := s.held
	s.held = nil
	close(s.landed)
	s.landed = make(chan struct{})
	s.mu.Unlock()
	for _, w := range held {
		s.mem.WriteAt(context.Background(), w.name, w.p, w.off)
	}
}

// TestReview11bDaemonLostWrite: through the daemon, an in-place write
// that fails at the OSDs after it returned fails every NBD FLUSH,
// however often it is retried, through a client's release (the final
// flush fails: the handle is kept) and a reconnect, and the periodic
// flush. Then the daemon shuts down while another write it returned for
// is still in flight: its Close's flush waits for it and fails, and the
// lease must not be released cleanly (the next writer would open in the
// same epoch and write in place; it was, before the fix).
func TestReview11bDaemonLostWrite(t *testing.T) {
	ctx := context.Background()
	s := newAsyncStore()
	m := manage.New(s)
	r, err := m.CreateVolume(ctx, "v", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	d := New(m, nil)
	exp, release, err := d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	const bsz = 64 << 10
	if err := exp.WriteAt(ctx, bytes.Repeat([]byte{1}, 2*bsz), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := exp.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ro, err := volume.Open(ctx, s, r.ID, volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	es := ro.Entries()
	ro.Close(ctx)
	o0, o1 := es[0].ObjectName(), es[1].ObjectName()
	s.mu.Lock()
	s.lose, s.hold = o0, o1
	s.mu.Unlock()
	if err := exp.WriteAt(ctx, bytes.Repeat([]byte{2}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	if s.failed[o0] == nil {
		t.Fatalf("the write did not go in place into %s", o0)
	}
	for i := range 3 {
		if err := exp.Flush(ctx); err == nil {
			t.Fatalf("NBD FLUSH %d after a lost write succeeded", i)
		}
	}
	if err := exp.WriteAt(ctx, bytes.Repeat([]byte{2}, 4096), 0, true); err == nil {
		t.Fatal("a FUA write into the object of the lost write succeeded")
	}
	release() // the final flush fails: kept
	exp, release, err = d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if err := exp.Flush(ctx); err == nil {
		t.Fatal("NBD FLUSH after a reconnect succeeded with the lost write still lost")
	}
	// A write to block 1, in flight at shutdown.
	if err := exp.WriteAt(ctx, bytes.Repeat([]byte{3}, 4096), bsz, false); err != nil {
		t.Fatal(err)
	}
	if s.inFlight() != 1 {
		t.Fatal("block 1's write is not in flight")
	}
	// The release's flush and the shutdown's wait for it: it lands a
	// moment later.
	go func() {
		time.Sleep(100 * time.Millisecond)
		s.land()
	}()
	release()
	cerr := d.Close(ctx)
	rec, _, err := m.Leases.Read(ctx, r.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("daemon Close: %v; lease record %+v; in flight %d", cerr, rec, s.inFlight())
	if rec.Owner == "" && !rec.Unsettled && !rec.Broken {
		t.Fatalf("the daemon's shutdown released the lease cleanly (%+v) after its final flush failed, with writes that may land late: "+
			"the next writer would open with Handover, in the same epoch, and write %s in place", rec, o1)
	}
}
