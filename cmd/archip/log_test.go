package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServeLogJSON: with --log-format json every line archip serve logs
// is a JSON record, with the fields of its event.
func TestServeLogJSON(t *testing.T) {
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	mustCLI(t, store, nil, "store", "init")
	var errb lockedBuffer
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		g := &globals{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &errb}
		done <- run(ctx, []string{"--store", store, "--log-format", "json", "serve",
			"--nbd-listen", "unix:" + filepath.Join(dir, "nbd.sock")}, g)
	}()
	for !strings.Contains(errb.String(), `"serving"`) {
		select {
		case code := <-done:
			t.Fatalf("serve exited with %d: %s", code, errb.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	if code := <-done; code != 0 {
		t.Fatalf("serve exited with %d: %s", code, errb.String())
	}
	seen := map[string]map[string]any{}
	for _, l := range strings.Split(strings.TrimSpace(errb.String()), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("not a JSON record: %q: %v", l, err)
		}
		seen[r["msg"].(string)] = r
	}
	if r := seen["admin API"]; r == nil || r["level"] != "INFO" || !strings.HasPrefix(r["addr"].(string), "127.0.0.1:") || r["node"] == nil {
		t.Errorf("admin API record: %v", r)
	}
	if r := seen["serving"]; r == nil || r["frontend"] != "NBD" || r["store"] != store {
		t.Errorf("serving record: %v", r)
	}
	if seen["stopped; every volume flushed"] == nil {
		t.Errorf("no record of the stop in %v", seen)
	}
}

// TestLogFlags: an unknown level or format is a usage error.
func TestLogFlags(t *testing.T) {
	store := "file://" + filepath.Join(t.TempDir(), "store")
	for _, args := range [][]string{{"--log-format", "xml", "serve"}, {"--log-level", "loud", "serve"}} {
		if _, errs, code := cli(t, store, nil, args...); code != 2 || !strings.Contains(errs, args[0]) {
			t.Errorf("%v: exit %d, %q", args, code, errs)
		}
	}
}

// TestGCLogJSON: a gc run logs one JSON record with its counts.
func TestGCLogJSON(t *testing.T) {
	store := "file://" + filepath.Join(t.TempDir(), "store")
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "1M")
	_, errs, code := cli(t, store, nil, "--log-format", "json", "gc", "--dry-run")
	if code != 0 {
		t.Fatalf("gc: exit %d: %s", code, errs)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(errs)), &r); err != nil {
		t.Fatalf("gc's log %q: %v", errs, err)
	}
	if r["msg"] != "gc run" || r["level"] != "INFO" || r["dry_run"] != true || r["examined"] == nil || r["store"] != store {
		t.Errorf("gc record: %v", r)
	}
}
