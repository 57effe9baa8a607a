package daemon

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// TestBeginEpochAsk: the holder of a volume's lease begins a new epoch
// when asked (lease.EpochPath), keeping its lease and its term, and
// answers the same ask again without another; a node that does not hold
// the lease answers lease.ErrNotHolder; an ask without the token is
// refused.
func TestBeginEpochAsk(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	a, b := newNode(t, s, "a", time.Hour), newNode(t, s, "b", time.Hour)
	r, err := a.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	ea, _ := a.open(t, "v"), b.open(t, "v")
	if err := ea.WriteAt(ctx, []byte("before"), 0, false); err != nil {
		t.Fatal(err)
	}
	rec, _, err := a.d.mgr.Leases.Read(ctx, r.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := volume.ReadHead(ctx, s, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	ask := lease.HTTPEpochAskToken(time.Second, adminToken)
	if err := lease.HTTPEpochAskToken(time.Second, "")(ctx, rec, r.ID.String(), h.Epoch+1, "k"); !errors.Is(err, lease.ErrUnauthorized) {
		t.Errorf("an ask without the token: %v", err)
	}
	for range 2 {
		if err := ask(ctx, rec, r.ID.String(), h.Epoch+1, "k"); err != nil {
			t.Fatal(err)
		}
	}
	nh, _, err := volume.ReadHead(ctx, s, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if nh.Epoch != h.Epoch+1 || nh.Unsealed != 0 {
		t.Errorf("head after two asks for epoch %d: epoch %d, unsealed %d", h.Epoch+1, nh.Epoch, nh.Unsealed)
	}
	nrec, _, err := a.d.mgr.Leases.Read(ctx, r.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	if nrec.Term != rec.Term || nrec.Owner != "a" || role(a, "v") != "writer" {
		t.Errorf("lease after the asks: %+v (was %+v), role %s", nrec, rec, role(a, "v"))
	}
	other := rec
	other.Addr = b.admin.Listener.Addr().String()
	if err := ask(ctx, other, r.ID.String(), nh.Epoch+1, "k"); !errors.Is(err, lease.ErrNotHolder) {
		t.Errorf("an ask of a follower: %v", err)
	}
	if err := ea.WriteAt(ctx, []byte("after"), 4096, false); err != nil {
		t.Fatal(err)
	}
	if err := ea.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, ea, 0, 6); string(got) != "before" {
		t.Errorf("reads %q", got)
	}
}

// TestBeginEpochAskBeyond: an ask for an epoch more than one past the
// writer's (a huge at_least, or an asker that read a head this writer
// is behind) begins at most one and is not answered as done: the
// answer's contract (lease.EpochPath) is an epoch at least the one asked
// for.
func TestBeginEpochAskBeyond(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	a := newNode(t, s, "a", time.Hour)
	r, err := a.d.mgr.CreateVolume(ctx, "v", 1<<20, 16)
	if err != nil {
		t.Fatal(err)
	}
	ea := a.open(t, "v")
	if err := ea.WriteAt(ctx, []byte("before"), 0, false); err != nil {
		t.Fatal(err)
	}
	rec, _, err := a.d.mgr.Leases.Read(ctx, r.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := volume.ReadHead(ctx, s, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	ask := lease.HTTPEpochAskToken(time.Second, adminToken)
	for _, at := range []uint64{h.Epoch + 5, math.MaxUint64} {
		if err := ask(ctx, rec, r.ID.String(), at, "k"); err == nil {
			t.Errorf("an ask for epoch %d of a writer in %d was answered as done", at, h.Epoch)
		}
	}
	if err := ask(ctx, rec, r.ID.String(), 0, strings.Repeat("k", 10000)); err == nil {
		t.Error("an ask with a key of 10000 bytes (kept in memory) was taken")
	}
	if err := ea.WriteAt(ctx, []byte("after"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := ea.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}
