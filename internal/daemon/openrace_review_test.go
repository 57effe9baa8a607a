package daemon

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestOpenRacesFlushElsewhere: a client connects (the daemon opens the
// volume as a follower, holding no lease) while another node's writer
// flushes, replacing the map segment the open is about to read and
// deleting the old one. The open must read the newer head and succeed,
// as a follower's refresh does, not refuse the client with "store is
// corrupt" (the writer deletes a segment only once a head that no longer
// needs it is stored).
func TestOpenRacesFlushElsewhere(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewMem()
	s := &hookStore{Store: mem}
	ma, mb := manage.New(s), manage.New(mem)
	if _, err := ma.CreateVolume(ctx, "v", 1<<20, 16); err != nil {
		t.Fatal(err)
	}
	manage.WriteT(t, mb, "v", 0, []byte("first"))
	if v, _, err := mb.Open(ctx, "v", true); err != nil || v.Checkpoint(ctx) != nil || v.Close(ctx) != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	write := func(off int64, p []byte) error {
		v, _, err := mb.Open(ctx, "v", true)
		if err != nil {
			return err
		}
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			v.Close(ctx)
			return err
		}
		// Segments, not the head's delta: the flush replaces the
		// segment the opener is reading.
		if err := v.Checkpoint(ctx); err != nil {
			v.Close(ctx)
			return err
		}
		return v.Close(ctx)
	}
	var once atomic.Bool
	werr := make(chan error, 1)
	s.setHook(func(op objstore.Op, name string) error {
		if op == objstore.OpGet && strings.Contains(name, "/s/") && once.CompareAndSwap(false, true) {
			werr <- write(1<<19, []byte("second")) // the other node flushes now
		}
		return nil
	})
	d := New(ma, t.Logf)
	t.Cleanup(func() { d.Close(ctx) })
	e, release, err := d.Open(ctx, "v")
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("opening while another node flushes: %v", err)
	}
	defer release()
	if got := readBack(t, e, 1<<19, 6); string(got) != "second" {
		t.Fatalf("reads %q", got)
	}
}
