package move

import (
	"errors"
	"math/rand"
	"testing"

	"github.com/archipelago-go/archip/internal/manage"
)

// TestMoveSwitchAfterCancelAndNewMove: a mover stalled before its switch
// wakes after its move was cancelled and another move to the same pool
// swapped the record again and died before copying. Its cut-over and
// walks were for the record it swapped, not that one: blocks written
// after the cancel (in the source) are in no walk of it, so it must not
// switch the record to the target (the rerun would find the move done
// with those blocks only in the source); it fails, and a rerun finishes.
func TestMoveSwitchAfterCancelAndNewMove(t *testing.T) {
	f := newKind(t, "mem")
	at, resume := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := Move(ctx, f.m, "v", "b", Options{Hook: func(step string) error {
			if step == StepSwitch {
				at <- struct{}{}
				<-resume
			}
			return nil
		}})
		done <- err
	}()
	<-at
	if _, err := Cancel(ctx, f.m, "v", Options{}); err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewSource(11))
	f.write(t, "v", 6*bs, rnd, bs) // back in a: only there
	f.want["v"] = manage.ReadT(t, f.m, "v", 0, -1)
	if _, err := Move(ctx, f.m, "v", "b", Options{Hook: crashAt(StepCopy, 1)}); !errors.Is(err, errCrash) {
		t.Fatalf("second move: %v", err)
	}
	close(resume)
	if err := <-done; !errors.Is(err, ErrMoving) {
		t.Errorf("the stalled mover's switch after its move was cancelled and begun again: %v, want ErrMoving", err)
	}
	f.check(t)
	if _, err := Move(ctx, f.m, "v", "b", Options{}); err != nil {
		t.Fatal(err)
	}
	f.inPool(t, "v", "b")
	f.check(t)
}
