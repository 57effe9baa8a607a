package progress

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestStalledStoreDoesNotStallOperation: with the store holding every
// read and write of the records, the operation's calls (Start, new
// phases, SetCurrent, End) still return: progress is best effort and
// must not hold up the gc or move that reports it.
func TestStalledStoreDoesNotStallOperation(t *testing.T) {
	f := objstore.NewFaulty(objstore.NewMem())
	f.Add(objstore.Rule{Prefix: Name, Delay: time.Hour})
	o := Options{Every: time.Hour, Wait: time.Millisecond, Timeout: 20 * time.Millisecond}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := Start(context.Background(), f, KindMigrate, "a to b", o)
		for i := range 50 {
			r.Set(fmt.Sprint("phase", i), map[string]int64{"n": int64(i)})
			r.SetCurrent(fmt.Sprint("v", i))
		}
		r.End()
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the operation's progress calls wait for a stalled store")
	}
}

// TestSlowStoreRecordsStillWritten: a write that outlasts Wait goes on,
// and the record reaches the store once the store answers.
func TestSlowStoreRecordsStillWritten(t *testing.T) {
	ctx := context.Background()
	f := objstore.NewFaulty(objstore.NewMem())
	release := make(chan struct{})
	f.Add(objstore.Rule{Op: objstore.OpGet, Prefix: Name, Count: 1, Hook: func(context.Context, objstore.Op, string) { <-release }})
	r := Start(ctx, f, KindGC, "", Options{Every: time.Hour, Wait: time.Millisecond})
	r.Set("mark", nil) // returns, the store still holding the first write
	close(release)
	for i := 0; ; i++ {
		recs, err := List(ctx, f, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 1 && recs[0].Phase == "mark" {
			break
		}
		if i == 3000 {
			t.Fatalf("records once the store answers: %+v, want the gc in phase mark", recs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.End()
	if recs, _ := List(ctx, f, time.Now()); len(recs) != 0 {
		t.Fatalf("after End: %+v", recs)
	}
}

// TestObjectSizeBounded: however many operations run at once, the
// object holds at most MaxRecords records.
func TestObjectSizeBounded(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	o := Options{Every: time.Hour}
	var rs []*Reporter
	for i := range MaxRecords + 30 {
		rs = append(rs, Start(ctx, s, KindMove, fmt.Sprint("v", i), o))
	}
	defer func() {
		for _, r := range rs {
			r.End()
		}
	}()
	b, _, err := s.Get(ctx, Name)
	if err != nil {
		t.Fatal(err)
	}
	var cur running
	if err := json.Unmarshal(b, &cur); err != nil {
		t.Fatal(err)
	}
	if len(cur.Operations) > MaxRecords {
		t.Fatalf("%d records in %s (%d bytes), want at most %d", len(cur.Operations), Name, len(b), MaxRecords)
	}
}

// TestConcurrentWritersKeepEachOthers: operations starting, reporting
// and ending at once keep each other's records.
func TestConcurrentWritersKeepEachOthers(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	o := Options{Every: time.Hour}
	const n = 8
	rs := make([]*Reporter, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs[i] = Start(ctx, s, KindMove, fmt.Sprint("v", i), o)
			rs[i].Set("copy", map[string]int64{"blocks_copied": int64(i)})
		}()
	}
	wg.Wait()
	recs, err := List(ctx, s, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n {
		t.Fatalf("%d records of %d operations: %+v", len(recs), n, recs)
	}
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); rs[i].End() }()
	}
	wg.Wait()
	if recs, _ := List(ctx, s, time.Now()); len(recs) != 0 {
		t.Fatalf("after every End: %+v", recs)
	}
}

// TestListDropsDuplicateIDs: an object holding two records of one ID
// (garbage) lists one, so that metrics never show one series twice.
func TestListDropsDuplicateIDs(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	now := time.Unix(1e9, 0)
	rec := Record{ID: "gc-1", Kind: KindGC, Phase: "mark", Updated: now, Expires: now.Add(TTL)}
	later := rec
	later.Phase, later.Updated = "sweep", now.Add(time.Second)
	b, _ := json.Marshal(running{Operations: []Record{rec, later, rec}})
	if _, err := s.Put(ctx, Name, b); err != nil {
		t.Fatal(err)
	}
	recs, err := List(ctx, s, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Phase != "sweep" {
		t.Fatalf("records: %+v, want the latest of ID gc-1 only", recs)
	}
}

// TestFailingStoreLogsOnce: writes that keep failing log once, not once
// each (every few seconds for as long as a gc runs); one that succeeds
// again lets the next failure log.
func TestFailingStoreLogsOnce(t *testing.T) {
	f := objstore.NewFaulty(objstore.NewMem())
	f.Add(objstore.Rule{Op: objstore.OpGet, Prefix: Name, Err: objstore.ErrTimeout})
	var mu sync.Mutex
	var logs []string
	o := Options{Every: time.Hour, Wait: time.Minute, Logf: func(format string, args ...any) {
		mu.Lock()
		logs = append(logs, fmt.Sprintf(format, args...))
		mu.Unlock()
	}}
	r := Start(context.Background(), f, KindGC, "", o)
	for i := range 10 {
		r.Set(fmt.Sprint("phase", i), nil)
	}
	mu.Lock()
	if len(logs) != 1 {
		t.Errorf("%d log lines for 11 failed writes, want 1: %q", len(logs), logs)
	}
	logs = nil
	mu.Unlock()
	f.Reset()
	r.Set("ok", nil)
	f.Add(objstore.Rule{Op: objstore.OpGet, Prefix: Name, Err: objstore.ErrTimeout})
	r.Set("failing again", nil)
	r.Set("still failing", nil)
	f.Reset()
	r.End()
	mu.Lock()
	defer mu.Unlock()
	if len(logs) != 1 {
		t.Errorf("after a write that succeeded, two failed: %d log lines, want 1: %q", len(logs), logs)
	}
}

// TestEndRetriesAfterFailedWrite: a removal the store fails once (a
// timeout) is tried again within Options.Timeout, so that a finished
// operation does not show as running until its record expires.
func TestEndRetriesAfterFailedWrite(t *testing.T) {
	ctx := context.Background()
	f := objstore.NewFaulty(objstore.NewMem())
	r := Start(ctx, f, KindMove, "v", Options{Every: time.Hour, Timeout: time.Minute})
	f.Add(objstore.Rule{Op: objstore.OpSwap, Prefix: Name, Count: 1, Err: objstore.ErrTimeout})
	r.End()
	if recs, err := List(ctx, f, time.Now()); err != nil || len(recs) != 0 {
		t.Fatalf("after End, its first write failed: %+v, %v; want none", recs, err)
	}
}

// TestFailedWriteBacksOff: after a write failed (the store refuses it,
// or the object is full), counts and renewals wait TTL/3 before the
// next try, rather than reading the object at every tick: ten thousand
// operations beyond the bound would read it thousands of times a
// second.
func TestFailedWriteBacksOff(t *testing.T) {
	f := objstore.NewFaulty(objstore.NewMem())
	var mu sync.Mutex
	gets := 0
	f.Add(objstore.Rule{Op: objstore.OpGet, Prefix: Name, Err: objstore.ErrTimeout, Hook: func(context.Context, objstore.Op, string) {
		mu.Lock()
		gets++
		mu.Unlock()
	}})
	clk := &clock{t: time.Unix(1e9, 0)}
	r := Start(context.Background(), f, KindMove, "v", Options{Now: clk.now, Every: time.Millisecond})
	r.Set("start", map[string]int64{"blocks_copied": 1})
	time.Sleep(200 * time.Millisecond) // ticks, the clock standing still
	mu.Lock()
	n := gets
	mu.Unlock()
	if n != 1 {
		t.Errorf("%d reads of the object with the clock standing still after a failed write, want 1", n)
	}
	f.Reset()
	clk.add(TTL / 3)
	for i := 0; ; i++ {
		if recs, _ := List(context.Background(), f, clk.now()); len(recs) == 1 && recs[0].Counts["blocks_copied"] == 1 {
			break
		}
		if i == 3000 {
			t.Fatal("the record is not written once TTL/3 passed after the failure")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.End()
}

// TestSetDuringWrites: counts set while the record is being written
// (run with -race).
func TestSetDuringWrites(t *testing.T) {
	r := Start(context.Background(), objstore.NewMem(), KindMove, "v", Options{Every: time.Millisecond})
	deadline := time.Now().Add(300 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		r.Set("copy", map[string]int64{"blocks_copied": int64(i), fmt.Sprint("k", i%7): 1})
		if i%100 == 0 {
			r.SetCurrent(fmt.Sprint("v", i))
		}
	}
	r.End()
}
