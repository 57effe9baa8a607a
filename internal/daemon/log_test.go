package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// syncBuffer is a buffer several goroutines log to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// records parses the JSON lines logged so far.
func (s *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("a log line is not JSON: %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// find returns the first record with msg, or nil.
func find(recs []map[string]any, msg string) map[string]any {
	for _, r := range recs {
		if r["msg"] == msg {
			return r
		}
	}
	return nil
}

// TestJSONLogEvents: a daemon logging JSON writes one parseable record
// per event, with its level and the volume's name: a volume opened, its
// lease taken, handed over to another node, and the volume closed.
func TestJSONLogEvents(t *testing.T) {
	ctx := context.Background()
	s := objstore.NewMem()
	a, b := newNode(t, s, "a", time.Hour), newNode(t, s, "b", time.Hour)
	var la, lb syncBuffer
	a.d.SetLogger(slog.New(slog.NewJSONHandler(&la, nil)))
	b.d.SetLogger(slog.New(slog.NewJSONHandler(&lb, nil)))
	if _, err := a.d.mgr.CreateVolume(ctx, "v", 1<<20, 16); err != nil {
		t.Fatal(err)
	}
	ea := a.open(t, "v")
	if err := ea.WriteAt(ctx, []byte("a"), 0, false); err != nil {
		t.Fatal(err)
	}
	vb, release, err := b.d.Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if err := vb.WriteAt(ctx, []byte("b"), 0, false); err != nil {
		t.Fatal(err)
	}
	release()
	for _, c := range []struct {
		log        *syncBuffer
		msg, level string
	}{
		{&la, "volume opened", "INFO"},
		{&la, "lease taken", "INFO"},
		{&la, "handed over", "INFO"},
		{&lb, "lease taken", "INFO"},
		{&lb, "volume closed", "INFO"},
	} {
		r := find(c.log.records(t), c.msg)
		if r == nil {
			t.Errorf("no %q record in %v", c.msg, c.log.records(t))
			continue
		}
		if r["level"] != c.level || r["volume"] != "v" || r["time"] == nil {
			t.Errorf("%q record: %v; want level %s and volume v", c.msg, r, c.level)
		}
	}
	if r := find(la.records(t), "lease taken"); r != nil && r["term"] == nil {
		t.Errorf("lease taken without its term: %v", r)
	}
}
