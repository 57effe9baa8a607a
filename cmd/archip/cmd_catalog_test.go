package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/objstore"
)

type listJSON struct {
	Records []struct {
		Name string `json:"name"`
	} `json:"records"`
	Next string `json:"next"`
}

// TestVolumeListPages: volume list --prefix --limit --after, and the
// continuation token of --json.
func TestVolumeListPages(t *testing.T) {
	store := "file://" + filepath.Join(t.TempDir(), "store")
	for _, n := range []string{"db-1", "vm-1", "vm-2", "vm-3", "vm-4", "vm-5"} {
		mustCLI(t, store, nil, "volume", "create", n, "--size", "64K")
	}
	var got []string
	after := ""
	pages := 0
	for {
		args := []string{"--json", "volume", "list", "--prefix", "vm-", "--limit", "2"}
		if after != "" {
			args = append(args, "--after", after)
		}
		var p listJSON
		if err := json.Unmarshal([]byte(mustCLI(t, store, nil, args...)), &p); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, r := range p.Records {
			got = append(got, r.Name)
		}
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	if fmt.Sprint(got) != "[vm-1 vm-2 vm-3 vm-4 vm-5]" || pages != 3 {
		t.Fatalf("pages %d: %v", pages, got)
	}
	out := mustCLI(t, store, nil, "volume", "list", "--limit", "3")
	if strings.Count(out, "\n") != 4 || !strings.Contains(out, "vm-2") || strings.Contains(out, "vm-3") {
		t.Fatalf("table with --limit 3:\n%s", out)
	}
	var all listJSON
	json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "volume", "list")), &all)
	if len(all.Records) != 6 || all.Next != "" {
		t.Fatalf("list --json: %+v", all)
	}
	if _, _, code := cli(t, store, nil, "volume", "list", "--limit", "-1"); code != 2 {
		t.Fatalf("--limit -1: exit %d", code)
	}
}

// TestStoreUpgrade: archip store upgrade on a format 1 store, then
// again (nothing to do).
func TestStoreUpgrade(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	store := "file://" + dir
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "64K")
	mustCLI(t, store, nil, "volume", "snapshot", "v", "v@1")
	// Rewrite it as format 1.
	s, err := objstore.OpenFile(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	var recs []catalog.Record
	catalog.New(s).All(ctx, func(r catalog.Record) error { recs = append(recs, r); return nil })
	s.List(ctx, "cat/", func(in objstore.Info) error { return s.Delete(ctx, in.Name) })
	b, _ := json.Marshal(map[string]any{"format": 1, "records": recs})
	s.Put(ctx, catalog.ObjectName, b)
	s.Close()

	var rep catalog.UpgradeReport
	json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "store", "upgrade")), &rep)
	if rep.From != 1 || rep.To != 4 || rep.Upgraded != 2 {
		t.Fatalf("upgrade: %+v", rep)
	}
	if out := mustCLI(t, store, nil, "store", "upgrade"); !strings.Contains(out, "already at format 4") {
		t.Fatalf("second upgrade: %s", out)
	}
	if out := mustCLI(t, store, nil, "volume", "info", "v@1"); !strings.Contains(out, "v") {
		t.Fatalf("info after the upgrade: %s", out)
	}
	var info struct {
		Origin string `json:"origin_name"`
	}
	json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "volume", "info", "v@1")), &info)
	if info.Origin != "v" {
		t.Fatalf("origin after the upgrade: %+v", info)
	}
}

// format2Store returns the URL and directory of a file store with one
// volume, v, whose catalog marker says format 2 (as the format 2 binaries
// leave it).
func format2Store(t *testing.T) (store, dir string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "store")
	store = "file://" + dir
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "64K")
	markFormat2(t, dir)
	return store, dir
}

// markFormat2 sets the catalog marker of the file store in dir to format 2.
func markFormat2(t *testing.T, dir string) {
	t.Helper()
	s, err := objstore.OpenFile(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Put(t.Context(), catalog.ObjectName, []byte(`{"format":2,"records":[]}`)); err != nil {
		t.Fatal(err)
	}
}

// TestStoreUpgradeFormat2: archip store upgrade on a format 2 store says
// so (from_format 2, to_format 4) and tells to restart older processes.
func TestStoreUpgradeFormat2(t *testing.T) {
	store, dir := format2Store(t)
	var rep catalog.UpgradeReport
	json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "store", "upgrade")), &rep)
	if rep.From != 2 || rep.To != 4 || rep.Upgraded != 0 {
		t.Fatalf("upgrade: %+v", rep)
	}
	markFormat2(t, dir)
	if out := mustCLI(t, store, nil, "store", "upgrade"); !strings.Contains(out, "from format 2 to 4") || !strings.Contains(out, "restart") {
		t.Fatalf("upgrade: %s", out)
	}
	if out := mustCLI(t, store, nil, "volume", "list"); !strings.Contains(out, "v") {
		t.Fatalf("list after the upgrade: %s", out)
	}
}
