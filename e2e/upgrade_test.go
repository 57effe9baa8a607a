package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// oldStoreManifest is testdata/oldstore/manifest.json: what every volume,
// snapshot and image of the checked-in store read when the commit named
// made it (with testdata/oldstore/make-old-store.sh).
type oldStoreManifest struct {
	Commit  string `json:"commit"`
	Entries []struct {
		Name   string `json:"name"`
		Kind   string `json:"kind"`
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	} `json:"entries"`
}

type listEntry struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	Size int64  `json:"size"`
}

// nbdScript applies its arguments to an NBD export: "w:OFF:FILE" writes
// FILE's bytes at OFF, "t:OFF:LEN" trims, "f" flushes.
const nbdScript = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for op in sys.argv[2:]:
    f = op.split(":", 2)
    if f[0] == "w":
        h.pwrite(open(f[2], "rb").read(), int(f[1]))
    elif f[0] == "t":
        h.trim(int(f[2]), int(f[1]))
    elif f[0] == "f":
        h.flush()
h.shutdown()
`

// TestUpgradeOldStore opens a file store written by an earlier commit
// (testdata/oldstore: every map entry kind, snapshots, a clone, a hashed
// snapshot, an imported image, a volume left by a takeover with its
// epoch unsealed, garbage of a removed volume) with the current binary:
// everything lists and reads as the manifest says, and it keeps working
// under writes (CLI and NBD with flushes), trims, snapshots (one sealing
// the takeover's blocks), clones, a removal and gc; then everything reads
// as written.
func TestUpgradeOldStore(t *testing.T) {
	need(t, "tar")
	needLibnbd(t)
	dir := t.TempDir()
	e := &env{t: t, dir: dir, store: "file://" + filepath.Join(dir, "store")}
	run(t, "tar", "-C", dir, "-xzf", "testdata/oldstore/store.tar.gz")
	// As if the store had been written two hours before the upgrade, so
	// that gc below may delete the old objects that become unreferenced.
	old := time.Now().Add(-2 * time.Hour)
	err := filepath.WalkDir(filepath.Join(dir, "store"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("testdata/oldstore/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	var man oldStoreManifest
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	t.Logf("store written by commit %s", man.Commit)

	model := map[string][]byte{}
	kinds := map[string]string{}
	var want []string
	for _, m := range man.Entries {
		got := []byte(e.archip("volume", "read", m.Name))
		if int64(len(got)) != m.Size {
			t.Fatalf("%s reads %d bytes, the manifest says %d", m.Name, len(got), m.Size)
		}
		if sum := sha256.Sum256(got); hex.EncodeToString(sum[:]) != m.SHA256 {
			t.Fatalf("%s reads other data than the old binary did (sha256 %x, manifest %s)", m.Name, sum, m.SHA256)
		}
		model[m.Name], kinds[m.Name] = got, m.Kind
		want = append(want, fmt.Sprintf("%s %s %d", m.Name, m.Kind, m.Size))
	}
	checkList(t, e, want)

	const K = 64 << 10
	rng := rand.New(rand.NewPCG(11, 1))
	data := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.IntN(255) + 1)
		}
		return p
	}
	write := func(name string, off int, p []byte) {
		t.Helper()
		cmd := exec.Command(archipBin, "--store", e.store, "-q", "volume", "write", name, "--offset", strconv.Itoa(off))
		cmd.Stdin = bytes.NewReader(p)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("volume write %s at %d: %v\n%s", name, off, err, out)
		}
		copy(model[name][off:], p)
	}
	// vol: a block of its own, one shared with snap1, a trimmed one, a
	// never written one, one written partly before. ('volume write'
	// copies every block it writes; the daemon below writes in place.)
	write("vol", 4096, data(4096))
	write("vol", 2*K+100, data(3000))
	write("vol", 5*K+K/2, data(8192))
	write("vol", 15*K, data(K))
	write("vol", 3*K, data(512))
	// The clones: blocks shared with a snapshot, a content block of the
	// image, one the clone already owns, and the grown part.
	write("clone1", 0, data(4096))
	write("clone1", 12*K+512, data(1024))
	write("imgclone", K+4096, data(4096))
	write("imgclone", 4096, data(100))
	write("imgclone", 7*K, data(K))
	// tk: a block of the writer taken over (unsealed), and a fresh one.
	write("tk", K+8192, data(4096))
	write("tk", 3*K+4096, data(4096))

	// Through the daemon: writes and trims with flushes.
	d := e.serve("--flush-interval", "0")
	nbdOps := func(name string, ops ...string) {
		t.Helper()
		run(t, "/usr/bin/python3", append([]string{"-c", nbdScript, d.uri(name)}, ops...)...)
	}
	dataFile := func(name string, off, n int) string {
		p := data(n)
		copy(model[name][off:], p)
		f := e.path(fmt.Sprintf("w%d", rng.Uint64()))
		if err := os.WriteFile(f, p, 0o644); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("w:%d:%s", off, f)
	}
	trim := func(name string, off, n int) string {
		copy(model[name][off:off+n], make([]byte, n))
		return fmt.Sprintf("t:%d:%d", off, n)
	}
	nbdOps("vol", dataFile("vol", 0, 4096), "f", dataFile("vol", 9*K, 4096), trim("vol", K, K), dataFile("vol", 6*K+4096, 512), "f")
	nbdOps("clone1", dataFile("clone1", 2*K, 4096), "f", trim("clone1", 4*K, K), "f")
	nbdOps("tk", dataFile("tk", 2*K+512, 1024), "f")
	d.stop(t)

	// Snapshots (tk's seals the blocks of the writer taken over), clones
	// of them, a removal, a hash, and writes after all that.
	snap := func(vol, name string) {
		e.archip("volume", "snapshot", vol, name)
		model[name], kinds[name] = bytes.Clone(model[vol]), "snapshot"
	}
	clone := func(src, name string) {
		e.archip("volume", "clone", src, name)
		model[name], kinds[name] = bytes.Clone(model[src]), "volume"
	}
	snap("vol", "snap2")
	snap("tk", "tksnap")
	snap("clone1", "clonesnap2")
	clone("snap2", "clone2")
	clone("tksnap", "tkclone")
	e.archip("volume", "hash", "snap2")
	write("vol", 2*K, data(4096))
	write("clone2", K+100, data(200))
	write("tk", K+8192, data(4096))
	write("tkclone", 0, data(4096))
	e.archip("volume", "remove", "snap1")
	delete(model, "snap1")
	e.archip("volume", "remove", "gonesnap")
	delete(model, "gonesnap")

	// The CLI refuses a grace under 20 minutes: the objects this test
	// made are kept, the old ones that the removals, the hash and the
	// seal left unreferenced are deleted; nothing referenced may go.
	var gcOut struct {
		Deleted struct {
			Objects int `json:"objects"`
		} `json:"deleted"`
	}
	out := e.archip("gc", "--grace", "20m", "--json")
	if err := json.Unmarshal([]byte(out), &gcOut); err != nil {
		t.Fatalf("gc --json: %v\n%s", err, out)
	}
	if gcOut.Deleted.Objects == 0 {
		t.Fatalf("gc deleted nothing of the old store's objects that the removals left unreferenced:\n%s", out)
	}
	t.Logf("gc: %s", strings.Join(strings.Fields(out), " "))
	e.archip("store", "stats")

	want = want[:0]
	for name, p := range model {
		want = append(want, fmt.Sprintf("%s %s %d", name, kinds[name], len(p)))
	}
	checkList(t, e, want)
	// A daemon serves the volumes again after gc.
	d = e.serve("--flush-interval", "0")
	nbdOps("vol", dataFile("vol", 11*K, 4096), "f")
	nbdOps("clone2", dataFile("clone2", 3*K+100, 4096), "f")
	d.stop(t)
	for name, p := range model {
		if got := []byte(e.archip("volume", "read", name)); !bytes.Equal(got, p) {
			t.Errorf("%s reads other data than written (first difference at byte %d)", name, firstDiff(got, p))
		}
	}
}

func checkList(t *testing.T, e *env, want []string) {
	t.Helper()
	var page struct {
		Records []listEntry `json:"records"`
		Next    string      `json:"next"`
	}
	if err := json.Unmarshal([]byte(e.archip("volume", "list", "--json")), &page); err != nil {
		t.Fatal(err)
	}
	if page.Next != "" {
		t.Fatalf("volume list --json without --limit: next %q", page.Next)
	}
	var got []string
	for _, l := range page.Records {
		got = append(got, fmt.Sprintf("%s %s %d", l.Name, l.Kind, l.Size))
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("volume list:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
