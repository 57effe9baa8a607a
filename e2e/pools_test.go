package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore/s3"
)

// TestSplitServe runs archip serve on the split configuration (package
// pools): metadata on file://, blocks on s3://, driven as TestS3Serve
// is; with the write logs' data written into blocks at each checkpoint
// (the default) and kept in the metadata backend (logs = "metadata":
// checkpoints store the log's index).
func TestSplitServe(t *testing.T) {
	need(t, "qemu-io", "qemu-img", "fio")
	for i, logs := range []string{"", "metadata"} {
		t.Run("logs="+logs, func(t *testing.T) {
			e := &env{t: t, dir: t.TempDir()}
			data := s3.TestStoreURL(t, s3.TestServer(t, "versitygw"), fmt.Sprintf("e2esplit%d-%d", os.Getpid(), i))
			conf := filepath.Join(e.dir, "store.toml")
			body := fmt.Sprintf("metadata = %q\n", "file://"+filepath.Join(e.dir, "meta"))
			if logs != "" {
				body += fmt.Sprintf("logs = %q\n", logs)
			}
			body += fmt.Sprintf("[pools]\ns3 = %q\n", data)
			if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			e.store = "pools://" + conf
			driveServe(t, e)
			// The last writer's close stored the write log's index
			// (in the metadata backend) only where logs = "metadata".
			var indexes []string
			filepath.WalkDir(filepath.Join(e.dir, "meta"), func(p string, d os.DirEntry, err error) error {
				if err == nil && strings.Contains(p, "/x/") && !d.IsDir() {
					indexes = append(indexes, p)
				}
				return nil
			})
			if (len(indexes) > 0) != (logs == "metadata") {
				t.Fatalf("logs = %q: write log index files %v", logs, indexes)
			}
		})
	}
}

// TestPoolsServe: an image on an S3 pool, a clone of it on a file pool,
// served by archip serve: the clone reads the image's blocks from S3 and
// writes its own to the file pool.
func TestPoolsServe(t *testing.T) {
	need(t, "qemu-io", "qemu-img")
	e := poolsEnv(t, "s3", s3.TestStoreURL(t, s3.TestServer(t, "versitygw"), fmt.Sprintf("e2epools%d", os.Getpid())))
	img := e.randomFile("img.raw", 6<<20, 16<<20, 9)
	e.archip("image", "import", "--pool", "s3", img, "base")
	e.archip("volume", "clone", "base", "vm")
	stats := func() string { return strings.Join(strings.Fields(e.archip("store", "stats")), " ") }
	if out := stats(); !strings.Contains(out, "pool local: 0 B in 0 blocks (default)") {
		t.Fatalf("the image's blocks are not all on S3:\n%s", out)
	}
	d := e.serve()
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, d.uri("vm"))
	qemuIO(t, d.uri("vm"), "write -P 0x42 12345 100000", "read -P 0x42 12345 100000")
	d.stop(t)
	if out := stats(); strings.Contains(out, "pool local: 0 B in 0 blocks") {
		t.Fatalf("the clone's writes did not reach its pool:\n%s", out)
	}
	if out := e.archip("volume", "info", "base"); !strings.Contains(out, "pool:") || !strings.Contains(out, "s3 (") {
		t.Fatalf("volume info base:\n%s", out)
	}
	d = e.serve()
	qemuIO(t, d.uri("vm"), "read -P 0x42 12345 100000")
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, d.uri("base"))
}
