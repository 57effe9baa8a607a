package pools

import (
	"context"
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// settling settles as RADOS does (its Sync only waits; a write that
// failed after it returned is reported by Settle), over a mem store; it
// records what it settled and fails the names in fail.
type settling struct {
	*objstore.Mem
	settled *[]string
	fail    map[string]error
}

func (s settling) Settle(ctx context.Context, name string) error {
	*s.settled = append(*s.settled, name)
	return s.fail[name]
}
func (settling) SyncWaitsOnly() bool { return true }

// A router settles a name on every part that settles (a RADOS data pool
// behind a file metadata store) and returns the error of the one whose
// write failed; its Sync only waits when every part's does.
func TestSettleRoutes(t *testing.T) {
	var settled []string
	boom := errors.New("refused by the OSDs")
	blk := blockmap.PrivateEntry(blockmap.NewID(), 1, 1).ObjectName()
	data := settling{objstore.NewMem(), &settled, map[string]error{blk: boom}}
	log := blockmap.LogName(blockmap.NewID(), 1, 1)

	mixed := newTest(objstore.NewMem(), isData, data)
	st, ok := objstore.AsSettler(mixed)
	if !ok {
		t.Fatal("a router with a data pool that settles does not settle")
	}
	if err := st.Settle(ctx, blk); !errors.Is(err, boom) {
		t.Fatalf("Settle of a block in the settling pool: %v, want its error", err)
	}
	if err := st.Settle(ctx, log); err != nil {
		t.Fatalf("Settle of a log in the metadata store: %v", err)
	}
	// Every part that settles is asked, wherever a lookup would find the
	// name now (a move may have named another pool while the write was in
	// flight: TestReview11bSettleAfterMoveSwapAndEviction).
	if len(settled) != 2 || settled[0] != blk || settled[1] != log {
		t.Fatalf("settled %v, want %s then %s on the one part that settles", settled, blk, log)
	}
	if objstore.SyncWaits(mixed) {
		t.Fatal("a router whose metadata store fsyncs claims its Sync only waits")
	}
	if all := newTest(settling{objstore.NewMem(), &settled, nil}, isData, data); !objstore.SyncWaits(all) {
		t.Fatal("a router of parts whose Sync only waits does not say so")
	}
}
