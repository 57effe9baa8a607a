package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// catalogManifest is testdata/catalog1/manifest.json: what every name of
// the checked-in store read, with its lineage, when the commit named
// made it (with testdata/catalog1/make-store.sh).
type catalogManifest struct {
	Commit  string `json:"commit"`
	Entries []struct {
		Name     string   `json:"name"`
		Kind     string   `json:"kind"`
		Size     int64    `json:"size"`
		Parent   string   `json:"parent_name"`
		Origin   string   `json:"origin_name"`
		Children []string `json:"children"`
		SHA256   string   `json:"sha256"`
	} `json:"entries"`
}

// TestUpgradeCatalogFormat1 opens a store whose catalog is the single
// object of format 1, written by the last commit of that format, with the
// current binary: upgraded explicitly (archip store upgrade) or by the
// first command, every name, kind, size, lineage and byte is as the old
// binary saw it, renames and removals work on the upgraded catalog, and
// the old binary then refuses the store, changing nothing.
func TestUpgradeCatalogFormat1(t *testing.T) {
	need(t, "tar")
	b, err := os.ReadFile("testdata/catalog1/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	var man catalogManifest
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	oldBin := buildCommit(t, man.Commit)
	for _, how := range []string{"explicit", "automatic"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			e := &env{t: t, dir: dir, store: "file://" + filepath.Join(dir, "store")}
			run(t, "tar", "-C", dir, "-xzf", "testdata/catalog1/store.tar.gz")
			if how == "explicit" {
				var rep struct {
					From     int `json:"from_format"`
					To       int `json:"to_format"`
					Upgraded int `json:"records_upgraded"`
				}
				json.Unmarshal([]byte(e.archip("--json", "store", "upgrade")), &rep)
				if rep.From != 1 || rep.To != 4 || rep.Upgraded != len(man.Entries) {
					t.Fatalf("store upgrade: %+v, want from 1 to 3, %d records", rep, len(man.Entries))
				}
				if out := e.archip("store", "upgrade"); !strings.Contains(out, "already at format 4") {
					t.Fatalf("second store upgrade: %s", out)
				}
			}
			var want []string
			for _, m := range man.Entries {
				want = append(want, fmt.Sprintf("%s %s %d", m.Name, m.Kind, m.Size))
			}
			checkList(t, e, want)
			for _, m := range man.Entries {
				got := []byte(e.archip("volume", "read", m.Name))
				if sum := sha256.Sum256(got); hex.EncodeToString(sum[:]) != m.SHA256 {
					t.Fatalf("%s reads other data than the old binary did", m.Name)
				}
				var in struct {
					Parent   string   `json:"parent_name"`
					Origin   string   `json:"origin_name"`
					Children []string `json:"children"`
				}
				json.Unmarshal([]byte(e.archip("--json", "volume", "info", m.Name)), &in)
				sort.Strings(in.Children)
				if in.Parent != m.Parent || in.Origin != m.Origin || fmt.Sprint(in.Children) != fmt.Sprint(m.Children) {
					t.Fatalf("%s: lineage %q %q %v, the old binary said %q %q %v", m.Name, in.Parent, in.Origin, in.Children, m.Parent, m.Origin, m.Children)
				}
			}
			// The upgraded catalog works: a rename keeps the lineage,
			// a removal and a create.
			e.archip("volume", "rename", "base.img", "golden.img")
			e.archip("volume", "rename", "vm07", "db@prod")
			e.archip("volume", "remove", "vm33")
			e.archip("volume", "clone", "golden.img", "vm41")
			var in struct {
				Parent   string   `json:"parent_name"`
				Children []string `json:"children"`
			}
			json.Unmarshal([]byte(e.archip("--json", "volume", "info", "golden.img")), &in)
			if len(in.Children) != 40 || !strings.Contains(strings.Join(in.Children, " "), "db@prod") || strings.Contains(strings.Join(in.Children, " "), "vm33") {
				t.Fatalf("children of the renamed image: %v", in.Children)
			}
			json.Unmarshal([]byte(e.archip("--json", "volume", "info", "db@prod")), &in)
			if in.Parent != "golden.img" {
				t.Fatalf("parent of the renamed clone: %q", in.Parent)
			}

			if oldBin == "" {
				return
			}
			before := e.archip("volume", "list")
			for _, args := range [][]string{{"volume", "list"}, {"volume", "create", "x", "--size", "1M"}, {"volume", "remove", "vm01"}} {
				cmd := exec.Command(oldBin, append([]string{"--store", e.store}, args...)...)
				out, err := cmd.CombinedOutput()
				if err == nil || !strings.Contains(string(out), "format 4; this program reads format 1") {
					t.Fatalf("the old binary on the upgraded store, %q: %v\n%s", args, err, out)
				}
			}
			if after := e.archip("volume", "list"); after != before {
				t.Fatalf("the old binary changed the catalog:\n%s\nwas:\n%s", after, before)
			}
		})
	}
}

// catalogFormat2Commit is a commit whose binary writes catalog format 2.
const catalogFormat2Commit = "c93b950aad19424d2382d48ab108d0264e2ce809"

