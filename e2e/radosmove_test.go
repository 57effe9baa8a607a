//go:build ceph

package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore/s3"
)

// TestRadosPoolsMoveLive: a volume (and its snapshot) moves file → RADOS
// → S3 (the cluster's radosgw) → file in a store of three pools, while a
// libnbd client writes 4 KiB records, each followed by a flush, through
// archip serve; the first move's mover is killed with SIGKILL part way
// and run again, and between the first and second moves the client moves
// from one daemon to another (the second asks the first to hand the
// volume over). The client never sees an error, every write acknowledged
// reads back at the end, and after each move volume info names the
// target and store stats agrees, pool by pool, with du on the file pool
// and the object listing of the RADOS namespace. The latency of the
// client's write+flush during each move (the longest is the cut-over)
// and the switch is logged.
func TestRadosPoolsMoveLive(t *testing.T) {
	needLibnbd(t)
	re := radosEnv(t)
	conf := os.Getenv("ARCHIP_TEST_CEPH_CONF")
	radosURL, _ := url.Parse(re.store)
	ns := radosURL.Query().Get("namespace")
	data := s3.TestStoreURL(t, s3.TestServer(t, "radosgw"), fmt.Sprintf("e2eradosmove%d", os.Getpid()))
	e := poolsEnv(t, "rados", re.store, "s3", data)
	local := filepath.Join(e.dir, "local")
	const nops = 200000
	seed := seedMoveVolume(e, nops, "")
	ops := seed.ops
	ctl := e.path("ctl")

	a := e.serve("--node-id", "a", "--flush-interval", "0")
	b := e.serve("--node-id", "b", "--flush-interval", "0")
	r := startSwitchWriter(t, a, b, ops, ctl)
	// pause stops the writer between two writes (each acknowledged with
	// its flush), so that the pools hold still while they are counted.
	pause := func() func() {
		t.Helper()
		r.paused.Store(-1)
		os.WriteFile(ctl+".pause", nil, 0o644)
		r.waitFor("the pause", func() bool { return r.paused.Load() >= 0 })
		return func() { os.Remove(ctl + ".pause") }
	}
	check := func(to string) {
		t.Helper()
		resume := pause()
		defer resume()
		var info struct {
			Pool       string `json:"pool"`
			MovingFrom string `json:"moving_from"`
		}
		if err := json.Unmarshal([]byte(e.archip("--json", "volume", "info", "v")), &info); err != nil {
			t.Fatal(err)
		}
		if info.Pool != to || info.MovingFrom != "" {
			t.Fatalf("volume info after the move to %s: pool %q, moving from %q", to, info.Pool, info.MovingFrom)
		}
		var st struct {
			Pools []struct {
				Name    string `json:"name"`
				Objects int64  `json:"objects"`
				Bytes   int64  `json:"bytes"`
			} `json:"pools"`
		}
		if err := json.Unmarshal([]byte(e.archip("--json", "store", "stats")), &st); err != nil {
			t.Fatal(err)
		}
		var summary []string
		for _, p := range st.Pools {
			summary = append(summary, fmt.Sprintf("%s %d blocks %d bytes", p.Name, p.Objects, p.Bytes))
			switch p.Name {
			case "local":
				files, bytes := duFiles(t, local)
				if files != p.Objects || bytes != p.Bytes {
					t.Errorf("after the move to %s, store stats says pool local holds %d blocks, %d bytes; du: %d files, %d bytes", to, p.Objects, p.Bytes, files, bytes)
				}
			case "rados":
				listed := strings.Fields(run(t, "rados", "-c", conf, "-p", radosURL.Host, "-N", ns, "ls"))
				if int64(len(listed)) != p.Objects {
					t.Errorf("after the move to %s, store stats says pool rados holds %d blocks; rados ls lists %d objects", to, p.Objects, len(listed))
				}
			}
			if p.Name == to && p.Objects == 0 {
				t.Errorf("after the move to %s, store stats says it holds nothing", to)
			}
		}
		t.Logf("after the move to %s: %s", to, strings.Join(summary, "; "))
	}
	move := func(to string) {
		t.Helper()
		before := r.last.Load()
		from := time.Now()
		res := e.archip("volume", "move", "v", "--to", to)
		end := time.Now()
		t.Logf("%s(%d writes during the move)", res, r.last.Load()-before)
		r.lat.window(t, "move to "+to, from, end)
		r.waitWrites(30)
		check(to)
	}

	r.waitWrites(50)
	// file → RADOS through daemon a: a mover killed with SIGKILL part way
	// (its copy slowed by --rate), then run again.
	from := time.Now()
	mv := exec.Command(archipBin, "--store", e.store, "volume", "move", "v", "--to", "rados", "--rate", "1M")
	if err := mv.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Duration(200+rand.IntN(1000)) * time.Millisecond)
	mv.Process.Kill()
	mv.Wait()
	r.waitWrites(20)
	// Killed before its start, part way, or after it finished: a rerun
	// starts, finishes, or finds nothing to do.
	if info := e.archip("volume", "info", "v"); strings.Contains(info, "moving from") || !strings.Contains(info, " rados (") {
		t.Logf("mover killed before it finished; run again: %s", e.archip("volume", "move", "v", "--to", "rados"))
	} else {
		t.Log("mover killed after it finished")
	}
	r.lat.window(t, "move to rados (killed, rerun)", from, time.Now())
	r.waitWrites(30)
	check("rados")

	// The client moves to daemon b, which asks a to hand the volume over.
	r.switchDaemons()

	move("s3")
	move("local")

	acked := r.stop()
	if acked >= nops-1 {
		t.Fatal("the writer ran out of writes")
	}
	r.lat.rest(t)
	seed.check(t, b, acked)
}

// duFiles counts the objects of the file store at root and their bytes,
// with du: the newest generation of each object's directory (the file
// store's layout, objstore.File), when it is a file, not a tombstone.
func duFiles(t *testing.T, root string) (files, size int64) {
	t.Helper()
	newest := map[string]string{}
	err := filepath.WalkDir(filepath.Join(root, "obj"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || len(d.Name()) != 16 {
			return err
		}
		if dir := filepath.Dir(p); d.Name() > filepath.Base(newest[dir]) {
			newest[dir] = p
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var list []string
	for _, p := range newest {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			list = append(list, p)
		}
	}
	if len(list) == 0 {
		return 0, 0
	}
	cmd := exec.Command("du", "-cb", "--apparent-size", "--files0-from=-")
	cmd.Stdin = strings.NewReader(strings.Join(list, "\x00"))
	outb, err := cmd.Output()
	if err != nil {
		t.Fatalf("du: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(outb)), "\n")
	total, _, _ := strings.Cut(lines[len(lines)-1], "\t")
	size, err = strconv.ParseInt(total, 10, 64)
	if err != nil {
		t.Fatalf("du total %q: %v", lines[len(lines)-1], err)
	}
	return int64(len(list)), size
}
