package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore/s3"
)

// TestSplitServe runs archip serve on the split configuration (package
// pools): metadata on file://, blocks on s3://, driven as TestS3Serve
// is.
func TestSplitServe(t *testing.T) {
	need(t, "qemu-io", "qemu-img", "fio")
	e := &env{t: t, dir: t.TempDir()}
	data := s3.TestStoreURL(t, s3.TestServer(t, "versitygw"), fmt.Sprintf("e2esplit%d", os.Getpid()))
	conf := filepath.Join(e.dir, "store.toml")
	body := fmt.Sprintf("metadata = %q\n[pools]\ns3 = %q\n", "file://"+filepath.Join(e.dir, "meta"), data)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	e.store = "pools://" + conf
	driveServe(t, e)
}
