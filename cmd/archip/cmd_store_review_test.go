package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestStoreUpgradeUnderWay: archip store upgrade on a store whose upgrade
// from format 1 stopped part way (format 2, the records still in the
// catalog object) finishes it and says how many records it wrote, in the
// text as in --json, besides the advice of an upgrade from format 2.
// Before, the text said only "upgraded from format 2 to 3".
func TestStoreUpgradeUnderWay(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	store := "file://" + dir
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "64K")
	mustCLI(t, store, nil, "volume", "snapshot", "v", "v@1")
	freeze := func() {
		s, err := objstore.OpenFile(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var recs []catalog.Record
		catalog.New(s).All(ctx, func(r catalog.Record) error { recs = append(recs, r); return nil })
		s.List(ctx, "cat/", func(in objstore.Info) error { return s.Delete(ctx, in.Name) })
		b, _ := json.Marshal(map[string]any{"format": 2, "records": []catalog.Record{}, "upgrading": recs})
		s.Put(ctx, catalog.ObjectName, b)
	}
	freeze()
	var rep catalog.UpgradeReport
	json.Unmarshal([]byte(mustCLI(t, store, nil, "--json", "store", "upgrade")), &rep)
	if rep.From != 2 || rep.To != 4 || rep.Upgraded != 2 {
		t.Fatalf("upgrade: %+v", rep)
	}
	freeze()
	out := mustCLI(t, store, nil, "store", "upgrade")
	if !strings.Contains(out, "from format 2 to 4") || !strings.Contains(out, "2 records") || !strings.Contains(out, "restart") {
		t.Fatalf("upgrade: %s", out)
	}
	if out := mustCLI(t, store, nil, "volume", "list"); !strings.Contains(out, "v@1") {
		t.Fatalf("list after the upgrade: %s", out)
	}
}

// TestAutomaticUpgradeTells: the first command on a store of format 2
// upgrades it, and says on stderr what archip store upgrade says: restart
// older processes, then run gc (their records are missing from listings
// on RADOS until then). Before, the automatic upgrade said nothing.
func TestAutomaticUpgradeTells(t *testing.T) {
	store, _ := format2Store(t)
	out, errs, code := cli(t, store, nil, "volume", "list")
	if code != 0 || !strings.Contains(out, "v") || !strings.Contains(errs, "from format 2 to 4") || !strings.Contains(errs, "run archip gc") {
		t.Fatalf("first command: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if _, errs, _ := cli(t, store, nil, "volume", "list"); strings.Contains(errs, "upgraded") {
		t.Fatalf("second command: stderr %q", errs)
	}
}
