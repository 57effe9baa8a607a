package daemon

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/manage"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// TestFlushLoop: data written through an export, with no flush from the
// client, reaches the store's map by the periodic flush.
func TestFlushLoop(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
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
	defer release()
	if err := exp.WriteAt(ctx, []byte("unflushed"), 4096, false); err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.FlushLoop(lctx, time.Millisecond, t.Logf); close(done) }()
	defer func() { cancel(); <-done }()
	got := make([]byte, 9)
	for i := 0; ; i++ {
		v, err := volume.Open(ctx, s, r.ID, volume.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := v.ReadAt(ctx, got, 4096); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(got, []byte("unflushed")) {
			return
		}
		if i == 1000 {
			t.Fatal("the periodic flush never persisted the write")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
