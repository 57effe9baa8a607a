//go:build ceph

package volume

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore/rados"
)

// TestReview11RadosFencedLoggedLateWrites: writer a (write log on, a
// fresh clone, so its writes are logged) flushes some writes, stalls
// past its lease, and b takes over (fencing a). a's late writes return
// (sent) or fail; no flush of a, however often retried, nor its Close,
// nor a FUA write, reports them durable, and b reads what it read at
// takeover.
func TestReview11RadosFencedLoggedLateWrites(t *testing.T) {
	defer setLog(true)()
	defer setLogBound(bs)() // the late writes take the log past its bound
	ctx := context.Background()
	ss := rados.OpenTestStores(t, 2)
	id := newClone(t, ss[0], 4)
	clkA, clkB := newTestClock(), newTestClock()
	a, _ := leasedWriter(t, ss[0], id.String(), "a", clkA)
	if !a.logOn {
		t.Fatal("a does not log")
	}
	if err := a.WriteAt(ctx, pattern(4096, 0x10), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	clkB.Advance(6 * time.Second)
	b, lb := leasedWriter(t, ss[1], id.String(), "b", clkB)
	if !lb.TookOver() {
		t.Fatal("b did not take the lease over")
	}
	atTakeover := make([]byte, 4*bs)
	if err := b.ReadAt(ctx, atTakeover, 0); err != nil {
		t.Fatal(err)
	}
	for k := range 12 {
		err := a.WriteAt(ctx, pattern(8192, byte(0x40+k)), int64(k*8192), k%5 == 4)
		if err != nil && !errors.Is(err, ErrFenced) {
			t.Fatalf("a's late write %d: %v, want nil or ErrFenced", k, err)
		}
		if err == nil && k%5 == 4 {
			t.Fatalf("a's late FUA write %d returned nil", k)
		}
	}
	for i := range 3 {
		if err := a.Flush(ctx); err == nil {
			t.Fatalf("a's flush %d after b took over returned nil", i)
		}
	}
	if err := a.Close(ctx); err == nil {
		t.Fatal("a's Close after b took over returned nil")
	}
	got := make([]byte, 4*bs)
	if err := b.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, atTakeover) {
		t.Fatal("b reads other bytes after a's late writes")
	}
}
