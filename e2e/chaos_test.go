//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/archipelago-go/archip/internal/objstore"
)

// The chaos test's knobs. The lead may adjust them; docs/chaos.md says
// what each is for.
const (
	chaosRounds     = 12              // rounds in CI; ARCHIP_CHAOS_ROUNDS overrides
	chaosTTL        = 2 * time.Second // --lease-ttl of both daemons
	chaosDrift      = 200 * time.Millisecond
	chaosVolSize    = 8 << 20 // 128 blocks of 64 KiB, every one written
	chaosBlockSize  = "64K"
	chaosSlot       = 4096 // one record per slot
	chaosSlots      = chaosVolSize / chaosSlot
	chaosBurst      = 48               // writes per connection
	chaosFlushEvery = 8                // a FLUSH after this many writes
	chaosOpTimeout  = 90 * time.Second // hang protection for one client request
	chaosCmdTimeout = 5 * time.Minute  // hang protection for one archip command
	chaosProgress   = 3 * time.Minute  // hang protection: the writer must get a flush acknowledged within this after an action
	// chaosGCGrace is the --grace used when the CLI neither accepts a
	// tiny grace nor names its minimum in its refusal.
	// ARCHIP_CHAOS_GC_GRACE overrides the probe.
	chaosGCGrace = time.Hour
	// chaosDuSlack is how much more than the empty store's skeleton the
	// store may use on disk once everything is removed and collected.
	// What may legitimately stay: the catalog, the collector's lock and
	// similar fixed records, each a small file in about three
	// directories (16 KiB on ext4), and a handful of tombstones: 16
	// such objects fit. A residue per block (the test writes 128
	// blocks, several epochs each), per object directory (4 KiB each,
	// over 128 of them), per snapshot or per volume does not.
	chaosDuSlack = 256 << 10
)

// The client: one libnbd connection per process, driven line by line
// on stdin so that the test knows when each request was issued and
// when it was acknowledged. It says "started", then "c URI" connects,
// "w SLOT SEQ ROUND" writes record SEQ to SLOT, "f" flushes, "q"
// disconnects. Each answers "ok" or "err ...".
const chaosClientPy = `
import nbd, sys
SLOT = 4096
def rec(seq, rnd, slot):
    h = b"chaos w%08d r%04d s%05d\n" % (seq, rnd, slot)
    return h + bytes([seq % 251 + 1]) * (SLOT - len(h))
print("started", flush=True)
for line in sys.stdin:
    f = line.split()
    try:
        if f[0] == "c":
            h = nbd.NBD()
            h.connect_uri(f[1])
            if h.get_size() != int(sys.argv[1]):
                raise Exception("the export's size is %d, not %s" % (h.get_size(), sys.argv[1]))
        elif f[0] == "w":
            seq, rnd, slot = int(f[2]), int(f[3]), int(f[1])
            h.pwrite(rec(seq, rnd, slot), slot * SLOT)
        elif f[0] == "f":
            h.flush()
        elif f[0] == "q":
            h.shutdown()
            print("ok", flush=True)
            break
        print("ok", flush=True)
    except Exception as e:
        print("err", f[0] + ":", str(e).replace("\n", " "), flush=True)
        break
`

const chaosHeader = "chaos w%08d r%04d s%05d\n"

var chaosHeaderLen = len(fmt.Sprintf(chaosHeader, 0, 0, 0))

// chaosOracle records every write issued, when its answer came, and
// every write a FLUSH acknowledged. Sequence numbers are global and
// increase in the order the writes were issued; they also serve as the
// clock: a write was answered "at" the number of writes issued by then.
type chaosOracle struct {
	mu        sync.Mutex
	slotOf    []int32 // by sequence number: the slot written
	replyAt   []int32 // by sequence number: writes issued when its answer (success or error) came; never: MaxInt32
	durable   []int32 // by slot: the last write covered by an acknowledged flush, -1 if none
	acks      int     // flushes acknowledged
	writes    int     // writes acknowledged
	errs      int     // connections that ended in an error
	lastErr   string
	errList   []string // the first client errors, with the round
	errTail   []string // the last ones
	late      []string // what the clients of stopped daemons were told after the wake-up
	idle      int      // stops that found the writer connecting or disconnecting
	wrongSize int      // connections to an export of the wrong size
}

