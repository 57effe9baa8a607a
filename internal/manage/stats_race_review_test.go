package manage

import (
	"bytes"
	"context"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// hookIndexGet is segStore that runs before once, before the first Get
// of a write log index.
type hookIndexGet struct {
	segStore
	before func()
	gone   *bool
}

func (h hookIndexGet) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if blockmap.ParseName(name).Kind == blockmap.IndexObject && h.before != nil {
		f := h.before
		h.before = nil
		f()
		if _, err := h.segStore.Stat(ctx, name); objstore.IsNotExist(err) {
			*h.gone = true
		}
	}
	return h.segStore.Get(ctx, name)
}

// TestStatsIndexReplaced: a writer's checkpoint replaces the write log
// index between stats' read of the head and of the index: stats do not
// fail.
func TestStatsIndexReplaced(t *testing.T) {
	base, _, id := segVolume(t)
	open := func() *volume.Volume {
		v, err := volume.Open(ctx, base, id, volume.OpenOptions{Writable: true, Log: true, Handover: true})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	p := bytes.Repeat([]byte{7}, 4096)
	v := open()
	if err := v.WriteAt(ctx, p, bs+100, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	w := open()
	if err := w.WriteAt(ctx, p, 3*bs, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	gone := false
	once := true
	hs := &hookIndexGet{segStore: base, gone: &gone}
	hs.before = func() {
		if !once {
			return
		}
		once = false
		if err := w.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(hs).Stats(ctx); err != nil {
		t.Fatalf("stats: %v", err)
	}
	if !gone {
		t.Fatal("the index read was not replaced (test premise)")
	}
}
