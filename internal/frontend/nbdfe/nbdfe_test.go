package nbdfe

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/archipelago-go/archip/internal/daemon"
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