func newChaosOracle() *chaosOracle {
	o := &chaosOracle{durable: make([]int32, chaosSlots)}
	for i := range o.durable {
		o.durable[i] = -1
	}
	return o
}

// issue gives the sequence number of a write to slot about to be sent.
func (o *chaosOracle) issue(slot int) int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.slotOf = append(o.slotOf, int32(slot))
	o.replyAt = append(o.replyAt, math.MaxInt32)
	return int32(len(o.slotOf) - 1)
}

// replied records that the write seq was answered, with success or not.
func (o *chaosOracle) replied(seq int32, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.replyAt[seq] = int32(len(o.slotOf))
	if ok {
		o.writes++
	}
}

// flushed records that a flush covering seqs was acknowledged.
func (o *chaosOracle) flushed(seqs []int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range seqs {
		if sl := o.slotOf[s]; o.durable[sl] < s {
			o.durable[sl] = s
		}
	}
	o.acks++
}

// chaosState is what a volume or snapshot may hold: in each slot the
// last write flushed when the state was recorded (d), or a write to the
// slot issued before end that may have taken effect after d: one
// issued after d (written but not covered by a flush: old or new
// content), or one still unanswered when d was issued (a request a
// stopped daemon held; the client of a daemon that wakes up may be
// told it succeeded, and then it is the newer write). A write answered
// before d was issued is older than d, whatever the answer.
type chaosState struct {
	name    string
	durable []int32
	end     int32      // writes with a sequence number below end may be present
	sums    [][32]byte // a snapshot's slots as read when it was taken
}

// at records the flushed state now; the caller sets end.
func (o *chaosOracle) at(name string) *chaosState {
	o.mu.Lock()
	defer o.mu.Unlock()
	return &chaosState{name: name, durable: append([]int32(nil), o.durable...)}
}

func (o *chaosOracle) issued() int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return int32(len(o.slotOf))
}

func (o *chaosOracle) progress() (acks, errs int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.acks, o.errs
}

// check compares data (the whole volume) with the state and returns
// one line per slot that holds what it may not, and how many slots
// hold a flushed write.
func (o *chaosOracle) check(st *chaosState, data []byte) (bad []string, flushed int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(data) != chaosVolSize {
		return []string{fmt.Sprintf("%s: read %d bytes, want %d", st.name, len(data), chaosVolSize)}, 0
	}
	zero := make([]byte, chaosSlot)
	for slot := range chaosSlots {
		rec := data[slot*chaosSlot : (slot+1)*chaosSlot]
		d := st.durable[slot]
		if d >= 0 {
			flushed++
		}
		var seq, rnd, s int32 = -1, 0, 0
		if !bytes.Equal(rec, zero) {
			if _, err := fmt.Sscanf(string(rec[:chaosHeaderLen]), chaosHeader, &seq, &rnd, &s); err != nil || s != int32(slot) ||
				seq < 0 || int(seq) >= len(o.slotOf) || !bytes.Equal(rec[chaosHeaderLen:], bytes.Repeat([]byte{byte(seq%251 + 1)}, chaosSlot-chaosHeaderLen)) {
				bad = append(bad, fmt.Sprintf("%s: slot %d holds %q..., not a whole record of this slot (flushed: write %d)", st.name, slot, rec[:chaosHeaderLen], d))
				continue
			}
		}
		switch {
		case seq == d:
		case seq >= 0 && seq < st.end && o.slotOf[seq] == int32(slot) && (seq > d || o.replyAt[seq] > d):
		case seq < 0:
			bad = append(bad, fmt.Sprintf("%s: slot %d reads zeros; write %d to it was flushed", st.name, slot, d))
		case seq < d:
			bad = append(bad, fmt.Sprintf("%s: slot %d holds write %d (round %d, answered before write %d was issued), older than its flushed write %d", st.name, slot, seq, rnd, o.replyAt[seq], d))
		default:
			bad = append(bad, fmt.Sprintf("%s: slot %d holds write %d (round %d), issued after the state was taken (flushed: %d, end: %d)", st.name, slot, seq, rnd, d, st.end))
		}
	}
	return bad, flushed
}

