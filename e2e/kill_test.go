package e2e

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// The writer: sequential 64 KiB writes round a 32 MiB region, each slot
// filled with one byte value, a FLUSH every 8 writes, and after each
// flush the count of writes it covers on stdout.
const killWriter = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
i = 0
while True:
    h.pwrite(bytes([i % 255 + 1]) * 65536, (i % 512) * 65536)
    i += 1
    if i % 8 == 0:
        h.flush()
        print(i, flush=True)
`

const (
	killSlot  = 64 << 10
	killSlots = 512
)

// TestKill9Serve kills 'archip serve' with SIGKILL while fio writes to one
// half of a volume with periodic flushes and a libnbd client writes a
// known sequence to the other half; after a restart every write that a
// flush acknowledged is there.
func TestKill9Serve(t *testing.T) {
	need(t, "fio")
	needLibnbd(t)
	e := newEnv(t)
	for round := 0; round < 2; round++ {
		vol := fmt.Sprintf("k%d", round) // each round starts from zeros
		e.archip("volume", "create", vol, "--size", "64M")
		d := e.serve()
		fio := exec.Command("fio", "--name=load", "--ioengine=nbd", "--uri="+d.uri(vol), "--rw=randwrite",
			"--bs=16k", "--offset=32M", "--size=32M", "--iodepth=8", "--fsync=16", "--time_based", "--runtime=60", "--verify_state_save=0")
		if err := fio.Start(); err != nil {
			t.Fatal(err)
		}
		w := exec.Command("/usr/bin/python3", "-c", killWriter, d.uri(vol))
		stdout, _ := w.StdoutPipe()
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		killAt := 40 + rand.IntN(200)
		acked := 0
		for sc.Scan() {
			acked, _ = strconv.Atoi(sc.Text())
			if acked >= killAt {
				break
			}
		}
		d.kill()
		last := acked
		for sc.Scan() {
			if n, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
				last = n
			}
		}
		w.Wait()
		fio.Wait()
		if acked == 0 {
			t.Fatal("the writer got no flush acknowledged")
		}

		// Read the first half back from the store, with no daemon.
		got := []byte(e.archip("volume", "read", vol, "--length", "32M"))
		for s := 0; s < killSlots; s++ {
			allowed := map[byte]bool{}
			durable := byte(0)
			for i := s; i < last+8; i += killSlots {
				v := byte(i%255 + 1)
				if i < acked {
					durable = v
				} else {
					allowed[v] = true
				}
			}
			allowed[durable] = true
			for j := s * killSlot; j < (s+1)*killSlot; j++ {
				if !allowed[got[j]] {
					t.Fatalf("round %d: slot %d byte %d = %#x after kill -9; flushed value %#x (%d writes acknowledged, writer reached %d)",
						round, s, j, got[j], durable, acked, last)
				}
			}
		}
		t.Logf("round %d: killed after %d acknowledged writes (writer reached %d): all present", round, acked, last)
	}
}
