package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestObjectAPIUsage(t *testing.T) {
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	mustCLI(t, store, nil, "store", "init")
	t.Setenv("ARCHIP_S3_ACCESS_KEY", "")
	t.Setenv("ARCHIP_S3_SECRET_KEY", "")
	if _, errs, code := cli(t, store, nil, "serve", "--s3-listen", "127.0.0.1:0"); code != 2 || !strings.Contains(errs, "access keys") {
		t.Errorf("serve --s3-listen without keys: exit %d, %q", code, errs)
	}
	bad := filepath.Join(dir, "keys")
	os.WriteFile(bad, []byte("only-one-field\n"), 0o600)
	if _, errs, code := cli(t, store, nil, "serve", "--s3-listen", "127.0.0.1:0", "--s3-keys-file", bad); code != 2 || !strings.Contains(errs, "line 1") {
		t.Errorf("malformed keys file: exit %d, %q", code, errs)
	}
	if _, errs, code := cli(t, store, nil, "serve", "--s3-listen", "nowhere"); code != 2 || !strings.Contains(errs, "HOST:PORT") {
		t.Errorf("bad --s3-listen: exit %d, %q", code, errs)
	}
	if _, errs, code := cli(t, store, nil, "volume", "clone", "s3://Bad_Bucket/k", "vm"); code != 2 || !strings.Contains(errs, "bucket name") {
		t.Errorf("clone from a bad bucket name: exit %d, %q", code, errs)
	}
	if _, _, code := cli(t, store, nil, "volume", "clone", "s3://images/none", "vm"); code != 1 {
		t.Errorf("clone from a missing object: exit %d, want 1", code)
	}
	if _, errs, code := cli(t, store, nil, "image", "publish", "snap", "images/k"); code != 2 || !strings.Contains(errs, "s3://BUCKET/KEY") {
		t.Errorf("publish without s3://: exit %d, %q", code, errs)
	}
}
