package nbdfe

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/archipelago-go/archip/internal/daemon"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/nbd"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

func TestErrno(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want uint32
	}{
		{nil, 0},
		{daemon.ErrNotFast, nbd.ENOTSUP},
		{fmt.Errorf("x: %w", volume.ErrReadOnly), nbd.EPERM},
		{objstore.ErrReadOnly, nbd.EPERM},
		{volume.ErrOutOfRange, nbd.EINVAL},
		{fmt.Errorf("flush: %w", objstore.ErrNoSpace), nbd.ENOSPC},
		{volume.ErrClosed, nbd.ESHUTDOWN},
		{context.Canceled, nbd.ESHUTDOWN},
		{volume.ErrFenced, nbd.EIO},
		{volume.ErrCorrupt, nbd.EIO},
		{errors.New("anything else"), nbd.EIO},
	} {
		if got := Errno(tc.err); got != tc.want {
			t.Errorf("Errno(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// lendingStore is a memory store that says it lends what it reads.
type lendingStore struct{ objstore.Store }

func (s lendingStore) ReadLend(ctx context.Context, name string, off int64, n int, fn func(bufs [][]byte) error) error {
	p := make([]byte, n)
	if err := s.Store.ReadAt(ctx, name, p, off); err != nil {
		return err
	}
	return fn([][]byte{p})
}

// TestExports: unknown names are nbd.ErrUnknownExport, every record is
// listed, and an export offers ReadTo only on a store that lends.
func TestExports(t *testing.T) {
	ctx := context.Background()
	for _, lends := range []bool{false, true} {
		var s objstore.Store = objstore.NewMem()
		if lends {
			s = lendingStore{s}
		}
		m := manage.New(s)
		if _, err := m.CreateVolume(ctx, "v", 1<<20, 16); err != nil {
			t.Fatal(err)
		}
		d := daemon.New(m, t.Logf)
		x := Exports{d}
		for _, name := range []string{"", "nothing", "bad@name"} {
			if _, _, err := x.Open(ctx, name); !errors.Is(err, nbd.ErrUnknownExport) {
				t.Errorf("Open(%q): %v, want nbd.ErrUnknownExport", name, err)
			}
		}
		e, release, err := x.Open(ctx, "v")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := e.(nbd.ReaderTo); ok != lends {
			t.Errorf("store lends %v: export is a ReaderTo %v", lends, ok)
		}
		if err := e.WriteAt(ctx, []byte("hello"), 0, true); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if err := e.ReadAt(ctx, got, 0); err != nil || string(got) != "hello" {
			t.Errorf("ReadAt: %q, %v", got, err)
		}
		release()
		list, err := x.List(ctx)
		if err != nil || len(list) != 1 || list[0].Name != "v" || list[0].Description != "volume, 1 MiB" {
			t.Errorf("List: %+v, %v", list, err)
		}
		if err := d.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
