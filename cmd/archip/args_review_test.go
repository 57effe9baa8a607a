package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestMaxSizeMessage (review of issue 10 #9): a size just over the cap is
// refused with a message that shows it is over (not "256 GiB: over the
// maximum of 256 GiB"), and a size over 2^63 is not printed as negative.
func TestMaxSizeMessage(t *testing.T) {
	store := "file://" + filepath.Join(t.TempDir(), "store")
	mustCLI(t, store, nil, "store", "init")
	for _, tc := range []struct {
		size, want string
	}{
		{"274877906945", "274877906945 bytes"},
		{"18446744073709551615", "18446744073709551615 bytes"},
	} {
		_, errs, code := cli(t, store, nil, "volume", "create", "v", "--size", tc.size, "--block-size", "64K")
		if code != 2 || !strings.Contains(errs, tc.want) || strings.Contains(errs, "-1 B") {
			t.Errorf("--size %s: exit %d, %q; want exit 2 and %q", tc.size, code, errs, tc.want)
		}
	}
}

// TestServeMaxConnections: the NBD and S3 connection bounds can be set,
// and a bound below 1 is a bad argument.
func TestServeMaxConnections(t *testing.T) {
	store := "file://" + filepath.Join(t.TempDir(), "store")
	mustCLI(t, store, nil, "store", "init")
	for _, n := range []string{"0", "-1"} {
		if _, errs, code := cli(t, store, nil, "serve", "--max-connections", n); code != 2 || !strings.Contains(errs, "at least 1") {
			t.Errorf("serve --max-connections %s: exit %d, %q", n, code, errs)
		}
		if _, errs, code := cli(t, store, nil, "serve", "--s3-listen", "127.0.0.1:0", "--s3-max-connections", n); code != 2 || !strings.Contains(errs, "at least 1") {
			t.Errorf("serve --s3-max-connections %s: exit %d, %q", n, code, errs)
		}
	}
}

// TestServeShutdownTimeout: a shutdown timeout that is not positive is a
// bad argument (it used to mean the default, silently).
func TestServeShutdownTimeout(t *testing.T) {
	store := "file://" + filepath.Join(t.TempDir(), "store")
	mustCLI(t, store, nil, "store", "init")
	for _, d := range []string{"0s", "-1s"} {
		if _, errs, code := cli(t, store, nil, "serve", "--shutdown-timeout", d); code != 2 || !strings.Contains(errs, "must be positive") {
			t.Errorf("serve --shutdown-timeout %s: exit %d, %q", d, code, errs)
		}
	}
}
