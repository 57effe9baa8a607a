package gc_test

import (
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestGraceMinimum: the library refuses a grace period shorter than the
// writers' flush check covers, before it takes the lock.
func TestGraceMinimum(t *testing.T) {
	s := objstore.NewMem()
	m, _ := setup(s)
	for _, g := range []time.Duration{time.Nanosecond, time.Minute, gc.MinGrace - 1, -time.Hour} {
		_, err := m.GC(ctx, gc.Options{Grace: g})
		if !errors.Is(err, gc.ErrGraceTooShort) {
			t.Errorf("grace %s: %v", g, err)
		}
	}
	if _, err := m.GC(ctx, gc.Options{Grace: gc.MinGrace}); err != nil {
		t.Fatalf("grace at the minimum: %v", err)
	}
	if gc.MinGrace <= 15*time.Minute || gc.DefaultGrace < gc.MinGrace {
		t.Fatalf("minimum grace %s does not cover the writers' 15-minute check, or the default %s is below it", gc.MinGrace, gc.DefaultGrace)
	}
}
