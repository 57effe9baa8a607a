package daemon

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/progress"
)

// TestScrapeDuringStalledOperationsRead: a scrape does not wait for a
// read of the operations' records that the store holds up: it shows the
// records read before (not expired) and counts a read error; one read
// at a time is in flight.
func TestScrapeDuringStalledOperationsRead(t *testing.T) {
	ctx := context.Background()
	d, s, _ := newHookDaemon(t)
	d.CacheOperations(0)
	d.ops.wait = time.Millisecond
	mx := NewMetrics(MetricsConfig{})
	d.UseMetrics(mx)
	rec := progress.Start(ctx, s, progress.KindMove, "v", progress.Options{Every: time.Hour})
	defer rec.End()
	rec.Set("copy", map[string]int64{"blocks_copied": 3})
	// The first read may outlast the millisecond on a loaded machine:
	// read until one has ended.
	for {
		if _, _, err := d.Operations(ctx); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	gets := make(chan struct{}, 10)
	unblock := make(chan struct{})
	s.setHook(func(op objstore.Op, name string) error {
		if op == objstore.OpGet && name == progress.Name {
			gets <- struct{}{}
			<-unblock
		}
		return nil
	})
	defer close(unblock)
	for i := range 3 {
		scraped := make(chan string)
		go func() {
			w := httptest.NewRecorder()
			mx.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
			scraped <- w.Body.String()
		}()
		var out string
		select {
		case out = <-scraped:
		case <-hitTimeout():
			t.Fatal("a scrape waited for a stalled read of the operations' records")
		}
		for _, want := range []string{`archip_operations{kind="move"} 1`, `count="blocks_copied",id="move-`,
			"archip_operations_read_errors_total " + string(rune('1'+i))} {
			if !strings.Contains(out, want) {
				t.Errorf("scrape %d during a stalled read lacks %s:\n%s", i, want, out)
			}
		}
	}
	if n := len(gets); n != 1 {
		t.Errorf("%d reads of the records in flight at once, want 1", n)
	}
}

// TestScrapeWithDuplicateRecords: an object of the operations' records
// that holds one ID twice (garbage) does not fail the scrape (one series
// collected twice fails a whole Prometheus gather).
func TestScrapeWithDuplicateRecords(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	d := New(manage.New(s), nil)
	d.CacheOperations(0)
	mx := NewMetrics(MetricsConfig{})
	d.UseMetrics(mx)
	now := time.Now()
	rec := progress.Record{ID: "gc-1", Kind: progress.KindGC, Phase: "mark", Updated: now, Expires: now.Add(progress.TTL)}
	b, _ := json.Marshal(map[string]any{"operations": []progress.Record{rec, rec}})
	if _, err := s.Put(ctx, progress.Name, b); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	mx.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != 200 || !strings.Contains(w.Body.String(), `archip_operations{kind="gc"} 1`) {
		t.Fatalf("scrape with one record twice in the object: %d\n%s", w.Code, w.Body.String())
	}
}
