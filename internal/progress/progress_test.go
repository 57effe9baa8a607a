package progress

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// TestRecordLifecycle: a record is in the store from Start, shows each
// new phase at once, is gone after End; a record whose operation died
// is ignored once expired and deleted by the next Start.
func TestRecordLifecycle(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	clk := &clock{t: time.Unix(1e9, 0)}
	o := Options{Now: clk.now, Every: time.Hour}
	r := Start(ctx, s, KindGC, "", o)
	list := func() []Record {
		t.Helper()
		recs, err := List(ctx, s, clk.now())
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	if recs := list(); len(recs) != 1 || recs[0].Kind != KindGC || recs[0].Phase != "start" {
		t.Fatalf("after Start: %+v", recs)
	}
	r.GC()("mark", 0)
	r.GC()("mark", 7)
	if recs := list(); len(recs) != 1 || recs[0].Phase != "mark" || recs[0].Counts["heads_marked"] != 0 {
		t.Fatalf("after a new phase: %+v (counts within a phase wait for the next write)", recs)
	}
	r.GC()("sweep", 0)
	if recs := list(); recs[0].Phase != "sweep" || recs[0].Counts["heads_marked"] != 7 {
		t.Fatalf("after the sweep started: %+v, want the mark's count", recs)
	}
	r.End()
	r.End()
	if recs := list(); len(recs) != 0 {
		t.Fatalf("after End: %+v", recs)
	}

	dead := Start(ctx, s, KindMove, "v", o)
	dead.halt() // as a crash: no renewal, no End
	other := Start(ctx, s, KindMigrate, "a to b", o)
	if recs := list(); len(recs) != 2 {
		t.Fatalf("two operations at once: %+v", recs)
	}
	clk.add(TTL)
	other.Set("copy", nil)
	if recs := list(); len(recs) != 1 || recs[0].Kind != KindMigrate || recs[0].Phase != "copy" {
		t.Fatalf("a dead operation's record past its expiry beside a live one: %+v, want the live one only", recs)
	}
	other.End()
	clk.add(TTL)
	r = Start(ctx, s, KindMove, "w", o)
	defer r.End()
	b, _, _ := s.Get(ctx, Name)
	var cur running
	json.Unmarshal(b, &cur)
	if len(cur.Operations) != 1 || cur.Operations[0].Target != "w" {
		t.Fatalf("records after a write: %+v, want the dead one dropped", cur.Operations)
	}
}

// halt stops the renewals without deleting the record (a crash).
func (r *Reporter) halt() {
	r.once.Do(func() {
		close(r.stop)
		<-r.done
	})
}