// chaosRead reads a volume or snapshot and checks it against the
// oracle; it reports what is wrong, and returns what it read (nil if
// nothing) and whether all is well.
func chaosRead(t *testing.T, e *env, o *chaosOracle, st *chaosState, when string) ([]byte, bool) {
	out, msg, code := e.chaosRun("volume", "read", st.name, "--length", strconv.Itoa(chaosVolSize))
	if code != 0 {
		t.Errorf("volume read %s (%s): exit %d: %s", st.name, when, code, msg)
		return nil, false
	}
	bad, flushed := o.check(st, []byte(out))
	for k, b := range bad {
		if k == 10 {
			t.Errorf("%s (%s): ... %d slots wrong in all", st.name, when, len(bad))
			break
		}
		t.Errorf("%s (%s)", b, when)
	}
	if len(bad) == 0 && when == "at the end" {
		t.Logf("%s: all %d slots as allowed (%d hold flushed writes)", st.name, chaosSlots, flushed)
	}
	return []byte(out), len(bad) == 0
}

// chaosClient is one running client process.
type chaosClient struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

var (
	errChaosHang      = errors.New("no answer within the hang timeout")
	errChaosAbandoned = errors.New("its daemon is stopped: left to a straggler")
)

// startChaosClient starts a client process; connect it with "c URI".
func startChaosClient() (*chaosClient, error) {
	cmd := exec.Command("/usr/bin/python3", "-c", chaosClientPy, strconv.Itoa(chaosVolSize))
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &chaosClient{cmd: cmd, in: in, lines: make(chan string, 4)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	if err := c.wait(nil); err != nil {
		c.kill()
		return nil, err
	}
	return c, nil
}

// wait waits for the answer to the last request: nil for "ok" (or
// "ready"), an error for anything else, errChaosAbandoned as soon as
// abandon (if not nil) says so, errChaosHang after chaosOpTimeout.
func (c *chaosClient) wait(abandon func() bool) error {
	hang := time.After(chaosOpTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			switch {
			case !ok:
				return errors.New("the client exited")
			case l == "ok" || l == "started":
				return nil
			default:
				return errors.New(l)
			}
		case <-tick.C:
			if abandon != nil && abandon() {
				return errChaosAbandoned
			}
		case <-hang:
			return errChaosHang
		}
	}
}

func (c *chaosClient) send(req string) error {
	_, err := fmt.Fprintln(c.in, req)
	return err
}

// do sends one request and waits for its answer.
func (c *chaosClient) do(req string, abandon func() bool) error {
	if err := c.send(req); err != nil {
		return err
	}
	return c.wait(abandon)
}

func (c *chaosClient) kill() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// close disconnects cleanly if the client still answers; it says
// whether it was abandoned.
func (c *chaosClient) close(abandon func() bool) bool {
	if err := c.do("q", abandon); err != nil {
		c.kill()
		return errors.Is(err, errChaosAbandoned)
	}
	c.in.Close()
	c.cmd.Wait()
	return false
}

// chaosPair is the two daemons; a killed one is replaced by a new
// process with the same node id.
type chaosPair struct {
	mu      sync.Mutex
	d       [2]*daemon
	stopped [2]atomic.Bool // SIGSTOPped
	current atomic.Int32   // the daemon the writer writes through
}

func (p *chaosPair) isStopped(i int) bool { return p.stopped[i].Load() }

func (p *chaosPair) get(i int) *daemon {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.d[i]
}

func (p *chaosPair) set(i int, d *daemon) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.d[i] = d
}

var chaosNodes = [2]string{"a", "b"}

func (e *env) chaosServe(i int) *daemon {
	e.t.Helper()
	return e.serve("--node-id", chaosNodes[i], "--lease-ttl", chaosTTL.String(), "--max-clock-drift", chaosDrift.String())
}

// chaosRun runs archip with a hang timeout; it returns the output and
// the exit code (-1 if it did not run or hung).
func (e *env) chaosRun(args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), chaosCmdTimeout)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, archipBin, append([]string{"--store", e.store}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = 0
	if err != nil {
		code = -1
		var ee *exec.ExitError
		if errors.As(err, &ee) && ctx.Err() == nil {
			code = ee.ExitCode()
		}
	}
	return out.String(), strings.TrimSpace(errb.String()), code
}

// chaosBreak breaks the volume's lease by force: the one place that
// knows the command's flags.
func (e *env) chaosBreak(vol string) (string, int) {
	out, errs, code := e.chaosRun("lease", "break", vol, "--force")
	return strings.TrimSpace(out + " " + errs), code
}

var durationRE = regexp.MustCompile(`\b(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+\b`)

