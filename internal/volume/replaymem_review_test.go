package volume

import (
	"context"
	"strings"
	"testing"

	"golang.org/x/sync/semaphore"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// stepStore holds each read of a write log until the test lets it go,
// and tells the test its length.
type stepStore struct {
	*objstore.Faulty
	reads chan stepRead
}

type stepRead struct {
	name string
	n    int
	go_  chan struct{}
}

func (s *stepStore) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if strings.Contains(name, "/l/") {
		r := stepRead{name: name, n: len(p), go_: make(chan struct{})}
		s.reads <- r
		<-r.go_
	}
	return s.Faulty.ReadAt(ctx, name, p, off)
}

// TestLogReplayMemoryBounded: the windows of the log replays in flight
// at once (opens of many volumes, each replaying a log of several MiB)
// stay within replayMem, not logReadMax each. The replays advance in
// rounds, one read each, so that all are in flight together.
func TestLogReplayMemoryBounded(t *testing.T) {
	const vols, bound = 6, 3 << 20
	old := replayMem
	replayMem = semaphore.NewWeighted(bound)
	defer func() { replayMem = old }()
	base := objstore.NewMem()
	var ids []blockmap.ID
	for range vols {
		id := newClone(t, base, 8)
		w := openLogged(t, base, id, OpenOptions{})
		for i := range 48 {
			if err := w.WriteAt(ctx, pattern(bs, byte(i+1)), int64(i%8*bs), false); err != nil {
				t.Fatal(err)
			}
			if i%4 == 3 {
				if err := w.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		if n := w.mu.logs[len(w.mu.logs)-1].end; n < 3<<20 {
			t.Fatalf("a log of %d bytes", n)
		}
		w.Discard(ctx)
		ids = append(ids, id)
	}
	s := &stepStore{Faulty: objstore.NewFaulty(base), reads: make(chan stepRead)}
	type ev struct {
		read *stepRead
		vol  int
		err  error
	}
	evs := make(chan ev)
	for i, id := range ids {
		go func() {
			_, err := Open(ctx, s, id, OpenOptions{})
			evs <- ev{vol: i, err: err}
		}()
	}
	go func() {
		for r := range s.reads {
			evs <- ev{read: &r}
		}
	}()
	window := map[string]int{} // the largest read of each replay in flight
	active, peak := vols, 0
	for active > 0 {
		// A round: one event of each replay in flight (a read, or its end).
		var round []*stepRead
		for len(round) < active {
			e := <-evs
			if e.read == nil {
				if e.err != nil {
					t.Fatal(e.err)
				}
				active--
				continue
			}
			round = append(round, e.read)
			window[e.read.name] = max(window[e.read.name], e.read.n)
		}
		sum := 0
		for _, r := range round {
			sum += window[r.name]
		}
		peak = max(peak, sum)
		for _, r := range round {
			close(r.go_)
		}
	}
	close(s.reads)
	if limit := bound + vols*(bs+logReadChunk); peak > limit {
		t.Errorf("%d replays at once held windows of %d bytes, want at most %d", vols, peak, limit)
	}
}
