package volume

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// The kill -9 test: a child process writes to a volume on the file store
// and flushes every few writes, printing how many writes each flush
// covered; the parent kills it with SIGKILL at a random moment, reopens
// the volume and checks that everything acknowledged by a flush is there
// (invariant I2).

const (
	killVolSize   = 32 * bs
	killFlushEach = 7
	killMaxWrites = 200000
)

// killOp is the i-th operation of the child's fixed sequence.
func killOp(i int) (off int, data []byte, zero bool) {
	rng := rand.New(rand.NewPCG(uint64(i), 42))
	off = rng.IntN(killVolSize - 1)
	n := 1 + rng.IntN(min(killVolSize-off, 3*bs))
	if rng.IntN(10) == 0 {
		return off, make([]byte, n), true
	}
	data = make([]byte, n)
	for j := range data {
		data[j] = byte(i) | 1
	}
	return off, data, false
}

// TestMain runs the kill -9 child when the parent asks for it.
func TestMain(m *testing.M) {
	if dir := os.Getenv("ARCHIP_KILL_DIR"); dir != "" {
		if err := killChild(dir, os.Getenv("ARCHIP_KILL_VOL")); err != nil {
			fmt.Fprintln(os.Stderr, "kill child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// killChild writes the fixed sequence and reports each flush.
func killChild(dir, idStr string) error {
	s, err := objstore.OpenFile(dir, false)
	if err != nil {
		return err
	}
	id, err := blockmap.ParseID(idStr)
	if err != nil {
		return err
	}
	v, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	for i := 0; i < killMaxWrites; i++ {
		off, data, zero := killOp(i)
		if zero {
			err = v.WriteZeroes(ctx, int64(off), int64(len(data)), false, false)
		} else {
			err = v.WriteAt(ctx, data, int64(off), false)
		}
		if err != nil {
			return err
		}
		if (i+1)%killFlushEach == 0 {
			if err := v.Flush(ctx); err != nil {
				return err
			}
			fmt.Fprintf(out, "flushed %d\n", i+1)
			out.Flush()
		}
	}
	return nil
}

func TestKill9(t *testing.T) {
	for round := 0; round < 3; round++ {
		dir := t.TempDir()
		s, err := objstore.OpenFile(dir, true)
		if err != nil {
			t.Fatal(err)
		}
		id, err := Create(ctx, s, CreateOptions{Size: killVolSize, BlockShift: SmallShift})
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "ARCHIP_KILL_DIR="+dir, "ARCHIP_KILL_VOL="+id.String())
		cmd.Stderr = os.Stderr
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAt := 5 + rand.IntN(40)
		acked := 0
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "flushed "); ok {
				acked, _ = strconv.Atoi(n)
				if acked/killFlushEach >= killAt {
					break
				}
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		// The child may have run ahead through the pipe's buffer: its last
		// line bounds what it can have written (one flush interval more).
		last := acked
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "flushed "); ok {
				last, _ = strconv.Atoi(n)
			}
		}
		cmd.Wait()
		if acked == 0 {
			t.Fatal("the child acknowledged no flush")
		}

		durable := make([]byte, killVolSize)
		maybe := make([]bool, killVolSize)
		for i := 0; i < min(last+killFlushEach, killMaxWrites); i++ {
			off, data, _ := killOp(i)
			if i < acked {
				copy(durable[off:], data)
				continue
			}
			for j := off; j < off+len(data); j++ {
				maybe[j] = true
			}
		}
		s2, err := objstore.OpenFile(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		v, err := Open(ctx, s2, id, OpenOptions{Writable: true})
		if err != nil {
			t.Fatalf("reopen after kill -9: %v", err)
		}
		got := mustRead(t, v, 0, killVolSize)
		for j := range got {
			if !maybe[j] && got[j] != durable[j] {
				t.Fatalf("round %d: byte %d = %#x after kill -9, flushed %#x (%d writes acknowledged)", round, j, got[j], durable[j], acked)
			}
		}
		t.Logf("round %d: killed after %d acknowledged writes (child reached %d); all present", round, acked, last)
	}
}
