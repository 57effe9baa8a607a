package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/gc"
)

// cli runs archip with args against store and returns stdout, stderr
// and the exit code.
func cli(t *testing.T, store string, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	g := &globals{stdin: bytes.NewReader(stdin), stdout: &out, stderr: &errb}
	code := run(context.Background(), append([]string{"--store", store}, args...), g)
	return out.String(), errb.String(), code
}

func mustCLI(t *testing.T, store string, stdin []byte, args ...string) string {
	t.Helper()
	out, errs, code := cli(t, store, stdin, args...)
	if code != 0 {
		t.Fatalf("archip %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

func TestCLIWorkflow(t *testing.T) {
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	img := bytes.Repeat([]byte("archipelago!"), 300_000) // 3.6 MB, not block aligned
	imgPath := filepath.Join(dir, "img.raw")
	os.WriteFile(imgPath, img, 0o644)

	mustCLI(t, store, nil, "image", "import", "--block-size", "64K", imgPath, "base")
	mustCLI(t, store, nil, "volume", "clone", "base", "vm", "--size", "8M")
	mustCLI(t, store, []byte("hello"), "volume", "write", "vm", "--offset", "1M")
	if got := mustCLI(t, store, nil, "volume", "read", "vm", "--offset", "1M", "--length", "5"); got != "hello" {
		t.Fatalf("read back %q", got)
	}
	mustCLI(t, store, nil, "volume", "snapshot", "vm", "vm@1")
	mustCLI(t, store, []byte("world"), "volume", "write", "vm", "--offset", "1M")
	if got := mustCLI(t, store, nil, "volume", "read", "vm@1", "--offset", "1M", "--length", "5"); got != "hello" {
		t.Fatalf("snapshot reads %q", got)
	}

	var page struct {
		Records []struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
			Size int64  `json:"size"`
		} `json:"records"`
		Next string `json:"next"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "volume", "list")), &page); err != nil {
		t.Fatal(err)
	}
	list := page.Records
	if len(list) != 3 || list[0].Name != "base" || list[1].Name != "vm" || list[1].Size != 8<<20 || list[2].Kind != "snapshot" {
		t.Fatalf("list = %+v", list)
	}
	var diff []struct{ Offset, Length int64 }
	json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "volume", "diff", "vm@1", "vm")), &diff)
	if len(diff) != 1 || diff[0].Offset != 1<<20 || diff[0].Length != 64<<10 {
		t.Fatalf("diff = %+v", diff)
	}
	var info struct {
		Parent   string   `json:"parent_name"`
		Children []string `json:"children"`
	}
	json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "volume", "info", "vm")), &info)
	if info.Parent != "base" || len(info.Children) != 1 {
		t.Fatalf("info = %+v", info)
	}

	out := filepath.Join(dir, "out.raw")
	mustCLI(t, store, nil, "image", "export", "base", out)
	if b, _ := os.ReadFile(out); !bytes.Equal(b, img) {
		t.Fatal("exported image differs")
	}
	if _, _, code := cli(t, store, nil, "image", "export", "base", out); code != 2 {
		t.Fatalf("export over an existing file: exit %d", code)
	}

	var st struct {
		DedupRatio float64 `json:"dedup_ratio"`
	}
	json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "store", "stats")), &st)
	if st.DedupRatio <= 1 {
		t.Fatalf("dedup ratio %v with a clone and a snapshot of one image", st.DedupRatio)
	}
	mustCLI(t, store, nil, "volume", "rename", "vm", "vm2")
	mustCLI(t, store, nil, "volume", "remove", "base")
	if got := mustCLI(t, store, nil, "volume", "read", "vm2", "--length", "12"); got != "archipelago!" {
		t.Fatalf("clone after its image was removed reads %q", got)
	}

	// Garbage collection: removing the snapshot leaves the blocks that vm2
	// rewrote since unreferenced.
	mustCLI(t, store, nil, "volume", "remove", "vm@1")
	var rep struct {
		Examined int64 `json:"examined"`
		Deleted  struct {
			Objects int64 `json:"objects"`
		} `json:"deleted"`
	}
	ageStore(t, filepath.Join(dir, "store"), 2*gc.MinGrace)
	json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "gc", "--dry-run", "--grace", gc.MinGrace.String())), &rep)
	if rep.Examined == 0 || rep.Deleted.Objects == 0 {
		t.Fatalf("gc --dry-run: %+v", rep)
	}
	mustCLI(t, store, nil, "gc", "--grace", gc.MinGrace.String())
	if got := mustCLI(t, store, nil, "volume", "read", "vm2", "--offset", "1M", "--length", "5"); got != "world" {
		t.Fatalf("after gc the volume reads %q", got)
	}
	if _, _, code := cli(t, store, nil, "gc", "--grace", "0s"); code != 2 {
		t.Fatalf("gc --grace 0s: exit %d", code)
	}
}

func TestCLIErrors(t *testing.T) {
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "1M", "--block-size", "64K")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"volume", "create", "x"}, 2, "--size is required"},
		{[]string{"volume", "create", "x", "--size", "12Q"}, 2, "unknown suffix"},
		{[]string{"volume", "create", "x", "--size", "1G", "--block-size", "3M"}, 2, "power of two"},
		{[]string{"volume", "create", "v", "--size", "1M"}, 1, "already in use"},
		{[]string{"volume", "create", "bad name", "--size", "1M"}, 2, "invalid name"},
		{[]string{"volume", "info", "nosuch"}, 1, "no volume"},
		{[]string{"volume", "info"}, 2, "takes 1 argument"},
		{[]string{"volume", "resize", "v", "64K"}, 2, "--allow-shrink"},
		{[]string{"volume", "read", "v", "--offset", "2M", "--length", "1"}, 2, "past the end"},
		{[]string{"volume", "frobnicate"}, 2, "unknown command"},
		{[]string{"volume", "list", "--nosuchflag"}, 2, "unknown flag"},
	} {
		_, errs, code := cli(t, store, nil, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.msg) {
			t.Errorf("archip %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.msg)
		}
	}
	if _, errs, code := cli(t, "file://"+filepath.Join(dir, "none"), nil, "volume", "list"); code != 1 || !strings.Contains(errs, "no store") {
		t.Errorf("list on a missing store: exit %d %q", code, errs)
	}
	if _, errs, code := cli(t, "ftp://x", nil, "volume", "list"); code != 1 || !strings.Contains(errs, "unknown scheme") {
		t.Errorf("unknown scheme: exit %d %q", code, errs)
	}
}

func TestCLILease(t *testing.T) {
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "1M")
	if out := mustCLI(t, store, nil, "lease", "show", "v"); !strings.Contains(out, "state:") || !strings.Contains(out, "none") {
		t.Fatalf("lease show of a never-written volume: %q", out)
	}
	mustCLI(t, store, []byte("data"), "volume", "write", "v", "--offset", "0")
	var st leaseState
	if err := json.Unmarshal([]byte(mustCLI(t, store, nil, "lease", "show", "v", "--json")), &st); err != nil || st.State != "released" || st.Record.Term != 1 {
		t.Fatalf("lease after a write command: %+v, %v", st, err)
	}
	// Someone holds it: show names them; break --now frees it at once,
	// with a warning (more in cmd_lease_test.go).
	m, err := (&globals{store: store}).manager(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := m.Lookup(context.Background(), "v")
	if _, err := m.Leases.Acquire(context.Background(), r.ID.String()); err != nil {
		t.Fatal(err)
	}
	if out := mustCLI(t, store, nil, "lease", "show", "v"); !strings.Contains(out, "held") || !strings.Contains(out, "cli:") {
		t.Fatalf("lease show of a held lease: %q", out)
	}
	if out, errs, code := cli(t, store, nil, "lease", "break", "v", "--force"); code != 0 || !strings.Contains(out, "broke") || !strings.Contains(errs, "warning") {
		t.Fatalf("break --force: exit %d, %q, %q", code, out, errs)
	}
	for _, args := range [][]string{{"lease", "show", "nosuch"}, {"lease", "show"}, {"lease", "show", "bad/name"}} {
		if _, _, code := cli(t, store, nil, args...); code == 0 {
			t.Errorf("archip %v succeeded", args)
		}
	}
	mustCLI(t, store, nil, "volume", "snapshot", "v", "s")
	if _, errs, code := cli(t, store, nil, "lease", "show", "s"); code == 0 || !strings.Contains(errs, "no lease") {
		t.Errorf("lease show of a snapshot: exit %d, %q", code, errs)
	}
}
