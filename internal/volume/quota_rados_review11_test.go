//go:build ceph

package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/rados"
)

// cephCLI runs the ceph command line against the test cluster.
func cephCLI(t *testing.T, args ...string) {
	t.Helper()
	conf := os.Getenv("ARCHIP_TEST_CEPH_CONF")
	out, err := exec.Command("ceph", append([]string{"-c", conf}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ceph %v: %v (%s)", args, err, out)
	}
}

// openQuotaPool makes a pool of its own (deleted at the end) and opens a
// store on it.
func openQuotaPool(t *testing.T) (*rados.Store, string) {
	t.Helper()
	conf := os.Getenv("ARCHIP_TEST_CEPH_CONF")
	if conf == "" {
		rados.OpenTestStore(t) // skips, or fails under CI=true
	}
	pool := fmt.Sprintf("archip-r11-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	cephCLI(t, "osd", "pool", "create", pool, "8", "8", "--autoscale-mode", "off")
	t.Cleanup(func() {
		cephCLI(t, "osd", "pool", "set-quota", pool, "max_objects", "0")
		cephCLI(t, "osd", "pool", "delete", pool, pool, "--yes-i-really-really-mean-it")
	})
	u, _ := url.Parse("rados://" + pool + "?conf=" + url.QueryEscape(conf))
	s, err := rados.Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, pool
}

// waitPoolFull waits until writes to the pool are refused with
// ErrNoSpace (full) or land (!full: three probes in a row, each an
// in-place write and its Sync).
func waitPoolFull(t *testing.T, s *rados.Store, full bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	ok := 0
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the pool never became full=%v", full)
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		name := fmt.Sprintf("scratch%d-%d", time.Now().UnixNano(), i)
		err := s.WriteAt(pctx, name, []byte("x"), 0)
		if err == nil {
			err = s.Sync(pctx, name)
		}
		cancel()
		switch {
		case full && errors.Is(err, objstore.ErrNoSpace):
			return
		case !full && err == nil:
			if ok++; ok == 3 {
				return
			}
			continue
		case err != nil && !errors.Is(err, objstore.ErrNoSpace):
			t.Fatalf("scratch write: %v", err)
		}
		ok = 0
		time.Sleep(500 * time.Millisecond)
	}
}

// TestReview11RadosFullPoolLogCheckpoint: the same loss as
// TestReview11LogCheckpointDropsFailedAppend with a real failure: a
// logged write's append is sent while the pool is over its quota (it
// returns nil; the OSD refuses it with EDQUOT), the quota is lifted,
// more logged writes take the log past its bound, and the flush, whose
// checkpoint reads the refused record's place (zeros) into the block and
// drops the log unsynced, must fail (it reported success before the
// checkpoint settled the logs it reads).
func TestReview11RadosFullPoolLogCheckpoint(t *testing.T) {
	defer setLog(true)()
	defer setLogBound(bs)()
	s, pool := openQuotaPool(t)
	id := newClone(t, s, 4)
	clk := newTestClock()
	v, _ := leasedWriter(t, s, id.String(), "a", clk)
	if !v.logOn {
		t.Fatal("the writer does not log")
	}
	want := pattern(4*bs, 1)
	write := func(p []byte, off int64) error {
		err := v.WriteAt(ctx, p, off, false)
		if err == nil {
			copy(want[off:], p)
		}
		return err
	}
	if err := write(pattern(4096, 0x10), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cephCLI(t, "osd", "pool", "set-quota", pool, "max_objects", "1")
	waitPoolFull(t, s, true)
	if err := write(pattern(4096, 0x20), 8192); err != nil {
		t.Fatalf("a logged write on a full pool failed at once (%v): it should return once sent", err)
	}
	cephCLI(t, "osd", "pool", "set-quota", pool, "max_objects", "0")
	waitPoolFull(t, s, false)
	for k := range 9 {
		if err := write(pattern(8192, byte(0x30+k)), int64(bs+k*8192)); err != nil {
			t.Fatal(err)
		}
	}
	err := v.Flush(ctx)
	t.Logf("flush: %v", err)
	got := make([]byte, len(want))
	if rerr := v.ReadAt(ctx, got, 0); rerr != nil {
		t.Fatalf("flush: %v; read: %v", err, rerr)
	}
	if err == nil {
		t.Fatalf("the flush after a logged write refused by the OSD (EDQUOT) returned nil; the volume reads %x... where the write put %x... (equal: %v)",
			got[8192:8200], want[8192:8200], bytes.Equal(got, want))
	}
}