// chaosMinGrace finds the shortest --grace 'archip gc' accepts: a tiny
// one if accepted, else the largest duration its refusal names (or its
// --help, if the refusal names none), else chaosGCGrace.
func (e *env) chaosMinGrace() time.Duration {
	e.t.Helper()
	if s := os.Getenv("ARCHIP_CHAOS_GC_GRACE"); s != "" {
		g, err := time.ParseDuration(s)
		if err != nil {
			e.t.Fatalf("ARCHIP_CHAOS_GC_GRACE: %v", err)
		}
		return g
	}
	accepts := func(g time.Duration) bool {
		_, _, code := e.chaosRun("gc", "--dry-run", "--grace", g.String())
		return code == 0
	}
	const tiny = time.Millisecond
	if accepts(tiny) {
		return tiny
	}
	_, refusal, _ := e.chaosRun("gc", "--dry-run", "--grace", tiny.String())
	help, _, _ := e.chaosRun("gc", "--help")
	for _, text := range []string{refusal, help} {
		var best time.Duration
		for _, m := range durationRE.FindAllString(text, -1) {
			if g, err := time.ParseDuration(m); err == nil && g > best && g != tiny {
				best = g
			}
		}
		if best > 0 && accepts(best) {
			return best
		}
	}
	return chaosGCGrace
}

