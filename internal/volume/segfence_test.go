package volume

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestSegLogLateCreateFenced (issue 13): an old writer's segment create
// that reaches the store after a taker fenced the chain (in flight across
// the takeover, or a retry of a create of unknown outcome) is refused
// there: the name holds the fence, the old writer's flush fails with
// ErrFenced without looking at the head, and the taker reads none of it.
func TestSegLogLateCreateFenced(t *testing.T) {
	for _, mode := range []string{"in flight", "retry"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			s := newOpStore()
			id, old := newSegVolume(t, s, 3)
			if err := old.WriteAt(ctx, pattern(4096, 7), 0, false); err != nil {
				t.Fatal(err)
			}
			if err := old.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			var taker *Volume
			var late error
			var fenced string
			tries, taking := 0, false
			s.onCreate = func(name string, data []byte) (objstore.Version, error) {
				if taking {
					// (The taker's own creates, and the old writer's.)
					if name == fenced {
						late = func() error { _, err := s.Store.Create(ctx, name, data); return err }()
						return 0, late
					}
					return s.Store.Create(ctx, name, data)
				}
				tries++
				if mode == "retry" && tries == 1 {
					return 0, objstore.ErrTimeout // lost, and tried again below
				}
				fenced, taking = name, true
				var err error
				taker, err = Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
				if err != nil {
					t.Fatal(err)
				}
				late = func() error { _, err := s.Store.Create(ctx, name, data); return err }()
				return 0, late
			}
			if err := old.WriteAt(ctx, pattern(4096, 9), int64(bs), false); err != nil {
				t.Fatal(err)
			}
			s.take()
			err := old.Flush(ctx)
			if !errors.Is(err, ErrFenced) {
				t.Fatalf("the old writer's flush: %v, want ErrFenced", err)
			}
			if taker == nil {
				t.Fatal("no takeover")
			}
			if !errors.Is(late, objstore.ErrExists) {
				t.Fatalf("the old writer's late create: %v, want ErrExists (the taker's fence)", late)
			}
			if b, _, err := s.Store.Get(ctx, fenced); err != nil || !isFence(b) {
				t.Fatalf("%s: %v, want the taker's fence", fenced, err)
			}
			if err := old.Flush(ctx); !errors.Is(err, ErrFenced) {
				t.Fatalf("the old writer's next flush: %v, want ErrFenced", err)
			}
			if got := readAll(t, taker); got[0] != 7 || got[bs] != 1 {
				t.Fatalf("taker reads %d at 0 (want 7, flushed) and %d in block 1 (want 1: the stale flush failed)", got[0], got[bs])
			}
			if err := taker.Close(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSegLogOldCreateWinsFence (issue 13): the old writer's segment
// create lands after the taker read the chain to its end but before the
// taker's fence at that name: the fence's create fails, the taker reads
// the segment (and the commit in it) and fences past it. The old
// writer's flush succeeds and the taker holds its write; the old
// writer's next segment meets the fence.
func TestSegLogOldCreateWinsFence(t *testing.T) {
	ctx := context.Background()
	s := newOpStore()
	id, old := newSegVolume(t, s, 3)
	if err := old.WriteAt(ctx, pattern(4096, 7), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := old.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var (
		taker   *Volume
		openErr error
		segName string
		segData []byte
		segErr  error
		fenceAt int
	)
	done, landed := make(chan struct{}), make(chan struct{})
	land := func() { _, segErr = s.Store.Create(ctx, segName, segData) }
	s.onCreate = func(name string, data []byte) (objstore.Version, error) {
		s.mu.Lock()
		first := segName == ""
		if first {
			segName, segData = name, bytes.Clone(data)
		}
		own := name == segName
		s.mu.Unlock()
		switch {
		case first:
			go func() {
				defer close(done)
				taker, openErr = Open(ctx, s, id, OpenOptions{Writable: true, Log: true, NewEpoch: true})
			}()
			select {
			case <-landed:
			case <-done:
				land() // (no fence was tried)
			}
			return 0, segErr
		case own:
			// The taker fences the old writer's next segment: the
			// old writer's create lands first.
			fenceAt++
			if fenceAt == 1 {
				land()
				close(landed)
			}
		}
		return s.Store.Create(ctx, name, data)
	}
	if err := old.WriteAt(ctx, pattern(4096, 9), int64(bs), false); err != nil {
		t.Fatal(err)
	}
	if err := old.Flush(ctx); err != nil {
		t.Fatalf("the old writer's flush, whose segment the taker read: %v", err)
	}
	<-done
	if openErr != nil {
		t.Fatal(openErr)
	}
	if got := readAll(t, taker); got[0] != 7 || got[bs] != 9 {
		t.Fatalf("taker reads %d at 0 and %d in block 1, want 7 and 9 (both flushed)", got[0], got[bs])
	}
	wantFencedFlush(t, old, pattern(4096, 11), 2*int64(bs), "the old writer's next flush")
	if got := readAll(t, taker); got[2*bs] != 1 {
		t.Fatalf("taker reads %d in block 2, want 1 (the old writer's flush after the fence failed)", got[2*bs])
	}
	if err := taker.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
