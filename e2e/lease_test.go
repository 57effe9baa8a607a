package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

const recordPy = `
import nbd, sys, time
SLOT, SLOTS = 4096, 64
def rec(i): return (b"seq %08d " % i).ljust(SLOT, b".")
`

// The alternating writer: bursts of writes through one daemon then the
// other; before each burst it reads back everything through the daemon
// it is about to write to (which only follows the volume), and after the
// burst through the one that wrote.
const alternatePy = recordPy + `
hs = [nbd.NBD(), nbd.NBD()]
hs[0].connect_uri(sys.argv[1]); hs[1].connect_uri(sys.argv[2])
model, i = {}, 0
def check(h, when):
    for slot, j in model.items():
        got = h.pread(SLOT, slot * SLOT)
        if got != rec(j):
            sys.exit("%s: slot %d reads %r, want record %d" % (when, slot, got[:13], j))
for rnd in range(12):
    h = hs[rnd % 2]
    check(h, "round %d, before writing, through the follower" % rnd)
    for k in range(25):
        slot = (i * 7) % SLOTS
        h.pwrite(rec(i), slot * SLOT)
        model[slot] = i
        i += 1
    check(h, "round %d, after writing, through the writer" % rnd)
    h.flush()
print(i)
`

// TestTwoDaemonsHandoff: two 'archip serve' processes share one file
// store (the NFS case); one client writes through A, then through B, and
// so on. Each switch moves the lease by handoff; every write is read back
// through the other daemon, and at the end each slot holds its last
// write.
func TestTwoDaemonsHandoff(t *testing.T) {
	needLibnbd(t)
	alternate(t, newEnv(t))
}

// alternate runs alternatePy through two daemons on e's store and checks
// the handoffs and the result.
func alternate(t *testing.T, e *env) {
	t.Helper()
	e.archip("volume", "create", "shared", "--size", "1M", "--block-size", "64K")
	a, b := e.serve("--node-id", "a"), e.serve("--node-id", "b")
	out := run(t, "/usr/bin/python3", "-c", alternatePy, a.uri("shared"), b.uri("shared"))
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || n != 300 {
		t.Fatalf("writer printed %q", out)
	}
	if got := a.logged("handed over") + b.logged("handed over"); got < 11 {
		t.Fatalf("%d handoffs for 12 rounds alternating between two daemons", got)
	}
	// Every slot holds its last record, read by a third party.
	last := map[int]int{}
	for i := range n {
		last[(i*7)%64] = i
	}
	data := []byte(e.archip("volume", "read", "shared", "--offset", "0", "--length", strconv.Itoa(64*4096)))
	for slot, i := range last {
		want := fmt.Sprintf("seq %08d ", i)
		if got := string(data[slot*4096 : slot*4096+len(want)]); got != want {
			t.Errorf("slot %d holds %q, want %q", slot, got, want)
		}
	}
}

// The lone writer: writes through one daemon, flushing every 4 writes
// and printing the count acknowledged, 40 writes; then 3 more without a
// flush, says so and waits for a line on stdin; then goes on writing
// until a request fails.
const loneWriterPy = recordPy + `
h = nbd.NBD()
h.connect_uri(sys.argv[1])
i = 0
try:
    while i < 40:
        h.pwrite(rec(i), (i % SLOTS) * SLOT)
        i += 1
        if i % 4 == 0:
            h.flush()
            print("acked", i, flush=True)
    for k in range(3):
        h.pwrite(rec(i), (i % SLOTS) * SLOT)
        i += 1
    print("unflushed", i, flush=True)
    sys.stdin.readline()
    while True:
        h.pwrite(rec(i), (i % SLOTS) * SLOT)
        i += 1
        if i % 4 == 0:
            h.flush()
            print("acked", i, flush=True)
except Exception as e:
    print("failed", i, e, flush=True)
`

