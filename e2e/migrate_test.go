package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vm is a QEMU process running the tiny guest.
type vm struct {
	t      *testing.T
	cmd    *exec.Cmd
	serial string // the guest's console, as a file
	qmp    *qmp
}

// startVM starts QEMU (TCG) with the guest's disk on the NBD export name
// of daemon d; incoming, if not empty, makes it a migration destination
// listening there.
func startVM(t *testing.T, e *env, label, kernel, initrd string, d *daemon, name, incoming string) *vm {
	t.Helper()
	return startVMDisk(t, e, label, kernel, initrd, incoming,
		"-blockdev", fmt.Sprintf("driver=nbd,server.type=unix,server.path=%s,export=%s,node-name=d0,cache.direct=on", d.sock, name),
		"-device", "virtio-blk-pci,drive=d0")
}

// startVMDisk is startVM with the QEMU arguments that give the guest its
// disk.
func startVMDisk(t *testing.T, e *env, label, kernel, initrd, incoming string, disk ...string) *vm {
	t.Helper()
	v := &vm{t: t, serial: e.path(label + ".console")}
	qmpSock := e.path(label + ".qmp")
	args := []string{"-accel", "tcg", "-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 quiet panic=-1",
		"-serial", "file:" + v.serial,
		"-qmp", "unix:" + qmpSock + ",server=on,wait=off"}
	args = append(args, disk...)
	if incoming != "" {
		args = append(args, "-incoming", "tcp:"+incoming)
	}
	v.cmd = exec.Command("qemu-system-x86_64", args...)
	var stderr strings.Builder
	v.cmd.Stderr = &stderr
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.cmd.Process.Kill(); v.cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", qmpSock)
		if err == nil {
			v.qmp = newQMP(t, c)
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU %s: no QMP socket after 30 s: %v\n%s", label, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var ackRE = regexp.MustCompile(`(?m)^ACK (\d+)\r?$`)

// acks returns the highest record the guest reported on this VM's
// console, or -1; it fails the test if the guest reported a failure.
func (v *vm) acks() int {
	v.t.Helper()
	b, _ := os.ReadFile(v.serial)
	if i := strings.Index(string(b), "FAIL"); i >= 0 {
		v.t.Fatalf("the guest failed: %s", strings.SplitN(string(b[i:]), "\n", 2)[0])
	}
	best := -1
	for _, m := range ackRE.FindAllSubmatch(b, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		best = max(best, n)
	}
	return best
}

// waitAcks waits until the guest on v has reported record n.
func (v *vm) waitAcks(n int, timeout time.Duration) {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for v.acks() < n {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(v.serial)
			v.t.Fatalf("the guest did not report record %d within %s (last %d); console:\n%s", n, timeout, v.acks(), tail(string(b), 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// qmp is a QEMU Machine Protocol client: one JSON object per line.
type qmp struct {
	t  *testing.T
	c  net.Conn
	rd *bufio.Reader
}

func newQMP(t *testing.T, c net.Conn) *qmp {
	q := &qmp{t: t, c: c, rd: bufio.NewReader(c)}
	q.read() // the greeting
	q.do("qmp_capabilities", nil)
	return q
}

func (q *qmp) read() map[string]json.RawMessage {
	q.t.Helper()
	q.c.SetReadDeadline(time.Now().Add(60 * time.Second))
	line, err := q.rd.ReadBytes('\n')
	if err != nil {
		q.t.Fatalf("QMP: %v", err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		q.t.Fatalf("QMP: %v: %s", err, line)
	}
	return m
}

// do runs a command and returns its "return" value; events that arrive
// meanwhile are skipped.
func (q *qmp) do(cmd string, args any) json.RawMessage {
	q.t.Helper()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		q.t.Fatalf("QMP %s: %v", cmd, err)
	}
	for {
		m := q.read()
		if e, ok := m["error"]; ok {
			q.t.Fatalf("QMP %s: %s", cmd, e)
		}
		if r, ok := m["return"]; ok {
			return r
		}
	}
}

// migrate moves the running guest from src to dst (started with
// incoming addr) and waits until QEMU says completed.
func migrate(t *testing.T, src, dst *vm, addr string) {
	t.Helper()
	start := time.Now()
	src.qmp.do("migrate", map[string]any{"uri": "tcp:" + addr})
	for {
		var st struct {
			Status   string `json:"status"`
			Downtime int64  `json:"downtime"`
			Error    string `json:"error-desc"`
		}
		json.Unmarshal(src.qmp.do("query-migrate", nil), &st)
		switch st.Status {
		case "completed":
			t.Logf("migration completed in %s, downtime %d ms", time.Since(start).Round(time.Millisecond), st.Downtime)
			return
		case "failed", "cancelled":
			t.Fatalf("migration %s: %s", st.Status, st.Error)
		}
		if time.Since(start) > 120*time.Second {
			t.Fatalf("migration still %q after 120 s", st.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestLiveMigration boots a real guest (TCG) from a clone of an image,
// attached over NBD to daemon A, while it writes numbered records to
// its disk with O_DIRECT; migrates it with QMP to a QEMU attached to the
// same volume through daemon B (the lease moves by handoff, no manual
// step), lets it write there, migrates it back to A, and checks that the
// volume holds every record the guest reported, contiguous. It also times
// "a VM from an image": clone, attach and first write, against copying
// the same image with qemu-img convert.
func TestLiveMigration(t *testing.T) {
	need(t, "qemu-system-x86_64", "qemu-img", "qemu-io")
	kernel, initrd := buildGuest(t)
	e := newEnv(t)
	img := e.randomFile("image.raw", 256<<20, 1<<30, 6)
	e.archip("image", "import", img, "base")
	a, b := e.serve("--node-id", "a"), e.serve("--node-id", "b")

	// A VM disk from an image: clone, attach, first write acknowledged.
	start := time.Now()
	e.archip("volume", "clone", "base", "probe")
	cloned := time.Since(start)
	qemuIO(t, a.uri("probe"), "write -P 0x5a 0 4k")
	attached := time.Since(start)
	start = time.Now()
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", a.uri("base"), e.path("copy.raw"))
	copied := time.Since(start)
	os.Remove(e.path("copy.raw"))
	t.Logf("VM disk from a 1 GiB image (256 MiB of data): clone %s, clone + attach + first write acknowledged %s; qemu-img convert of the same image %s (%.0fx)",
		cloned.Round(time.Millisecond), attached.Round(time.Millisecond), copied.Round(time.Millisecond), float64(copied)/float64(attached))

	start = time.Now()
	e.archip("volume", "clone", "base", "vm")
	src := startVM(t, e, "src", kernel, initrd, a, "vm", "")
	src.waitAcks(0, 120*time.Second)
	t.Logf("guest booted from a fresh clone, first O_DIRECT write acknowledged after %s (boot under TCG included)", time.Since(start).Round(time.Millisecond))
	src.waitAcks(50, 60*time.Second)

	addr := freeAddr(t)
	dst := startVM(t, e, "dst", kernel, initrd, b, "vm", addr)
	migrate(t, src, dst, addr)
	before := src.acks()
	dst.waitAcks(before+100, 60*time.Second)
	if b.logged("handed over")+a.logged("handed over") < 1 {
		t.Fatal("the guest writes through B, but A never handed the volume over")
	}
	src.qmp.do("quit", nil)

	addr = freeAddr(t)
	back := startVM(t, e, "back", kernel, initrd, a, "vm", addr)
	migrate(t, dst, back, addr)
	mid := dst.acks()
	back.waitAcks(mid+100, 60*time.Second)
	dst.qmp.do("quit", nil)
	back.qmp.do("stop", nil)
	last := back.acks()
	back.qmp.do("quit", nil)
	back.cmd.Wait()
	t.Logf("records acknowledged: %d on A, %d more on B, %d more back on A; handoffs: A %d, B %d",
		before+1, mid-before, last-mid, a.logged("handed over"), b.logged("handed over"))

	data := []byte(e.archip("volume", "read", "vm", "--offset", "0", "--length", strconv.Itoa((last+1)*512)))
	for i := 0; i <= last; i++ {
		want := fmt.Sprintf("REC %08d\n", i)
		rec := data[i*512 : (i+1)*512]
		if string(rec[:len(want)]) != want {
			t.Fatalf("record %d of %d: sector holds %q", i, last, rec[:16])
		}
		for _, c := range rec[len(want):] {
			if c != byte(i%251) {
				t.Fatalf("record %d: torn (padding byte %d, want %d)", i, c, i%251)
			}
		}
	}
}
