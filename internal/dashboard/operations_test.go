package dashboard

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/progress"
)

// TestOperationsShown: a collection run as 'archip gc' runs it (its own
// manager and progress record, as another process would), stalled by a
// hook in its sweep, shows on the daemon's /metrics and on the activity
// page with its phase and counts; once it ended, neither shows it.
func TestOperationsShown(t *testing.T) {
	f := newFixture(t, 50)
	f.d.CacheOperations(0)
	ctx := context.Background()
	// Another process's view of the store: the record and the
	// collection go through the store, not through the daemon.
	m := f.d.Manager()
	swept, resume := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		rec := progress.Start(ctx, m.Store, progress.KindGC, "", progress.Options{Every: time.Hour})
		report := rec.GC()
		_, err := gc.Run(ctx, m.Store, gc.Options{Progress: func(phase string, n int64) {
			report(phase, n)
			if phase == "sweep" && n == 0 {
				close(swept)
				<-resume
			}
		}})
		// Ended before the test hears of it: the checks after the
		// gc ended raced a deferred End.
		rec.End()
		done <- err
	}()
	select {
	case <-swept:
	case err := <-done:
		t.Fatalf("gc ended before its sweep: %v", err)
	}
	metrics := f.get(t, "/metrics")
	for _, re := range []string{
		`archip_operations\{kind="gc"\} 1\n`, `archip_operations\{kind="move"\} 0\n`,
		`archip_operation_info\{host="[^"]*",id="gc-[0-9a-f]+",kind="gc",phase="sweep",target=""\} 1\n`,
		`archip_operation_progress\{count="heads_marked",id="gc-[0-9a-f]+",kind="gc",target=""\} [1-9]`,
		`archip_operation_started_timestamp_seconds\{id="gc-[0-9a-f]+",kind="gc",target=""\} [0-9.e+]+\n`,
	} {
		if !regexp.MustCompile(re).MatchString(metrics) {
			t.Errorf("/metrics during a gc lacks %s:\n%s", re, grepOps(metrics))
		}
	}
	act := f.get(t, "/ui/activity")
	if !regexp.MustCompile(`<tr><td>gc</td><td></td><td>sweep</td><td>(<div>[^<]*</div>)*<div>heads_marked: [1-9]`).MatchString(act) {
		t.Errorf("/ui/activity during a gc does not show it sweeping with its counts:\n%s", act)
	}

	close(resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	metrics = f.get(t, "/metrics")
	if !strings.Contains(metrics, `archip_operations{kind="gc"} 0`) || strings.Contains(metrics, "archip_operation_info") {
		t.Errorf("/metrics after the gc ended:\n%s", grepOps(metrics))
	}
	mustContain(t, "/ui/activity after the gc", f.get(t, "/ui/activity"), "none running")
}

func grepOps(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "operation") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
