package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore/s3"
)

// The writer of TestKill9ServeFlushEach: for each line "VOL OFF" of its
// ops file, one 4 KiB write of record(TAG, i) at OFF to the export VOL,
// then a FLUSH on that connection, then i on stdout: a printed i means
// that write i and its flush were acknowledged. One request at a time,
// so at most write i+1 is in flight when the daemon dies.
const flushEachWriter = `
import nbd, sys
sock, tag, opsfile = sys.argv[1], sys.argv[2], sys.argv[3]
hs = {}
for i, line in enumerate(open(opsfile)):
    vol, off = line.split()
    if vol not in hs:
        hs[vol] = nbd.NBD()
        hs[vol].connect_uri("nbd+unix:///%s?socket=%s" % (vol, sock))
    h = hs[vol]
    rec = b"%s %08d\n" % (tag.encode(), i)
    h.pwrite((rec * (4096 // len(rec) + 1))[:4096], int(off))
    h.flush()
    print(i, flush=True)
`

// exportReader writes the whole export argv[1] to stdout.
const exportReader = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size, off = h.get_size(), 0
while off < size:
    n = min(1 << 20, size - off)
    sys.stdout.buffer.write(h.pread(n, off))
    off += n
`

func flushEachRecord(tag string, i int) []byte {
	rec := []byte(fmt.Sprintf("%s %08d\n", tag, i))
	return bytes.Repeat(rec, 4096/len(rec)+1)[:4096]
}

// TestKill9ServeFlushEach kills 'archip serve' with SIGKILL at a random
// moment while two clients each write 4 KiB records, every write followed
// by a FLUSH: to blocks the volume owns (written in place), to blocks
// never written (allocated), and to blocks a clone shares with its
// snapshot (copied on write). After a restart, every write acknowledged
// before an acknowledged flush reads back exactly, the one write that may
// have been in flight reads old or new, and nothing else changed; a write
// after the restart (a takeover) works. ARCHIP_KILL_SEED replays a run.
func TestKill9ServeFlushEach(t *testing.T) {
	needLibnbd(t)
	killFlushEach(t, newEnv(t), 3)
}

// TestKill9ServeFlushEachS3 is TestKill9ServeFlushEach on s3://, where
// nothing is written in place: each flush writes the writes since the
// last one as a segment of the write log (one PUT) and checks the head
// (one HEAD); the restarted daemon replays the killed one's segments.
func TestKill9ServeFlushEachS3(t *testing.T) {
	needLibnbd(t)
	for _, srv := range s3.TestServerNames {
		t.Run(srv, func(t *testing.T) {
			e := s3Env(t, srv)
			e.archip("store", "init")
			killFlushEach(t, e, 2)
		})
	}
}

// killFlushEach runs rounds of TestKill9ServeFlushEach on e's store.
func killFlushEach(t *testing.T, e *env, rounds int) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ARCHIP_KILL_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("ARCHIP_KILL_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (ARCHIP_KILL_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x6b696c6c))
	const (
		slot    = 4096
		written = 1 << 20 // v's first MiB is written before the daemon starts; its second is not
		writers = 2
		nops    = 20000 // more than the writers reach before the kill
	)
	lease := []string{"--flush-interval", "0", "--lease-ttl", "2s", "--max-clock-drift", "200ms"}
	for round := range rounds {
		v, p, c := fmt.Sprintf("v%d", round), fmt.Sprintf("p%d", round), fmt.Sprintf("c%d", round)
		init := map[string][]byte{v: make([]byte, 2<<20), c: make([]byte, 1<<20)}
		for i := 0; i < written/slot; i++ {
			copy(init[v][i*slot:], flushEachRecord("init-"+v, i))
			copy(init[c][i*slot:], flushEachRecord("init-"+p, i))
		}
		e.archip("volume", "create", v, "--size", "2M", "--block-size", "64K")
		e.archip("volume", "create", p, "--size", "1M", "--block-size", "64K")
		for name, data := range map[string][]byte{v: init[v][:written], p: init[c]} {
			cmd := exec.Command(archipBin, "--store", e.store, "-q", "volume", "write", name)
			cmd.Stdin = bytes.NewReader(data)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("volume write %s: %v\n%s", name, err, out)
			}
		}
		e.archip("volume", "snapshot", p, p+"s")
		e.archip("volume", "clone", p+"s", c)

		// Writer w owns the slots s with s%writers == w, so each slot's
		// history is one writer's sequence.
		type op struct {
			vol string
			off int
		}
		ops := make([][]op, writers)
		for w := range ops {
			var f strings.Builder
			for range nops {
				o := op{v, 0}
				n := 2 << 20 / slot
				if rng.IntN(3) == 0 {
					o.vol, n = c, 1<<20/slot
				}
				o.off = (rng.IntN(n/writers)*writers + w) * slot
				ops[w] = append(ops[w], o)
				fmt.Fprintf(&f, "%s %d\n", o.vol, o.off)
			}
			if err := os.WriteFile(e.path(fmt.Sprintf("ops%d-%d", round, w)), []byte(f.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}

		d := e.serve(lease...)
		// Each writer's last printed index (-1: none yet); done closes
		// when its output ends.
		last := make([]atomic.Int64, writers)
		done := make([]chan struct{}, writers)
		cmds := make([]*exec.Cmd, writers)
		for w := range writers {
			last[w].Store(-1)
			done[w] = make(chan struct{})
			cmds[w] = exec.Command("/usr/bin/python3", "-c", flushEachWriter, d.sock, fmt.Sprintf("w%d", w), e.path(fmt.Sprintf("ops%d-%d", round, w)))
			out, _ := cmds[w].StdoutPipe()
			if err := cmds[w].Start(); err != nil {
				t.Fatal(err)
			}
			go func() {
				defer close(done[w])
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					if n, err := strconv.Atoi(sc.Text()); err == nil {
						last[w].Store(int64(n))
					}
				}
			}()
		}
		// Kill once every writer has had some flushes acknowledged and
		// writer 0 reached a random count, at a random moment after that.
		killAt := int64(20 + rng.IntN(200))
		for w := range writers {
			for last[w].Load() < min(killAt, 5) || w == 0 && last[w].Load() < killAt {
				select {
				case <-done[w]:
					t.Fatalf("round %d: writer %d stopped after %d acknowledged writes", round, w, last[w].Load()+1)
				case <-time.After(time.Millisecond):
				}
			}
		}
		time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
		d.kill()
		acked := make([]int, writers) // what was acknowledged before the daemon died
		for w := range writers {
			<-done[w]
			cmds[w].Wait()
			acked[w] = int(last[w].Load())
			if acked[w] >= nops-1 {
				t.Fatalf("round %d: writer %d ran out of writes (%d) before the kill", round, w, nops)
			}
		}

		d = e.serve(lease...)
		read := func(vol string) []byte {
			return []byte(run(t, "/usr/bin/python3", "-c", exportReader, d.uri(vol)))
		}
		model := map[string][]byte{}
		for _, vol := range []string{v, c} {
			got := read(vol)
			if len(got) != len(init[vol]) {
				t.Fatalf("round %d: %s reads %d bytes, want %d", round, vol, len(got), len(init[vol]))
			}
			for s := 0; s < len(got)/slot; s++ {
				w := s % writers
				durable, inflight := init[vol][s*slot:(s+1)*slot], []byte(nil)
				for i, o := range ops[w][:acked[w]+2] {
					if o.vol == vol && o.off == s*slot {
						if i <= acked[w] {
							durable = flushEachRecord(fmt.Sprintf("w%d", w), i)
						} else {
							inflight = flushEachRecord(fmt.Sprintf("w%d", w), i)
						}
					}
				}
				b := got[s*slot : (s+1)*slot]
				if !bytes.Equal(b, durable) && (inflight == nil || !bytes.Equal(b, inflight)) {
					t.Fatalf("round %d: after kill -9 and restart, %s slot %d reads %.24q..., want %.24q... (writer %d: %d writes and flushes acknowledged; write %d in flight: %v)",
						round, vol, s, b, durable, w, acked[w]+1, acked[w]+1, inflight != nil)
				}
			}
			model[vol] = got
		}

		// The restarted daemon takes the lease over and writes.
		after := []op{{v, rng.IntN(2<<20/slot) * slot}, {c, rng.IntN(1<<20/slot) * slot}}
		f := e.path(fmt.Sprintf("after%d", round))
		os.WriteFile(f, []byte(fmt.Sprintf("%s %d\n%s %d\n", after[0].vol, after[0].off, after[1].vol, after[1].off)), 0o644)
		run(t, "/usr/bin/python3", "-c", flushEachWriter, d.sock, "after", f)
		for i, o := range after {
			copy(model[o.vol][o.off:], flushEachRecord("after", i))
		}
		for _, vol := range []string{v, c} {
			if got := read(vol); !bytes.Equal(got, model[vol]) {
				t.Fatalf("round %d: after a write through the restarted daemon, %s differs at byte %d", round, vol, firstDiff(got, model[vol]))
			}
		}
		d.stop(t)
		t.Logf("round %d: killed after %d and %d acknowledged write+flush pairs: all present", round, acked[0]+1, acked[1]+1)
	}
}
