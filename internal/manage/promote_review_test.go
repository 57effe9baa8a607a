package manage

import (
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/objstore"
)

type aheadClock time.Duration

func (c aheadClock) Now() time.Time { return time.Now().Add(time.Duration(c)) }

// TestTryOpenWriterTakesNothingOver: TryOpenWriter (a daemon's reader
// promoting itself to writer) does not take over a lease whose holder
// did not release it: on RADOS that fences the holder's whole
// connection, all its volumes, for a holder that may only have been slow
// to renew. (It took the expired lease over.)
func TestTryOpenWriterTakesNothingOver(t *testing.T) {
	s := objstore.NewMem()
	a := New(s)
	rec, err := a.CreateVolume(ctx, "vm1", 8*bs, 16)
	if err != nil {
		t.Fatal(err)
	}
	va, _, err := a.OpenWriter(ctx, rec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer va.Discard(ctx)
	leases, err := lease.NewManager(s, lease.Config{Node: "b", Clock: aheadClock(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	b := &Manager{Store: s, Catalog: catalog.New(s), Now: time.Now, Leases: leases}
	if v, _, err := b.TryOpenWriter(ctx, rec.ID, nil); !errors.Is(err, lease.ErrHeld) {
		if v != nil {
			v.Discard(ctx)
		}
		t.Fatalf("reader's promotion over an expired lease: %v, want lease.ErrHeld", err)
	}
}