type leaseShow struct {
	State  string `json:"state"`
	Record struct {
		Owner   string    `json:"owner"`
		Term    uint64    `json:"term"`
		Expires time.Time `json:"expires"`
	} `json:"record"`
}

// TestPartition: daemon A, whose client has written without flushing
// yet, freezes (SIGSTOP: it answers no handoff request and renews no
// lease, as if cut off). A write through daemon B waits until A's lease
// has expired, then takes it over in a new epoch. When A wakes up, its
// client's next request fails (its unflushed writes may be lost, so it
// must not go on as if they were not), and no write of A reaches the
// store after that moment: the volume holds only records A wrote before
// it froze, and no object of the volume changed after A woke up.
func TestPartition(t *testing.T) {
	needLibnbd(t)
	need(t, "qemu-io")
	e := newEnv(t)
	e.archip("volume", "create", "p", "--size", "2M", "--block-size", "64K")
	lease := []string{"--lease-ttl", "2s", "--max-clock-drift", "200ms", "--flush-interval", "0"}
	a := e.serve(append([]string{"--node-id", "a"}, lease...)...)
	b := e.serve(append([]string{"--node-id", "b"}, lease...)...)

	w := exec.Command("/usr/bin/python3", "-c", loneWriterPy, a.uri("p"))
	stdout, _ := w.StdoutPipe()
	stdin, _ := w.StdinPipe()
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Process.Kill()
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	acked, unflushed := 0, 0
	for unflushed == 0 {
		l, ok := <-lines
		if !ok {
			t.Fatal("the writer stopped early")
		}
		fmt.Sscanf(l, "acked %d", &acked)
		fmt.Sscanf(l, "unflushed %d", &unflushed)
	}
	a.cmd.Process.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	var held leaseShow
	json.Unmarshal([]byte(e.archip("lease", "show", "p", "--json")), &held)
	if held.State != "held" || held.Record.Owner != "a" {
		t.Fatalf("lease while A is frozen: %+v", held)
	}

	qemuIO(t, b.uri("p"), "write -P 0xbb 1M 64k", "flush")
	tookOver := time.Now()
	var after leaseShow
	json.Unmarshal([]byte(e.archip("lease", "show", "p", "--json")), &after)
	t.Logf("A frozen at %s; its lease expired at %s; B's write acknowledged after %s",
		stopped.Format(time.StampMilli), held.Record.Expires.Format(time.StampMilli), tookOver.Sub(stopped).Round(time.Millisecond))
	if !tookOver.After(held.Record.Expires.Add(200 * time.Millisecond)) {
		t.Fatalf("B wrote at %s, before A's lease expired at %s", tookOver, held.Record.Expires)
	}
	if after.Record.Term != held.Record.Term+1 || after.Record.Owner == "a" {
		t.Fatalf("lease after the takeover: %+v (before: %+v)", after, held)
	}
	if b.logged("took over an expired lease") != 1 {
		t.Fatal("B does not report the takeover")
	}

	a.cmd.Process.Signal(syscall.SIGCONT)
	woke := time.Now()
	fmt.Fprintln(stdin, "go on")
	timer := time.AfterFunc(30*time.Second, func() { w.Process.Kill() }) // a writer that never fails
	defer timer.Stop()
	failedAt := -1
	for l := range lines {
		if strings.HasPrefix(l, "failed") {
			fmt.Sscanf(l, "failed %d", &failedAt)
			break
		}
		fmt.Sscanf(l, "acked %d", &acked)
	}
	if failedAt < 0 {
		t.Fatal("A's client kept writing after A lost its lease")
	}
	t.Logf("A's client: %d writes acknowledged by a flush, %d written, first failure at write %d", acked, unflushed, failedAt)
	if failedAt != unflushed {
		t.Fatalf("A's client failed at write %d, not at its first write after the takeover (%d)", failedAt, unflushed)
	}
	w.Wait()

	// By content: each slot holds a record A wrote before it failed, no
	// older than the last flushed write to that slot; B's write is there.
	data := []byte(e.archip("volume", "read", "p", "--offset", "0", "--length", strconv.Itoa(64*4096)))
	for slot := range 64 {
		var got int
		if _, err := fmt.Sscanf(string(data[slot*4096:slot*4096+13]), "seq %d", &got); err != nil {
			if slot < acked {
				t.Errorf("slot %d holds %q", slot, data[slot*4096:slot*4096+13])
			}
			continue
		}
		lastFlushed := -1
		for i := slot; i < acked; i += 64 {
			lastFlushed = i
		}
		if got%64 != slot || got < lastFlushed || got >= failedAt {
			t.Errorf("slot %d holds record %d (last flushed %d, A failed at %d)", slot, got, lastFlushed, failedAt)
		}
	}
	bb := []byte(e.archip("volume", "read", "p", "--offset", "1M", "--length", "64K"))
	for _, c := range bb {
		if c != 0xbb {
			t.Fatal("B's write is not there")
		}
	}
	// By object times: nothing of the volume changed after A woke up.
	var info struct {
		ID string `json:"id"`
	}
	json.Unmarshal([]byte(e.archip("volume", "info", "p", "--json")), &info)
	s, err := objstore.OpenFile(filepath.Join(e.dir, "store"), false)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = s.List(context.Background(), "vol/"+info.ID+"/", func(in objstore.Info) error {
		n++
		if !in.ModTime.Before(woke) {
			t.Errorf("%s changed at %s, after A woke up at %s", in.Name, in.ModTime, woke)
		}
		return nil
	})
	if err != nil || n < 3 {
		t.Fatalf("listing the volume's objects: %d, %v", n, err)
	}
}