// TestChaos: two 'archip serve' on one file store; one client writes
// records through each in turn, flushing every few writes, while a
// loop, at random from a printed seed, stops a daemon past its lease
// TTL, kills and restarts one, snapshots the volume, collects garbage
// at the shortest grace allowed, and breaks the lease by force. At the
// end every write a flush acknowledged is there, every snapshot holds
// what was flushed when it was taken (and nothing written after) and
// has not changed since, and once everything is removed and collected
// the store's directory uses next to nothing on disk. See docs/chaos.md.
func TestChaos(t *testing.T) {
	needLibnbd(t)
	rounds := chaosRounds
	if s := os.Getenv("ARCHIP_CHAOS_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("ARCHIP_CHAOS_ROUNDS=%q: want a positive number", s)
		}
		rounds = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ARCHIP_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ARCHIP_CHAOS_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("seed %d, %d rounds (rerun with ARCHIP_CHAOS_SEED=%d ARCHIP_CHAOS_ROUNDS=%d)", seed, rounds, seed, rounds)
	rng := rand.New(rand.NewPCG(seed, 1))

	e := newEnv(t)
	storeDir := filepath.Join(e.dir, "store")
	skeleton, _ := diskUse(t, storeDir)
	grace := e.chaosMinGrace()
	t.Logf("gc --grace %s (the shortest the CLI accepts)", grace)
	const vol = "chaos"
	e.archip("volume", "create", vol, "--size", strconv.Itoa(chaosVolSize), "--block-size", chaosBlockSize)

	pair := &chaosPair{}
	for i := range 2 {
		pair.set(i, e.chaosServe(i))
	}
	oracle := newChaosOracle()
	var round atomic.Int32
	var stop atomic.Bool
	var wg, stragglers sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		chaosWriter(t, pair, oracle, vol, rand.New(rand.NewPCG(seed, 2)), &round, &stop, &stragglers)
	}()
	t.Cleanup(func() { // before the daemons' (cleanups run last first)
		for i := range 2 {
			if pair.isStopped(i) {
				pair.get(i).cmd.Process.Signal(syscall.SIGCONT)
			}
		}
		stop.Store(true)
		wg.Wait()
		stragglers.Wait()
	})

	// The schedule: each action at least once when there are enough
	// rounds, the rest at random.
	actions := []string{"stop", "stopsnap", "kill", "snapshot", "gc", "break"}
	var schedule []string
	for r := range rounds {
		if r < len(actions) {
			schedule = append(schedule, actions[r])
		} else {
			schedule = append(schedule, actions[rng.IntN(len(actions))])
		}
	}
	rng.Shuffle(len(schedule), func(i, j int) { schedule[i], schedule[j] = schedule[j], schedule[i] })

	// waitWriter waits until the writer has had n more flushes
	// acknowledged.
	stuck := false
	waitWriter := func(r, n int) {
		acks0, _ := oracle.progress()
		deadline := time.Now().Add(chaosProgress)
		for {
			acks, errs := oracle.progress()
			if acks >= acks0+n {
				return
			}
			if time.Now().After(deadline) {
				oracle.mu.Lock()
				last := oracle.lastErr
				oracle.mu.Unlock()
				t.Errorf("round %d: no flush acknowledged for %s (%d client errors, last: %s); ending the rounds", r+1, chaosProgress, errs, last)
				stuck = true
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var snaps []*chaosState
	// snapshot takes a snapshot, reads it at once and checks it.
	snapshot := func(r int, suffix string) {
		name := fmt.Sprintf("%s-snap%d%s", vol, r+1, suffix)
		st := oracle.at(name)
		var msg string
		var code int
		for try := 0; try < 3; try++ {
			if _, msg, code = e.chaosRun("volume", "snapshot", vol, name); code == 0 {
				break
			}
			t.Logf("round %d: volume snapshot: exit %d: %s", r+1, code, msg)
			time.Sleep(chaosTTL + chaosDrift)
		}
		st.end = oracle.issued()
		if code != 0 {
			t.Errorf("round %d: volume snapshot failed 3 times: exit %d: %s", r+1, code, msg)
			return
		}
		snaps = append(snaps, st)
		if data, _ := chaosRead(t, e, oracle, st, "just taken"); data != nil {
			for slot := range chaosSlots {
				st.sums = append(st.sums, sha256.Sum256(data[slot*chaosSlot:(slot+1)*chaosSlot]))
			}
		}
		t.Logf("round %d: snapshot %s (writes below %d)", r+1, name, st.end)
	}
	counts := map[string]int{}
	done := 0 // rounds run
	started := time.Now()
	for r, action := range schedule {
		round.Store(int32(r + 1))
		// Let the writer get two bursts through each daemon first.
		if !stuck {
			waitWriter(r, 4*chaosBurst/chaosFlushEvery)
		}
		if stuck {
			break
		}
		for i := range 2 {
			if d := pair.get(i); d.exited() {
				t.Errorf("round %d: daemon %s exited by itself: %v\n%s", r+1, chaosNodes[i], d.cmd.ProcessState, d.tail(20))
				pair.set(i, e.chaosServe(i))
			}
		}
		i := rng.IntN(2)
		if action == "stop" || action == "stopsnap" {
			i = int(pair.current.Load()) // most often with a request in flight
		}
		d := pair.get(i)
		counts[action]++
		done++
		switch action {
		case "stop", "stopsnap":
			pause := chaosTTL + 2*chaosDrift + time.Second
			t.Logf("round %d: SIGSTOP %s for %s", r+1, chaosNodes[i], pause)
			pair.stopped[i].Store(true)
			d.cmd.Process.Signal(syscall.SIGSTOP)
			time.Sleep(pause)
			if action == "stopsnap" {
				// The other daemon has taken the lease over: a snapshot
				// now must not change when the stopped one wakes up.
				waitWriter(r, 2)
				snapshot(r, "-stopped")
			}
			d.cmd.Process.Signal(syscall.SIGCONT)
			pair.stopped[i].Store(false)
		case "kill":
			t.Logf("round %d: SIGKILL %s, restart", r+1, chaosNodes[i])
			d.kill()
			pair.set(i, e.chaosServe(i))
		case "snapshot":
			snapshot(r, "")
		case "gc":
			// Three in a row, while the writer writes: more chances to
			// meet a writer's blocks between their write and its flush.
			for range 3 {
				out, msg, code := e.chaosRun("gc", "--grace", grace.String())
				t.Logf("round %d: gc --grace %s: exit %d: %s %s", r+1, grace, code, strings.TrimSpace(out), msg)
				if code != 0 {
					t.Errorf("round %d: gc failed: exit %d: %s", r+1, code, msg)
				}
			}
		case "break":
			// A second client, connected to the daemon the writer uses
			// (the holder), writes before the break and again after a
			// snapshot taken once the lease is broken.
			x := int(pair.current.Load())
			side, err := startChaosClient()
			if err == nil {
				err = side.do("c "+pair.get(x).uri(vol), nil)
			}
			if err != nil {
				t.Logf("round %d: a second client to %s: %v", r+1, chaosNodes[x], err)
			}
			sideWrite := func(when string) {
				if err != nil {
					return
				}
				slot := rng.IntN(chaosSlots)
				seq := oracle.issue(slot)
				werr := side.do(fmt.Sprintf("w %d %d %d", slot, seq, r+1), nil)
				oracle.replied(seq, werr == nil)
				if werr == nil {
					if werr = side.do("f", nil); werr == nil {
						oracle.flushed([]int32{seq})
					}
				}
				t.Logf("round %d: %s, a second client's write %d and flush through %s: %v", r+1, when, seq, chaosNodes[x], werr)
			}
			sideWrite("before the break")
			msg, code := e.chaosBreak(vol)
			t.Logf("round %d: lease break --force: exit %d: %s", r+1, code, msg)
			if code == 2 {
				t.Errorf("round %d: lease break refused its arguments (update chaosBreak): %s", r+1, msg)
			}
			snapshot(r, "-broken")
			sideWrite("after the break and a snapshot")
			if side != nil {
				side.kill()
			}
		}
	}
	// A last stretch of writing after the last action.
	acks0, _ := oracle.progress()
	for deadline := time.Now().Add(chaosProgress); !stuck && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if acks, _ := oracle.progress(); acks >= acks0+4*chaosBurst/chaosFlushEvery {
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	stragglers.Wait()
	oracle.mu.Lock()
	t.Logf("%d rounds (%v) in %s: %d writes issued, %d acknowledged, %d flushes acknowledged, %d connections ended in an error (last: %s)",
		done, counts, time.Since(started).Round(time.Second), len(oracle.slotOf), oracle.writes, oracle.acks, oracle.errs, oracle.lastErr)
	for k, l := range append(oracle.errList, oracle.errTail...) {
		if k == len(oracle.errList) && oracle.errs > len(oracle.errList)+len(oracle.errTail) {
			t.Logf("... %d more client errors ...", oracle.errs-len(oracle.errList)-len(oracle.errTail))
		}
		t.Logf("client error (expected when its daemon was stopped, killed or broken): %s", l)
	}
	t.Logf("%d stops found the writer connecting or disconnecting, %d with a request in flight; %d connections saw an export of the wrong size",
		oracle.idle, len(oracle.late), oracle.wrongSize)
	for _, l := range oracle.late {
		t.Logf("the client of a stopped daemon, after the wake-up: %s", l)
	}
	oracle.mu.Unlock()

	// Stop both daemons (a clean stop flushes: what lands is allowed).
	for i := range 2 {
		d := pair.get(i)
		select {
		case <-d.done:
			continue
		default:
		}
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
			if code := d.cmd.ProcessState.ExitCode(); code != 0 {
				t.Logf("daemon %s exited with %d after SIGTERM:\n%s", chaosNodes[i], code, d.tail(10))
			}
		case <-time.After(chaosCmdTimeout):
			d.cmd.Process.Kill()
			t.Errorf("daemon %s did not stop within %s of SIGTERM", chaosNodes[i], chaosCmdTimeout)
		}
	}

	// Every flushed write is there; every snapshot holds what it held.
	final := oracle.at(vol)
	final.end = oracle.issued()
	for _, st := range append([]*chaosState{final}, snaps...) {
		data, _ := chaosRead(t, e, oracle, st, "at the end")
		if data == nil || st.sums == nil {
			continue
		}
		var changed []string
		for slot := range chaosSlots {
			rec := data[slot*chaosSlot : (slot+1)*chaosSlot]
			if sha256.Sum256(rec) != st.sums[slot] {
				changed = append(changed, fmt.Sprintf("%d (now %q)", slot, rec[:chaosHeaderLen-1]))
			}
		}
		if len(changed) > 0 {
			t.Errorf("snapshot %s changed after it was taken: %d slots: %s", st.name, len(changed), strings.Join(changed[:min(len(changed), 10)], ", "))
		}
	}

	if t.Failed() {
		for i := range 2 {
			t.Logf("the last lines of daemon %s:\n%s", chaosNodes[i], pair.get(i).tail(30))
		}
	}

	// Remove everything, collect, and measure the disk.
	for _, name := range append([]string{vol}, chaosNames(snaps)...) {
		if _, msg, code := e.chaosRun("volume", "remove", name); code != 0 {
			t.Errorf("volume remove %s: exit %d: %s", name, code, msg)
		}
	}
	before, _ := diskUse(t, storeDir)
	// The collection deletes only what is older than the grace period:
	// with no process running, age every file instead of waiting. The
	// file store prunes superseded generations by the file server's
	// change times, which no one can set back: the second collection,
	// PruneAge later, is what a periodic one sees.
	for k := range 2 {
		ageTree(t, storeDir, grace+2*time.Hour) // sets change times to now
		if k > 0 {
			time.Sleep(objstore.PruneAge + time.Second)
		}
		out, msg, code := e.chaosRun("gc", "--grace", grace.String())
		if code != 0 {
			t.Errorf("final gc: exit %d: %s", code, msg)
		}
		use, _ := diskUse(t, storeDir)
		t.Logf("after removing everything and collection %d: %d KiB on disk (before: %d KiB, empty store: %d KiB): %s",
			k+1, use>>10, before>>10, skeleton>>10, strings.TrimSpace(out))
	}
	use, top := diskUse(t, storeDir)
	if use > skeleton+chaosDuSlack {
		t.Errorf("the store uses %d KiB on disk after removing everything and collecting; at most %d KiB allowed (empty store %d KiB); largest:\n%s",
			use>>10, (skeleton+chaosDuSlack)>>10, skeleton>>10, strings.Join(top, "\n"))
	}
}

// chaosWriter writes bursts of records through daemon a, then b, and
// so on, until stop is set; it skips a stopped daemon. A connection
// that fails is dropped (its writes after its last acknowledged flush
// are not promised) and the next burst starts. A connection whose
// daemon is stopped while a request waits is left to a straggler
// (stragglers counts them) and the writer moves on to the other daemon.
func chaosWriter(t *testing.T, pair *chaosPair, o *chaosOracle, vol string, rng *rand.Rand, round *atomic.Int32, stop *atomic.Bool, stragglers *sync.WaitGroup) {
	fail := func(err error, what string) {
		o.mu.Lock()
		o.errs++
		o.lastErr = what + ": " + err.Error()
		if e := fmt.Sprintf("round %d: %s", round.Load(), o.lastErr); len(o.errList) < 20 {
			o.errList = append(o.errList, e)
		} else {
			o.errTail = append(o.errTail[max(0, len(o.errTail)-19):], e)
		}
		wrong := strings.Contains(err.Error(), "the export's size is")
		if wrong {
			o.wrongSize++
		}
		first := wrong && o.wrongSize == 1
		o.mu.Unlock()
		switch {
		case errors.Is(err, errChaosHang):
			t.Errorf("client: %s: %v", what, err)
		case first:
			// Refusing a client may be right; a wrong size never is.
			t.Errorf("client: %s: %v (a daemon advertised the volume with the wrong size; counted in the summary)", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	spare := make(chan *chaosClient, 1)
	next := func() {
		c, err := startChaosClient()
		if err != nil {
			t.Errorf("client: %v", err)
		}
		spare <- c
	}
	go next()
	defer func() {
		if c := <-spare; c != nil {
			c.kill()
		}
	}()
	for burst := 0; !stop.Load(); burst++ {
		node := burst % 2
		if pair.isStopped(node) {
			node = 1 - node
		}
		pair.current.Store(int32(node))
		abandon := func() bool { return pair.isStopped(node) }
		// A process started ahead: a stop should find a connection,
		// not a Python interpreter starting.
		c := <-spare
		go next()
		if c == nil {
			fail(errors.New("cannot start python"), "client")
			continue
		}
		if err := c.do("c "+pair.get(node).uri(vol), abandon); err != nil {
			c.kill()
			if !errors.Is(err, errChaosAbandoned) {
				fail(err, "connect to "+chaosNodes[node])
			} else {
				o.mu.Lock()
				o.idle++
				o.mu.Unlock()
			}
			continue
		}
		var pending []int32
		ok := true
		for k := 0; k < chaosBurst && ok; k++ {
			slot := rng.IntN(chaosSlots)
			seq := o.issue(slot)
			err := c.do(fmt.Sprintf("w %d %d %d", slot, seq, round.Load()), abandon)
			if errors.Is(err, errChaosAbandoned) {
				stragglers.Add(1)
				cc, p := c, pending
				go func() {
					defer stragglers.Done()
					chaosStraggle(o, cc, chaosNodes[node], seq, p, rand.New(rand.NewPCG(uint64(seq), 3)), round)
				}()
				ok = false
				c = nil
				break
			}
			o.replied(seq, err == nil)
			if err != nil {
				fail(err, "write through "+chaosNodes[node])
				ok = false
				break
			}
			pending = append(pending, seq)
			if (k+1)%chaosFlushEvery == 0 {
				err := c.do("f", abandon)
				if errors.Is(err, errChaosAbandoned) {
					stragglers.Add(1)
					cc, p := c, pending
					go func() {
						defer stragglers.Done()
						chaosStraggle(o, cc, chaosNodes[node], -1, p, rand.New(rand.NewPCG(uint64(seq), 3)), round)
					}()
					ok = false
					c = nil
					break
				}
				if err != nil {
					fail(err, "flush through "+chaosNodes[node])
					ok = false
					break
				}
				o.flushed(pending)
				pending = nil
			}
		}
		switch {
		case c == nil:
		case ok:
			if c.close(abandon) {
				o.mu.Lock()
				o.idle++
				o.mu.Unlock()
			}
		default:
			c.kill()
		}
	}
}

// chaosStraggle waits for the answer to the request a stopped daemon
// holds (the write seq, or a flush if seq is -1; pending are the
// connection's writes not yet covered by a flush). If the daemon, once
// awake, says it succeeded, the client goes on: one more write and a
// flush. What the daemon accepted and acknowledged after waking up
// counts like any other write: the final check holds it to it.
func chaosStraggle(o *chaosOracle, c *chaosClient, node string, seq int32, pending []int32, rng *rand.Rand, round *atomic.Int32) {
	defer c.kill()
	story := []string{}
	note := func(what string, err error) bool {
		if err != nil {
			story = append(story, what+": "+err.Error())
			return false
		}
		story = append(story, what+": ok")
		return true
	}
	defer func() {
		o.mu.Lock()
		o.late = append(o.late, node+": "+strings.Join(story, "; "))
		o.mu.Unlock()
	}()
	err := c.wait(nil)
	if seq >= 0 {
		o.replied(seq, err == nil)
		if !note(fmt.Sprintf("write %d in flight", seq), err) {
			return
		}
		pending = append(pending, seq)
	} else {
		if !note("flush in flight", err) {
			return
		}
		o.flushed(pending)
		pending = nil
	}
	slot := rng.IntN(chaosSlots)
	s := o.issue(slot)
	err = c.do(fmt.Sprintf("w %d %d %d", slot, s, round.Load()), nil)
	o.replied(s, err == nil)
	if !note(fmt.Sprintf("write %d after the wake-up", s), err) {
		return
	}
	pending = append(pending, s)
	if note("flush after the wake-up", c.do("f", nil)) {
		o.flushed(pending)
	}
}

func chaosNames(states []*chaosState) []string {
	var names []string
	for _, s := range states {
		names = append(names, s.name)
	}
	return names
}

// diskUse is what du reports for dir: the blocks allocated to every
// file, directory and symbolic link below it. It also returns the
// largest entries, for a failure message.
func diskUse(t *testing.T, dir string) (int64, []string) {
	t.Helper()
	type ent struct {
		path string
		n    int64
	}
	var total int64
	var ents []ent
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		n := st.Blocks * 512
		total += n
		rel, _ := filepath.Rel(dir, p)
		ents = append(ents, ent{rel, n})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].n > ents[j].n })
	var top []string
	for i := 0; i < len(ents) && i < 20; i++ {
		top = append(top, fmt.Sprintf("%8d KiB %s", ents[i].n>>10, ents[i].path))
	}
	if len(ents) > 20 {
		top = append(top, fmt.Sprintf("(%d entries in all)", len(ents)))
	}
	return total, top
}

// ageTree moves the access and modification times of everything below
// dir (symbolic links themselves, not their targets) back by age, as if
// age had passed: their differences, which the file store's pruning
// compares, stay as they were.
func ageTree(t *testing.T, dir string, age time.Duration) {
	t.Helper()
	cwd := -100 // AT_FDCWD
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		ts := [2]syscall.Timespec{
			syscall.NsecToTimespec(st.Atim.Nano() - age.Nanoseconds()),
			syscall.NsecToTimespec(st.Mtim.Nano() - age.Nanoseconds()),
		}
		b, err := syscall.BytePtrFromString(p)
		if err != nil {
			return err
		}
		if _, _, errno := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(cwd),
			uintptr(unsafe.Pointer(b)), uintptr(unsafe.Pointer(&ts)), 0x100 /* AT_SYMLINK_NOFOLLOW */, 0, 0); errno != 0 {
			return fmt.Errorf("utimensat %s: %w", p, errno)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
