package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// events is an ordered log of what a test saw.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.log = append(e.log, s)
	e.mu.Unlock()
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

// testFrontend is a frontend of another protocol: each Serve opens the
// volume "v" for one client and writes to it without flushing; Shutdown
// lets that client write once more (a request in progress when the
// daemon stops) and releases it.
type testFrontend struct {
	d       *Daemon
	ev      *events
	serving chan struct{} // closed once the client has written
	stop    chan struct{}

	mu      sync.Mutex
	v       *Volume
	release func()
}

var _ Frontend = (*testFrontend)(nil)

func (f *testFrontend) Serve(l net.Listener) error {
	defer l.Close()
	ctx := context.Background()
	v, release, err := f.d.Open(ctx, "v")
	if err != nil {
		return err
	}
	if err := v.WriteAt(ctx, []byte("served"), 0, false); err != nil {
		release()
		return err
	}
	f.mu.Lock()
	f.v, f.release = v, release
	f.mu.Unlock()
	close(f.serving)
	<-f.stop
	return nil
}

func (f *testFrontend) Shutdown(ctx context.Context) error {
	f.ev.add("frontend shutdown")
	close(f.stop)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.v.WriteAt(ctx, []byte("drained"), 4096, false); err != nil {
		return fmt.Errorf("a request while draining: %w", err)
	}
	f.ev.add("drained")
	f.ev.add("release")
	f.release()
	return nil
}

// TestRunDrainsFrontendsThenFlushes: a frontend other than NBD plugs
// into Run; when Run's context ends, the frontend is shut down first
// (and may still complete a request), then its volume is flushed, and
// last its lease is released; nothing is flushed before the frontend
// drained.
func TestRunDrainsFrontendsThenFlushes(t *testing.T) {
	ctx := context.Background()
	s := &hookStore{Store: objstore.NewMem()}
	m := manage.New(s)
	r, err := m.CreateVolume(ctx, "v", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	ev := &events{}
	head, leaseName := blockmap.HeadName(r.ID), lease.Name(r.ID.String())
	s.setHook(func(op objstore.Op, name string) error {
		switch {
		case op == objstore.OpStat || op == objstore.OpGet || op == objstore.OpReadAt:
		case name == head:
			ev.add("head written")
		case name == leaseName:
			ev.add("lease written")
		}
		return nil
	})
	fe := &testFrontend{ev: ev, serving: make(chan struct{}), stop: make(chan struct{})}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(rctx, Config{
			Manager: m, Store: "mem://test", Node: "n1", AdminListen: "127.0.0.1:0",
			LeaseTTL: 5 * time.Second, MaxClockDrift: 500 * time.Millisecond,
			Frontends: []FrontendConfig{{Name: "TEST", Listen: []string{"127.0.0.1:0"},
				New: func(d *Daemon) Frontend { fe.d = d; return fe }}},
			Logf: t.Logf,
		})
	}()
	select {
	case <-fe.serving:
	case err := <-done:
		t.Fatalf("Run: %v before serving", err)
	}
	ev.add("stop")
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	log := ev.list()
	log = log[slices.Index(log, "stop"):]
	i := slices.Index(log, "frontend shutdown")
	j := slices.Index(log, "release")
	k := slices.Index(log, "head written")
	l := slices.Index(log[max(k, 0):], "lease written")
	if i < 0 || j < i || k < j || l < 0 || slices.Index(log, "drained") > j {
		t.Fatalf("after the stop: %s; want the frontend shut down, its last request done, its volume released, then the head flushed and the lease released", strings.Join(log, ", "))
	}

	v, err := volume.Open(ctx, s, r.ID, volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	for off, want := range map[int64]string{0: "served", 4096: "drained"} {
		got := make([]byte, len(want))
		if err := v.ReadAt(ctx, got, off); err != nil || !bytes.Equal(got, []byte(want)) {
			t.Errorf("at %d after Run: %q, %v; want %q flushed", off, got, err, want)
		}
	}
	rec, _, err := m.Leases.Read(ctx, r.ID.String())
	if err != nil || rec.Owner != "" {
		t.Errorf("lease after Run: %+v, %v; want it released", rec, err)
	}
}

// TestRunConfigErrors: every problem of a Config is reported at once,
// as a *ConfigError, before anything listens.
func TestRunConfigErrors(t *testing.T) {
	err := Run(context.Background(), Config{
		Frontends: []FrontendConfig{{Name: "TEST", Listen: []string{"nowhere"}}},
	})
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("Run: %v; want a *ConfigError", err)
	}
	for _, want := range []string{"no store manager", "node id", "no constructor", `TEST listener "nowhere"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run: %v; want it to say %q", err, want)
		}
	}
}
