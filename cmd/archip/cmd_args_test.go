package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIBadArgs: every argument a command cannot take exits 2 with a
// message saying what is wrong, before anything is changed; what depends
// only on what the store holds (a name taken or missing) exits 1.
func TestCLIBadArgs(t *testing.T) {
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "1M", "--block-size", "64K")
	mustCLI(t, store, []byte("data"), "volume", "write", "v")
	mustCLI(t, store, nil, "volume", "snapshot", "v", "s")
	img := filepath.Join(dir, "img.raw")
	os.WriteFile(img, bytes.Repeat([]byte("i"), 100), 0o644)
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	list := func() string { return mustCLI(t, store, nil, "--json", "volume", "list") }
	before := list()

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		// volume create
		{[]string{"volume", "create", "bad name", "--size", "1M"}, 2, "invalid name"},
		{[]string{"volume", "create", "x", "--size", "0"}, 2, "at least 1 byte"},
		{[]string{"volume", "create", "x", "--size", "-1"}, 2, "invalid size"},
		{[]string{"volume", "create", "x", "--size", "99999999999999999999"}, 2, "invalid size"},
		{[]string{"volume", "create", "x", "--size", "16E"}, 2, "too large"},
		{[]string{"volume", "create", "x", "--size", "1E"}, 2, "maximum of 16 TiB"},
		{[]string{"volume", "create", "x", "--size", "17T"}, 2, "maximum of 16 TiB"},
		{[]string{"volume", "create", "x", "--size", "257G", "--block-size", "64K"}, 2, "maximum of 256 GiB"},
		{[]string{"volume", "create", "x", "--size", "1G", "--block-size", "0"}, 2, "power of two"},
		{[]string{"volume", "create", "x", "--size"}, 2, "needs an argument"},
		{[]string{"volume", "create", "v", "--size", "1M"}, 1, "already in use"},
		// other volume commands
		{[]string{"volume", "info", "bad/name"}, 2, "invalid name"},
		{[]string{"volume", "info", ""}, 2, "invalid name"},
		{[]string{"volume", "info", "nosuch"}, 1, "no volume"},
		{[]string{"volume", "snapshot", "v", "bad name"}, 2, "invalid name"},
		{[]string{"volume", "snapshot", "bad name", "s2"}, 2, "invalid name"},
		{[]string{"volume", "snapshot", "v", "s"}, 1, "already in use"},
		{[]string{"volume", "clone", "s", "bad name"}, 2, "invalid name"},
		{[]string{"volume", "clone", "-x", "c"}, 2, "unknown shorthand flag"},
		{[]string{"volume", "clone", "s", "c", "--size", "0"}, 2, "at least 1 byte"},
		{[]string{"volume", "clone", "s", "c", "--size", "512K"}, 2, "smaller than its source"},
		{[]string{"volume", "clone", "s", "c", "--size", "257G"}, 2, "maximum of 256 GiB"},
		{[]string{"volume", "clone", "s", "v"}, 1, "already in use"},
		{[]string{"volume", "resize", "bad name", "1M"}, 2, "invalid name"},
		{[]string{"volume", "resize", "v", "0"}, 2, "at least 1 byte"},
		{[]string{"volume", "resize", "v", "-5"}, 2, "unknown shorthand flag"},
		{[]string{"volume", "resize", "v", "--", "-5"}, 2, "invalid size"},
		{[]string{"volume", "resize", "v", "257G"}, 2, "maximum of 256 GiB"},
		{[]string{"volume", "resize", "v", "64K"}, 2, "--allow-shrink"},
		{[]string{"volume", "resize", "s", "2M"}, 1, "read-only"},
		{[]string{"volume", "rename", "v", "bad name"}, 2, "invalid name"},
		{[]string{"volume", "rename", "bad name", "x"}, 2, "invalid name"},
		{[]string{"volume", "rename", "v", "s"}, 1, "already in use"},
		{[]string{"volume", "remove", "bad name"}, 2, "invalid name"},
		{[]string{"volume", "diff", "v", "bad name"}, 2, "invalid name"},
		{[]string{"volume", "hash", "bad name"}, 2, "invalid name"},
		{[]string{"volume", "read", "bad name"}, 2, "invalid name"},
		{[]string{"volume", "read", "v", "--offset", "2M"}, 2, "past the end"},
		{[]string{"volume", "read", "v", "--offset", "1048577"}, 2, "past the end"},
		{[]string{"volume", "read", "v", "--offset", "1M", "--length", "1"}, 2, "past the end"},
		{[]string{"volume", "read", "v", "--length", "2M"}, 2, "past the end"},
		{[]string{"volume", "read", "v", "--offset", "18446744073709551615", "--length", "2"}, 2, "past the end"},
		{[]string{"volume", "read", "v", "--offset", "-1"}, 2, "invalid size"},
		{[]string{"volume", "read", "v", "--length", "x"}, 2, "invalid size"},
		{[]string{"volume", "write", "bad name"}, 2, "invalid name"},
		{[]string{"volume", "write", "v", "--offset", "2M"}, 2, "past the end"},
		{[]string{"volume", "write", "s"}, 1, "read-only"},
		// images
		{[]string{"image", "import", img, "bad name"}, 2, "invalid name"},
		{[]string{"image", "import", sub, "x"}, 2, "not a regular file"},
		{[]string{"image", "import", img, "x", "--workers", "-1"}, 2, "--workers"},
		{[]string{"image", "import", img, "x", "--block-size", "3M"}, 2, "power of two"},
		{[]string{"image", "import", img, "v"}, 1, "already in use"},
		{[]string{"image", "import", filepath.Join(dir, "nosuch"), "x"}, 1, "no such file"},
		{[]string{"image", "export", "bad name", filepath.Join(dir, "out")}, 2, "invalid name"},
		{[]string{"image", "export", "v", sub}, 2, "is a directory"},
		{[]string{"image", "export", "v", sub, "--force"}, 2, "is a directory"},
		{[]string{"image", "export", "v", img}, 2, "--force"},
		// leases, gc, store
		{[]string{"lease", "show", "bad name"}, 2, "invalid name"},
		{[]string{"lease", "break", "bad name", "--force"}, 2, "invalid name"},
		{[]string{"gc", "--grace", "-1s"}, 2, "below the minimum"},
		{[]string{"gc", "--grace", "soon"}, 2, "invalid argument"},
		{[]string{"store", "stats", "extra"}, 2, "takes 0 argument"},
	} {
		_, errs, code := cli(t, store, nil, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.msg) {
			t.Errorf("archip %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, errs, tc.code, tc.msg)
		}
	}
	for _, cmd := range [][]string{
		{"volume", "create", "x", "--size", "1M"}, {"volume", "list"}, {"volume", "info", "v"}, {"volume", "snapshot", "v", "y"},
		{"volume", "clone", "s", "y"}, {"volume", "resize", "v", "2M"}, {"volume", "rename", "v", "y"}, {"volume", "remove", "v"},
		{"volume", "diff", "v", "s"}, {"volume", "hash", "v"}, {"volume", "read", "v"}, {"volume", "write", "v"},
		{"image", "import", img, "y"}, {"image", "export", "v", "-"}, {"lease", "show", "v"}, {"lease", "break", "v"},
		{"gc"}, {"store", "init"}, {"store", "stats"}, {"serve"},
	} {
		if _, errs, code := cli(t, store, nil, append(cmd, "--nosuchflag")...); code != 2 || !strings.Contains(errs, "unknown flag") {
			t.Errorf("archip %q --nosuchflag: exit %d, %q", cmd, code, errs)
		}
	}
	if after := list(); after != before {
		t.Errorf("bad arguments changed the store:\n%s\n%s", before, after)
	}
	if got := mustCLI(t, store, nil, "volume", "read", "v", "--offset", "1M"); got != "" {
		t.Errorf("read at the end: %q", got)
	}
	if got := mustCLI(t, store, nil, "volume", "resize", "v", "1M"); !strings.Contains(got, "already") {
		t.Errorf("resize to the same size: %q", got)
	}
}