// TestUpgradeCatalogFormat2 makes a store with the binary of a commit of
// catalog format 2 (names with '@' and '_', a snapshot, a clone, a
// rename, data) and opens it with the current binary: upgraded explicitly
// (archip store upgrade: from_format 2, to_format 4) or by the first
// command, every name, size, lineage and byte is as the old binary wrote
// it, and the old binary then refuses the store with its "newer archip"
// error, changing nothing.
func TestUpgradeCatalogFormat2(t *testing.T) {
	testUpgradeFromBinary(t, catalogFormat2Commit, 2, "format 4; this program reads formats 1 and 2 (a newer archip wrote it: use that)")
}

// catalogFormat3Commit is a commit whose binary writes catalog format 3
// (RADOS's index only: the file store's names without keys).
const catalogFormat3Commit = "628963842f6048848cdbdfeeb816eaf862d48fbb"

// TestUpgradeCatalogFormat3 is TestUpgradeCatalogFormat2 from a file
// store of catalog format 3, which has no list index: after the upgrade
// every name is listed (from the index), and binaries of format 3 refuse
// the store.
func TestUpgradeCatalogFormat3(t *testing.T) {
	testUpgradeFromBinary(t, catalogFormat3Commit, 3, "format 4; this program reads formats 1 to 3 (a newer archip wrote it: use that)")
}

func testUpgradeFromBinary(t *testing.T, commit string, from int, refusal string) {
	oldBin := buildCommit(t, commit)
	if oldBin == "" {
		t.Skipf("no binary of format %d to write the store with", from)
	}
	for _, how := range []string{"explicit", "automatic"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			e := &env{t: t, dir: dir, store: "file://" + filepath.Join(dir, "store")}
			old := func(stdin []byte, args ...string) string {
				t.Helper()
				cmd := exec.Command(oldBin, append([]string{"--store", e.store}, args...)...)
				cmd.Stdin = bytes.NewReader(stdin)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("old binary %q: %v\n%s", args, err, out)
				}
				return string(out)
			}
			data := bytes.Repeat([]byte("format 2 data\n"), 5000)
			old(nil, "volume", "create", "vol_1", "--size", "1M")
			old(data, "volume", "write", "vol_1")
			old(nil, "volume", "snapshot", "vol_1", "vol_1@mon")
			old(nil, "volume", "clone", "vol_1@mon", "web")
			old(nil, "volume", "rename", "web", "web@prod")
			old(nil, "volume", "create", "gone", "--size", "64K")
			old(nil, "volume", "remove", "gone")
			want := []string{"vol_1 volume 1048576", "vol_1@mon snapshot 1048576", "web@prod volume 1048576"}
			if how == "explicit" {
				var rep struct {
					From int `json:"from_format"`
					To   int `json:"to_format"`
				}
				json.Unmarshal([]byte(e.archip("--json", "store", "upgrade")), &rep)
				if rep.From != from || rep.To != 4 {
					t.Fatalf("store upgrade: %+v, want from %d to 4", rep, from)
				}
				if out := e.archip("store", "upgrade"); !strings.Contains(out, "already at format 4") {
					t.Fatalf("second store upgrade: %s", out)
				}
			}
			checkList(t, e, want)
			for _, name := range []string{"vol_1", "vol_1@mon", "web@prod"} {
				if got := []byte(e.archip("volume", "read", name, "--length", fmt.Sprint(len(data)))); !bytes.Equal(got, data) {
					t.Fatalf("%s reads other data than the old binary wrote", name)
				}
			}
			var in struct {
				Parent string `json:"parent_name"`
			}
			json.Unmarshal([]byte(e.archip("--json", "volume", "info", "web@prod")), &in)
			if in.Parent != "vol_1@mon" {
				t.Fatalf("parent of the renamed clone: %q", in.Parent)
			}

			before := e.archip("volume", "list")
			for _, args := range [][]string{{"volume", "list"}, {"volume", "create", "x", "--size", "1M"}, {"volume", "remove", "vol_1"}} {
				cmd := exec.Command(oldBin, append([]string{"--store", e.store}, args...)...)
				out, err := cmd.CombinedOutput()
				if err == nil || !strings.Contains(string(out), refusal) {
					t.Fatalf("the old binary on the upgraded store, %q: %v\n%s", args, err, out)
				}
			}
			if after := e.archip("volume", "list"); after != before {
				t.Fatalf("the old binary changed the catalog:\n%s\nwas:\n%s", after, before)
			}
		})
	}
}

// buildCommit builds the archip binary of commit from this repository's
// history, or returns "" (and logs why) if the history is not at hand.
func buildCommit(t *testing.T, commit string) string {
	t.Helper()
	if exec.Command("git", "-C", "..", "cat-file", "-e", commit+"^{commit}").Run() != nil {
		t.Logf("commit %s is not in this checkout's history: not testing that its binary refuses the upgraded store", commit)
		return ""
	}
	src := t.TempDir()
	run(t, "sh", "-c", fmt.Sprintf("git -C .. archive %s | tar -x -C %s", commit, src))
	bin := filepath.Join(src, "archip-old")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/archip")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build archip of %s: %v\n%s", commit, err, out)
	}
	return bin
}
