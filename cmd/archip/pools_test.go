package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/s3"
)

// writePools writes a pools configuration and returns its store URL.
func writePools(t *testing.T, dir, meta string, pools ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "metadata = %q\n[pools]\n", meta)
	for i, p := range pools {
		fmt.Fprintf(&b, "p%d = %q\n", i, p)
	}
	path := filepath.Join(dir, "store.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return "pools://" + path
}

// splitWorkflow imports an image, clones it, writes and reads back on a
// store whose blocks are on the S3 store data (of config c).
func splitWorkflow(t *testing.T, store string, c s3.Config, prefix string) {
	t.Helper()
	dir := t.TempDir()
	img := bytes.Repeat([]byte("archipelago!"), 300_000) // 3.6 MB, not block aligned
	imgPath := filepath.Join(dir, "img.raw")
	os.WriteFile(imgPath, img, 0o644)
	mustCLI(t, store, nil, "image", "import", "--block-size", "64K", imgPath, "base")
	mustCLI(t, store, nil, "volume", "clone", "base", "vm", "--size", "8M")
	mustCLI(t, store, []byte("hello"), "volume", "write", "vm", "--offset", "1M")
	mustCLI(t, store, []byte("small"), "volume", "write", "vm", "--offset", "1000")
	if got := mustCLI(t, store, nil, "volume", "read", "vm", "--offset", "1M", "--length", "5"); got != "hello" {
		t.Fatalf("read back %q", got)
	}
	if got := mustCLI(t, store, nil, "volume", "read", "vm", "--offset", "995", "--length", "15"); got != string(img[995:1000])+"small"+string(img[1005:1010]) {
		t.Fatalf("read back %q around a small write into an image block", got)
	}
	if got := mustCLI(t, store, nil, "volume", "read", "base", "--offset", "0", "--length", fmt.Sprint(len(img))); got != string(img) {
		t.Fatal("the image reads back different")
	}
	mustCLI(t, store, nil, "gc")
	if got := mustCLI(t, store, nil, "volume", "read", "vm", "--offset", "995", "--length", "15"); got != string(img[995:1000])+"small"+string(img[1005:1010]) {
		t.Fatalf("read back %q after gc", got)
	}

	// Blocks are on S3, and only blocks.
	c.Prefix = prefix
	c.NoConditional = true
	st, err := s3.OpenConfig(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var blocks, other int
	st.List(context.Background(), "", func(in objstore.Info) error {
		if strings.HasPrefix(in.Name, "blk/") || strings.Contains(in.Name, "/d/") {
			blocks++
		} else {
			other++
			t.Errorf("%s is on the data pool", in.Name)
		}
		return nil
	})
	if blocks == 0 {
		t.Fatal("no block on the S3 pool")
	}
}

// TestCLISplitS3: metadata on file://, blocks on s3:// (issue 13's split
// configuration), through every command.
func TestCLISplitS3(t *testing.T) {
	c := s3.TestServer(t, "versitygw")
	prefix := fmt.Sprintf("split%d", os.Getpid())
	dir := t.TempDir()
	store := writePools(t, dir, "file://"+filepath.Join(dir, "meta"), s3.TestStoreURL(t, c, prefix))
	splitWorkflow(t, store, c, prefix)
}

// noConditional is an S3 proxy that refuses every conditional request
// (If-Match, If-None-Match), as a server without conditional writes.
func noConditional(t *testing.T, endpoint string) string {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-Match") != "" || r.Header.Get("If-None-Match") != "" {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>conditional requests are not supported</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}

// TestCLISplitS3NoConditional: an S3 server without conditional writes is
// refused as a whole store and as metadata, saying what to do, and works
// as the data pool of a split configuration.
func TestCLISplitS3NoConditional(t *testing.T) {
	c := s3.TestServer(t, "versitygw")
	c.Endpoint = noConditional(t, c.Endpoint)
	prefix := fmt.Sprintf("nocond%d", os.Getpid())
	plain := s3.TestStoreURL(t, c, prefix)
	dir := t.TempDir()

	_, errs, code := cli(t, plain, nil, "volume", "create", "v", "--size", "1M")
	if code != exitError || !strings.Contains(errs, "split configuration") {
		t.Fatalf("volume create on s3:// without conditional writes: exit %d: %s", code, errs)
	}
	meta := writePools(t, dir, plain, "file://"+filepath.Join(dir, "data"))
	_, errs, code = cli(t, meta, nil, "volume", "create", "v", "--size", "1M")
	if code != exitError || !strings.Contains(errs, "cannot hold the catalog") || !strings.Contains(errs, "file:// or rados://") {
		t.Fatalf("s3:// without conditional writes as metadata: exit %d: %s", code, errs)
	}

	store := writePools(t, dir, "file://"+filepath.Join(dir, "meta"), plain)
	splitWorkflow(t, store, c, prefix)
}

// countBlocks counts the blocks (content, private) a file store holds.
func countBlocks(t *testing.T, dir string) (content, private int) {
	t.Helper()
	s, err := objstore.OpenFile(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.List(context.Background(), "", func(in objstore.Info) error {
		switch {
		case strings.HasPrefix(in.Name, "blk/"):
			content++
		case strings.Contains(in.Name, "/d/"):
			private++
		default:
			t.Errorf("%s is in a data pool", in.Name)
		}
		return nil
	})
	return content, private
}

// TestCLIPoolPlacement: --pool places an image's and a clone's blocks;
// volume info and store stats show the pools.
func TestCLIPoolPlacement(t *testing.T) {
	dir := t.TempDir()
	fast, cold := filepath.Join(dir, "fast"), filepath.Join(dir, "cold")
	conf := filepath.Join(dir, "store.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("metadata = %q\ndefault = \"fast\"\n[pools]\ncold = %q\nfast = %q\n",
		"file://"+filepath.Join(dir, "meta"), "file://"+cold, "file://"+fast)), 0o644)
	store := "pools://" + conf
	img := bytes.Repeat([]byte("archipelago!"), 100_000)
	imgPath := filepath.Join(dir, "img.raw")
	os.WriteFile(imgPath, img, 0o644)

	mustCLI(t, store, nil, "image", "import", "--block-size", "64K", "--pool", "cold", imgPath, "base")
	if c, _ := countBlocks(t, cold); c == 0 {
		t.Fatal("the image's blocks are not in its pool")
	}
	mustCLI(t, store, nil, "volume", "clone", "base", "vm")
	mustCLI(t, store, nil, "volume", "clone", "base", "vm2", "--pool", "cold")
	mustCLI(t, store, []byte("hello"), "volume", "write", "vm", "--offset", "1000")
	mustCLI(t, store, []byte("world"), "volume", "write", "vm2", "--offset", "1000")
	if c, p := countBlocks(t, fast); c != 0 || p == 0 {
		t.Fatalf("fast holds %d content and %d private blocks; want only vm's private ones", c, p)
	}
	_, coldPrivate := countBlocks(t, cold)
	if coldPrivate == 0 {
		t.Fatal("vm2's private blocks are not in cold")
	}
	for _, tc := range []struct{ vol, want string }{{"vm", "hello"}, {"vm2", "world"}} {
		if got := mustCLI(t, store, nil, "volume", "read", tc.vol, "--offset", "995", "--length", "15"); got != string(img[995:1000])+tc.want+string(img[1005:1010]) {
			t.Fatalf("%s reads %q", tc.vol, got)
		}
	}
	mustCLI(t, store, nil, "volume", "snapshot", "vm2", "vm2@1")
	for vol, pool := range map[string]string{"base": "cold", "vm": "fast", "vm2": "cold", "vm2@1": "cold"} {
		if out := mustCLI(t, store, nil, "volume", "info", vol); !strings.Contains(out, "pool:") || !strings.Contains(out, " "+pool+" (") {
			t.Errorf("volume info %s does not say pool %s:\n%s", vol, pool, out)
		}
	}
	if out := mustCLI(t, store, nil, "--json", "volume", "info", "vm"); !strings.Contains(out, `"pool": "fast"`) {
		t.Errorf("volume info --json:\n%s", out)
	}
	out := mustCLI(t, store, nil, "store", "stats")
	if !strings.Contains(out, "pool fast:") || !strings.Contains(out, "pool cold:") || !strings.Contains(out, "(default)") {
		t.Errorf("store stats:\n%s", out)
	}
	out = mustCLI(t, store, nil, "--json", "store", "stats")
	if !strings.Contains(out, `"pools": [`) || !strings.Contains(out, `"name": "cold"`) {
		t.Errorf("store stats --json:\n%s", out)
	}

	if _, errs, code := cli(t, store, nil, "volume", "create", "v", "--size", "1M", "--pool", "nope"); code != exitUsage || !strings.Contains(errs, "cold, fast") && !strings.Contains(errs, "fast, cold") {
		t.Fatalf("--pool of no pool: exit %d: %s", code, errs)
	}
	if _, errs, code := cli(t, "file://"+filepath.Join(dir, "single"), nil, "volume", "create", "v", "--size", "1M", "--pool", "fast"); code != exitUsage || !strings.Contains(errs, "pools://") {
		t.Fatalf("--pool on a single store: exit %d: %s", code, errs)
	}
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "1M", "--pool", "cold")
	if out := mustCLI(t, store, nil, "volume", "info", "v"); !strings.Contains(out, " cold (") {
		t.Errorf("volume info v:\n%s", out)
	}
	mustCLI(t, store, nil, "volume", "remove", "v")
}