// A steady writer: record i in slot i, a flush after each and a short
// pause, printing the count at the end.
const steadyWriterPy = recordPy + `
h = nbd.NBD()
h.connect_uri(sys.argv[1])
i = 0
while i < int(sys.argv[2]):
    h.pwrite(rec(i), i * SLOT)
    h.flush()
    i += 1
    time.sleep(0.002)
print(i, flush=True)
`

// TestSnapshotWhileWriting: 'archip volume snapshot' of a volume a client
// is writing through a daemon takes the lease by handoff for a moment;
// the client never notices, and each snapshot holds a prefix of the
// client's records.
func TestSnapshotWhileWriting(t *testing.T) {
	needLibnbd(t)
	e := newEnv(t)
	const n = 500
	e.archip("volume", "create", "busy", "--size", "2M", "--block-size", "64K")
	d := e.serve("--node-id", "a")
	w := exec.Command("/usr/bin/python3", "-c", steadyWriterPy, d.uri("busy"), strconv.Itoa(n))
	var out strings.Builder
	w.Stdout, w.Stderr = &out, &out
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	var snaps []string
	for k := range 3 {
		time.Sleep(150 * time.Millisecond)
		name := fmt.Sprintf("busy-%d", k)
		e.archip("volume", "snapshot", "busy", name)
		snaps = append(snaps, name)
	}
	if err := w.Wait(); err != nil || strings.TrimSpace(out.String()) != strconv.Itoa(n) {
		t.Fatalf("the writer: %v: %s", err, out.String())
	}
	if d.logged("handed over") < 3 {
		t.Fatalf("%d handoffs for 3 snapshots; daemon log:\n%s", d.logged("handed over"), d.tail(1<<30))
	}
	for _, s := range snaps {
		data := []byte(e.archip("volume", "read", s, "--offset", "0", "--length", strconv.Itoa(n*4096)))
		k := 0
		for k < n && string(data[k*4096:k*4096+12]) == fmt.Sprintf("seq %08d", k) {
			k++
		}
		for i := k; i < n; i++ {
			if data[i*4096] != 0 {
				t.Fatalf("snapshot %s: records 0..%d, then %q at %d: not a prefix", s, k-1, data[i*4096:i*4096+12], i)
			}
		}
		t.Logf("snapshot %s holds records 0..%d", s, k-1)
	}
}
