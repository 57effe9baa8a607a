package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/move"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/all"
)

// TestCLIVolumeMove: volume move moves, says so in JSON, refuses clearly,
// and an interrupted move shows in volume info and finishes or cancels
// when run again.
func TestCLIVolumeMove(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "store.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("metadata = %q\ndefault = \"fast\"\n[pools]\ncold = %q\nfast = %q\n",
		"file://"+filepath.Join(dir, "meta"), "file://"+filepath.Join(dir, "cold"), "file://"+filepath.Join(dir, "fast"))), 0o644)
	store := "pools://" + conf
	data := bytes.Repeat([]byte("moving!"), 40_000)
	mustCLI(t, store, nil, "volume", "create", "vm", "--size", "4M", "--block-size", "64K")
	mustCLI(t, store, data, "volume", "write", "vm", "--offset", "1000")
	mustCLI(t, store, nil, "volume", "snapshot", "vm", "vm@1")
	read := func() string {
		return mustCLI(t, store, nil, "volume", "read", "vm", "--offset", "1000", "--length", fmt.Sprint(len(data)))
	}

	out := mustCLI(t, store, nil, "--json", "volume", "move", "vm", "--to", "cold")
	var res move.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.From != "fast" || res.To != "cold" || res.Copied == 0 {
		t.Fatalf("move --json: %v\n%s", err, out)
	}
	if out := mustCLI(t, store, nil, "volume", "info", "vm@1"); !strings.Contains(out, " cold (") {
		t.Errorf("volume info after the move:\n%s", out)
	}
	if read() != string(data) {
		t.Fatal("vm reads different after the move")
	}
	out, errs, _ := cli(t, store, nil, "volume", "move", "vm", "--to", "cold")
	if !strings.Contains(errs, "already") {
		t.Errorf("a move to where it is: %s%s", out, errs)
	}
	mustCLI(t, "file://"+filepath.Join(dir, "single"), nil, "volume", "create", "vm", "--size", "1M")
	for _, tc := range []struct {
		store string
		args  []string
		want  string
	}{
		{store, []string{"volume", "move", "vm", "--to", "nope"}, "fast, cold"},
		{store, []string{"volume", "move", "vm"}, "--to POOL or --cancel"},
		{store, []string{"volume", "move", "vm", "--cancel"}, "no move"},
		{store, []string{"volume", "move", "vm@1", "--to", "fast"}, "origin"},
		{"file://" + filepath.Join(dir, "single"), []string{"volume", "move", "vm", "--to", "fast"}, "pools://"},
	} {
		if _, errs, code := cli(t, tc.store, nil, tc.args...); code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("archip %s: exit %d: %s (want %q)", strings.Join(tc.args, " "), code, errs, tc.want)
		}
	}

	// An interrupted move back to fast.
	s, err := all.Registry().Open(context.Background(), store, objstore.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	crash := errors.New("crash")
	_, err = move.Move(context.Background(), manage.New(s), "vm", "fast", move.Options{Hook: func(step string) error {
		if step == move.StepSwitch {
			return crash
		}
		return nil
	}})
	s.Close()
	if !errors.Is(err, crash) {
		t.Fatal(err)
	}
	if out := mustCLI(t, store, nil, "volume", "info", "vm"); !strings.Contains(out, "moving from:  cold") {
		t.Errorf("volume info during a move:\n%s", out)
	}
	if _, errs, code := cli(t, store, nil, "volume", "move", "vm", "--to", "cold"); code == 0 || !strings.Contains(errs, "--cancel") {
		t.Errorf("another move during a move: %s", errs)
	}
	mustCLI(t, store, []byte("during"), "volume", "write", "vm", "--offset", "0")
	out = mustCLI(t, store, nil, "volume", "move", "vm", "--cancel")
	if !strings.Contains(out, "moved back from pool fast to cold") {
		t.Errorf("cancel: %s", out)
	}
	if read() != string(data) || mustCLI(t, store, nil, "volume", "read", "vm", "--offset", "0", "--length", "6") != "during" {
		t.Fatal("vm reads different after the cancel")
	}
	out = mustCLI(t, store, nil, "--json", "volume", "move", "vm", "--to", "fast")
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Resumed || res.To != "fast" {
		t.Fatalf("move after cancel: %v\n%s", err, out)
	}
	mustCLI(t, store, nil, "gc")
	if read() != string(data) {
		t.Fatal("vm reads different after gc")
	}
}

// TestCLIStoreMigrate: store migrate moves every volume and image of a
// pool; after gc the pool's directory holds no block.
func TestCLIStoreMigrate(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "store.toml")
	old := filepath.Join(dir, "nfs")
	os.WriteFile(conf, []byte(fmt.Sprintf("metadata = %q\ndefault = \"nfs\"\n[pools]\nnfs = %q\nrbd = %q\n",
		"file://"+filepath.Join(dir, "meta"), "file://"+old, "file://"+filepath.Join(dir, "rbd"))), 0o644)
	store := "pools://" + conf
	img := bytes.Repeat([]byte("image..."), 50_000)
	imgPath := filepath.Join(dir, "img.raw")
	os.WriteFile(imgPath, img, 0o644)
	mustCLI(t, store, nil, "image", "import", "--block-size", "64K", imgPath, "base")
	mustCLI(t, store, nil, "volume", "clone", "base", "vm1")
	mustCLI(t, store, []byte("vm1 data"), "volume", "write", "vm1", "--offset", "70000")
	mustCLI(t, store, nil, "volume", "snapshot", "vm1", "vm1@1")
	mustCLI(t, store, nil, "volume", "clone", "base", "vm2", "--pool", "rbd")
	out := mustCLI(t, store, nil, "--json", "store", "migrate", "--from", "nfs", "--to", "rbd", "--rate", "1G")
	var res move.MigrateResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Moved) != 2 {
		t.Fatalf("migrate --json: %v\n%s", err, out)
	}
	os.WriteFile(conf, []byte(fmt.Sprintf("metadata = %q\ndefault = \"rbd\"\n[pools]\nnfs = %q\nrbd = %q\n",
		"file://"+filepath.Join(dir, "meta"), "file://"+old, "file://"+filepath.Join(dir, "rbd"))), 0o644)
	if c, p := countBlocks(t, old); c+p == 0 {
		t.Fatal("nothing in the old pool before gc")
	}
	ageStore(t, old, 2*gc.DefaultGrace)
	mustCLI(t, store, nil, "gc")
	if c, p := countBlocks(t, old); c+p != 0 {
		t.Fatalf("the old pool holds %d content and %d private blocks after gc", c, p)
	}
	stats := strings.Join(strings.Fields(mustCLI(t, store, nil, "store", "stats")), " ")
	if !strings.Contains(stats, "pool nfs: 0 B in 0 blocks") || strings.Contains(stats, "pool rbd: 0 B") {
		t.Errorf("store stats after the migration:\n%s", stats)
	}
	if got := mustCLI(t, store, nil, "volume", "read", "vm1@1", "--offset", "69995", "--length", "18"); got != string(img[69995:70000])+"vm1 data"+string(img[70008:70013]) {
		t.Fatalf("vm1@1 reads %q", got)
	}
	if got := mustCLI(t, store, nil, "volume", "read", "vm2", "--offset", "0", "--length", fmt.Sprint(len(img))); got != string(img) {
		t.Fatal("vm2 reads different")
	}
	if _, errs, code := cli(t, store, nil, "store", "migrate", "--from", "nfs"); code == 0 || !strings.Contains(errs, "--to") {
		t.Errorf("migrate without --to: %s", errs)
	}
}
