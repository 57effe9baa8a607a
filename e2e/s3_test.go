package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore/s3"
)

// s3Env is an env whose store is a fresh prefix of a test S3 server
// (versitygw, started for the test; radosgw in builds with -tags ceph).
func s3Env(t *testing.T, srv string) *env {
	e := &env{t: t, dir: t.TempDir()}
	e.store = s3.TestStoreURL(t, s3.TestServer(t, srv), fmt.Sprintf("e2e%d-%s", os.Getpid(), srv))
	return e
}

// TestS3Serve runs archip serve on s3:// (no in-place writes: whole
// blocks are replaced) and drives it as TestRadosServe does: an imported
// image, a clone, qemu-io patterns, qemu-img compare, fio with
// verification, a snapshot that keeps its data.
func TestS3Serve(t *testing.T) {
	need(t, "qemu-io", "qemu-img", "fio")
	for _, srv := range s3.TestServerNames {
		t.Run(srv, func(t *testing.T) {
			driveServe(t, s3Env(t, srv))
		})
	}
}

// driveServe drives archip serve on e's store as on files: an imported
// image, a clone of it, qemu-io patterns, qemu-img compare, fio with
// verification, a snapshot that keeps its data (TestRadosServe,
// TestS3Serve).
func driveServe(t *testing.T, e *env) {
	img := e.randomFile("img.raw", 6<<20, 32<<20, 7)
	e.archip("image", "import", img, "base")
	e.archip("volume", "clone", "base", "vm")
	d := e.serve()
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, d.uri("vm"))
	qemuIO(t, d.uri("vm"), "write -P 0x42 12345 100000", "read -P 0x42 12345 100000")
	run(t, "fio", "--name=v", "--ioengine=nbd", "--uri="+d.uri("vm"), "--rw=randwrite", "--bs=16k",
		"--size=8M", "--offset=16M", "--iodepth=8", "--verify=crc32c", "--do_verify=1", "--verify_state_save=0")
	d.stop(t)
	e.archip("volume", "snapshot", "vm", "vm@1")
	d = e.serve()
	qemuIO(t, d.uri("vm"), "write -P 0x99 12345 100000")
	qemuIO(t, d.uri("vm@1"), "read -P 0x42 12345 100000")
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, d.uri("base"))
}
