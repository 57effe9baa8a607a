package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/lease"
)

// TestCLILeaseBreakWaits: break by default waits for the holder's expiry
// (plus drift) and says so; the next write takes the lease over. The
// holder here has a short TTL, so the wait is short.
func TestCLILeaseBreakWaits(t *testing.T) {
	ctx := context.Background()
	store := "file://" + filepath.Join(t.TempDir(), "store")
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "1M")
	m, err := (&globals{store: store}).manager(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := m.Lookup(ctx, "v")
	holder, err := lease.NewManager(m.Store, lease.Config{Node: "holder", Addr: "127.0.0.1:1", TTL: 300 * time.Millisecond, MaxDrift: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l, err := holder.Acquire(ctx, r.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	expires := l.Record().Expires
	out, errs, code := cli(t, store, nil, "--json", "lease", "break", "v")
	if code != 0 || !strings.Contains(errs, "waiting") {
		t.Fatalf("break: exit %d, stderr %q", code, errs)
	}
	var rep breakReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Was != "held" || !rep.Broken || rep.Now || rep.Record.Owner != "holder" {
		t.Fatalf("break report %q: %+v, %v", out, rep, err)
	}
	if !rep.FreeAt.After(expires) || time.Now().Before(rep.FreeAt) {
		t.Fatalf("break returned at %s; free at %s, the holder's expiry %s", time.Now(), rep.FreeAt, expires)
	}
	if err := l.Renew(ctx); err == nil {
		t.Fatal("the broken holder renewed its lease")
	}
	var st leaseState
	json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "lease", "show", "v")), &st)
	if st.State != "broken" {
		t.Fatalf("lease after break: %+v", st)
	}
	mustCLI(t, store, []byte("data"), "volume", "write", "v", "--offset", "0")
	json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "lease", "show", "v")), &st)
	if st.State != "released" || st.Record.Term != 2 {
		t.Fatalf("lease after the next write: %+v", st)
	}
	if out := mustCLI(t, store, nil, "lease", "break", "v"); !strings.Contains(out, "nothing to break") {
		t.Fatalf("break of a released lease: %q", out)
	}
}

// TestCLILeaseCorrupt: a corrupt record is shown as such, writes say to
// break it, and break clears it.
func TestCLILeaseCorrupt(t *testing.T) {
	ctx := context.Background()
	store := "file://" + filepath.Join(t.TempDir(), "store")
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "1M")
	m, err := (&globals{store: store}).manager(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := m.Lookup(ctx, "v")
	ver, err := m.Store.Put(ctx, lease.Name(r.ID.String()), []byte("\x00garbage"))
	if err != nil {
		t.Fatal(err)
	}
	if out := mustCLI(t, store, nil, "lease", "show", "v"); !strings.Contains(out, "corrupt") || !strings.Contains(out, "archip lease break v") {
		t.Fatalf("lease show of a corrupt record: %q", out)
	}
	if _, errs, code := cli(t, store, []byte("data"), "volume", "write", "v", "--offset", "0"); code != 1 || !strings.Contains(errs, "archip lease break") {
		t.Fatalf("write over a corrupt lease: exit %d, %q", code, errs)
	}
	out, errs, code := cli(t, store, nil, "--json", "lease", "break", "v", "--now")
	var rep breakReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || rep.Was != "corrupt" || !rep.Broken || rep.Error == "" || !strings.Contains(errs, "warning") {
		t.Fatalf("break --now of a corrupt record: exit %d, %q, %q", code, out, errs)
	}
	mustCLI(t, store, []byte("data"), "volume", "write", "v", "--offset", "0")
	var st leaseState
	json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "lease", "show", "v")), &st)
	if st.State != "released" || st.Record.Term <= uint64(ver) {
		t.Fatalf("lease after the next write: %+v (the corrupt record was version %d)", st, ver)
	}
}
