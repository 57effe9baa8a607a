package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/image"
)

// TestExportKilledLeavesNothing (review of issue 10 #14): an export
// killed part way (SIGKILL, a crash, the machine going down) leaves no
// file behind: neither FILE nor a temporary one, which nothing would
// ever remove (a hidden file the size of the export).
func TestExportKilledLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "4M", "--block-size", "64K")
	mustCLI(t, store, bytes.Repeat([]byte("x"), 4<<20), "volume", "write", "v")
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, force := range []bool{false, true} {
		target := filepath.Join(out, "v.raw")
		if force {
			os.WriteFile(target, []byte("old"), 0o644)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestExportKilledHelper$")
		cmd.Env = append(os.Environ(), "ARCHIP_EXPORT_HELPER="+store+"|"+target)
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "exporting") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper: %q, %v", line, err)
		}
		cmd.Process.Kill()
		cmd.Wait()
		ents, _ := os.ReadDir(out)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		want := 0
		if force {
			want = 1
			if b, _ := os.ReadFile(target); string(b) != "old" {
				t.Errorf("--force: the file replaced was changed by an export killed part way")
			}
		}
		if len(names) != want {
			t.Errorf("force %v: an export killed part way left %q", force, names)
		}
		os.RemoveAll(out)
		os.Mkdir(out, 0o755)
	}
}

// TestExportKilledHelper exports in a process the test kills: it says
// "exporting" once the export has written some data, then waits.
func TestExportKilledHelper(t *testing.T) {
	env := os.Getenv("ARCHIP_EXPORT_HELPER")
	if env == "" {
		return
	}
	store, target, _ := strings.Cut(env, "|")
	g := &globals{store: store}
	m, err := g.manager(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := m.Open(t.Context(), "v", false)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := os.Stat(target)
	said := false
	exportFile(t.Context(), v, target, old, image.Options{Progress: func(done, total int64) {
		if !said && done > 0 {
			said = true
			os.Stdout.WriteString("exporting\n")
			time.Sleep(time.Hour) // killed here
		}
	}})
}
