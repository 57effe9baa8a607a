package daemon

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestChurnWithHandoffs: on two daemons sharing a store, many clients of
// one volume connect, write without flushing, read, and disconnect at
// once, so that handles open, close, get promoted after reads and hand
// the lease back and forth all the time. Nothing deadlocks, every write
// that was acknowledged is in the store at the end.
func TestChurnWithHandoffs(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	a, b := newNode(t, s, "a", time.Hour), newNode(t, s, "b", time.Hour)
	a.d.promoteAfter, b.d.promoteAfter = 3, 3
	if _, err := a.d.mgr.CreateVolume(ctx, "v", 4<<20, 16); err != nil {
		t.Fatal(err)
	}
	const clients, rounds = 3, 12
	var wg sync.WaitGroup
	for k, n := range []*node{a, b} {
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range rounds {
					e, release, err := n.d.Open(ctx, "v")
					if err != nil {
						t.Errorf("node %d client %d round %d: open: %v", k, c, i, err)
						return
					}
					off := int64((k*clients+c)*rounds+i) * 4096
					if err := e.WriteAt(ctx, []byte(fmt.Sprintf("%d-%d-%02d", k, c, i)), off, false); err != nil {
						t.Errorf("node %d client %d round %d: write: %v", k, c, i, err)
					}
					p := make([]byte, 512)
					for range 4 {
						if err := e.ReadAt(ctx, p, int64(i)*4096); err != nil {
							t.Errorf("node %d client %d round %d: read: %v", k, c, i, err)
						}
					}
					release()
				}
			}()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	within(t, done, "the clients")
	r := newNode(t, s, "reader", time.Hour).open(t, "v")
	for k := range 2 {
		for c := range clients {
			for i := range rounds {
				want := fmt.Sprintf("%d-%d-%02d", k, c, i)
				if got := readBack(t, r, int64((k*clients+c)*rounds+i)*4096, len(want)); string(got) != want {
					t.Errorf("write %s reads %q", want, got)
				}
			}
		}
	}
}
