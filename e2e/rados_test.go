//go:build ceph

package e2e

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
)

func init() { buildTags = "ceph,pacific" }

// radosEnv is an env whose store is a fresh namespace of the test
// cluster's pool.
func radosEnv(t *testing.T) *env {
	conf := os.Getenv("ARCHIP_TEST_CEPH_CONF")
	if conf == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("ARCHIP_TEST_CEPH_CONF is not set: scripts/test.sh starts a cluster and sets it")
		}
		t.Skip("no test cluster (ARCHIP_TEST_CEPH_CONF)")
	}
	e := &env{t: t, dir: t.TempDir()}
	e.store = fmt.Sprintf("rados://archip?conf=%s&namespace=%s", url.QueryEscape(conf), strings.NewReplacer("/", "-").Replace(t.Name()+fmt.Sprint(os.Getpid())))
	return e
}

// TestRadosServe runs archip serve on rados:// and drives it like on
// files: an imported image, a clone of it, qemu-io patterns, qemu-img
// compare, fio with verification, a snapshot that keeps its data.
func TestRadosServe(t *testing.T) {
	need(t, "qemu-io", "qemu-img", "fio")
	driveServe(t, radosEnv(t))
}

// TestRadosHandoff: two daemons share a RADOS pool; writes alternate
// between them, each switch a handoff, and each daemon reads what the
// other flushed (as TestTwoDaemonsHandoff does on files).
func TestRadosHandoff(t *testing.T) {
	needLibnbd(t)
	alternate(t, radosEnv(t))
}

// TestKill9ServeFlushEachRados is TestKill9ServeFlushEach on rados://,
// where an in-place write returns once librados has its bytes and a flush
// waits for the OSDs to acknowledge what it covers (docs/format.md,
// "Writes in flight"): every write acknowledged before an acknowledged
// flush reads back after the kill, through a daemon that took over.
func TestKill9ServeFlushEachRados(t *testing.T) {
	needLibnbd(t)
	killFlushEach(t, radosEnv(t), 2)
}
