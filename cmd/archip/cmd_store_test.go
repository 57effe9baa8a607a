package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestStoreStatsVolumes (issue 12, space accounting): store stats
// --volumes tells, for each volume, the private blocks only it uses (as
// volume info does) and the content blocks only it uses, which volume
// info does not count.
func TestStoreStatsVolumes(t *testing.T) {
	store := "file://" + filepath.Join(t.TempDir(), "store")
	mustCLI(t, store, nil, "volume", "create", "a", "--size", "1M", "--block-size", "64K")
	mustCLI(t, store, nil, "volume", "create", "b", "--size", "1M", "--block-size", "64K")
	mustCLI(t, store, bytes.Repeat([]byte{1}, 128<<10), "volume", "write", "a")
	mustCLI(t, store, bytes.Repeat([]byte{2}, 64<<10), "volume", "write", "b")
	mustCLI(t, store, nil, "volume", "hash", "b")
	var info struct {
		Content   int64 `json:"content_bytes"`
		Exclusive int64 `json:"exclusive_bytes"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "volume", "info", "b")), &info); err != nil {
		t.Fatal(err)
	}
	if info.Content != 64<<10 || info.Exclusive != 0 {
		t.Fatalf("info of a hashed volume: %+v", info)
	}
	var st struct {
		Volumes []struct {
			Name      string `json:"name"`
			Exclusive int64  `json:"exclusive_bytes"`
			Content   int64  `json:"exclusive_content_bytes"`
		} `json:"volume_space"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "store", "stats", "--volumes")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Volumes) != 2 || st.Volumes[0].Name != "a" || st.Volumes[0].Exclusive != 128<<10 || st.Volumes[0].Content != 0 ||
		st.Volumes[1].Exclusive != 0 || st.Volumes[1].Content != 64<<10 {
		t.Fatalf("store stats --volumes: %+v", st)
	}
	out := mustCLI(t, store, nil, "store", "stats", "--volumes")
	if !strings.Contains(out, "CONTENT ONLY IT USES") || !strings.Contains(out, "128 KiB") {
		t.Fatalf("store stats --volumes prints:\n%s", out)
	}
	if strings.Contains(mustCLI(t, store, nil, "store", "stats"), "NAME") {
		t.Fatal("store stats lists volumes without --volumes")
	}
}
