package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReconnectKeepsWrites: a client writes 64 MiB without flushing and
// drops the connection, and a new connection to the same volume follows at once
// (as QEMU reconnects, and as the NBD conformance tester does): it reads
// every byte the first one wrote, round after round (issue 10 #6).
func TestReconnectKeepsWrites(t *testing.T) {
	needLibnbd(t)
	e := newEnv(t)
	e.archip("volume", "create", "v", "--size", "64M")
	d := e.serve()
	script := `
import nbd, sys
uri = sys.argv[1]
for rnd in range(5):
    h = nbd.NBD()
    h.connect_uri(uri)
    for i in range(64):
        h.pwrite(bytes([(rnd * 64 + i) % 255 + 1]) * (1 << 20), i << 20)
    del h  # closes the socket: no flush, no NBD_CMD_DISC
    h = nbd.NBD()
    h.connect_uri(uri)
    for i in range(64):
        got = h.pread(1 << 20, i << 20)
        if got != bytes([(rnd * 64 + i) % 255 + 1]) * (1 << 20):
            sys.exit("round %d: MiB %d reads %r..., want %d" % (rnd, i, got[:4], (rnd * 64 + i) % 255 + 1))
    h.shutdown()
print("ok")
`
	if out := run(t, "/usr/bin/python3", "-c", script, d.uri("v")); strings.TrimSpace(out) != "ok" {
		t.Fatal(out)
	}
}

// storeState lists every file and directory of a file store with its
// modification time, size and content, except the scratch directory tmp/
// (a listing makes and removes a file there to read the file server's
// clock: no object changes).
func storeState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == filepath.Join(dir, "tmp") {
			return filepath.SkipDir
		}
		in, err := de.Info()
		if err != nil {
			return err
		}
		out[p] = fmt.Sprintf("%s %d ", in.ModTime(), in.Size())
		if de.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[p] += string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLookingWritesNothing: NBD probes (nbdinfo, nbdinfo --list, qemu-img
// info) and the CLI's read-only commands leave the store as it was: no
// lease taken, no head rewritten (issue 10 #16).
func TestLookingWritesNothing(t *testing.T) {
	need(t, "nbdinfo", "qemu-img")
	e := newEnv(t)
	e.archip("volume", "create", "v", "--size", "8M")
	e.archip("volume", "snapshot", "v", "v@1")
	d := e.serve()
	storeDir := strings.TrimPrefix(e.store, "file://")
	before := storeState(t, storeDir)
	run(t, "nbdinfo", d.uri("v"))
	run(t, "nbdinfo", "--map", d.uri("v"))
	run(t, "nbdinfo", "--list", d.uri(""))
	run(t, "qemu-img", "info", "-f", "raw", d.uri("v"))
	run(t, "qemu-img", "info", "-f", "raw", d.uri("v@1"))
	e.archip("volume", "info", "v")
	e.archip("volume", "list")
	e.archip("volume", "read", "v", "--length", "4096")
	e.archip("image", "export", "v", e.path("v.raw"))
	after := storeState(t, storeDir)
	for p, st := range after {
		if before[p] != st {
			t.Errorf("%s changed", p)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s is gone", p)
		}
	}
}
