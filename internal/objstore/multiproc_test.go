package objstore_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestMain lets the test binary act as one of the processes of
// TestFileSwapAcrossProcesses.
func TestMain(m *testing.M) {
	if dir := os.Getenv("ARCHIP_SWAP_DIR"); dir != "" {
		n, _ := strconv.Atoi(os.Getenv("ARCHIP_SWAP_N"))
		wins, err := swapLoop(dir, n)
		if err != nil {
			fmt.Fprintln(os.Stderr, "swap child:", err)
			os.Exit(1)
		}
		fmt.Println("wins", wins)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// swapLoop increments the counter object n times with Get + Swap,
// retrying on conflicts, and counts its successful swaps.
func swapLoop(dir string, n int) (int, error) {
	ctx := context.Background()
	s, err := objstore.OpenFile(dir, false)
	if err != nil {
		return 0, err
	}
	wins := 0
	for wins < n {
		b, v, err := s.Get(ctx, "counter")
		if err != nil {
			return wins, err
		}
		c, err := strconv.Atoi(string(b))
		if err != nil {
			return wins, fmt.Errorf("counter %q: %v", b, err)
		}
		_, err = s.Swap(ctx, "counter", []byte(strconv.Itoa(c+1)), v)
		if errors.Is(err, objstore.ErrConflict) {
			continue
		}
		if err != nil {
			return wins, err
		}
		wins++
	}
	return wins, nil
}

// TestFileSwapAcrossProcesses runs several processes that increment one
// counter through compare-and-swap on one file store, as hosts sharing it
// over NFS would: no increment may be lost or counted twice.
func TestFileSwapAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	s, err := objstore.OpenFile(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(context.Background(), "counter", []byte("0")); err != nil {
		t.Fatal(err)
	}
	const procs, each = 4, 150
	var cmds []*exec.Cmd
	var outs []*bufio.Scanner
	for i := 0; i < procs; i++ {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "ARCHIP_SWAP_DIR="+dir, "ARCHIP_SWAP_N="+strconv.Itoa(each))
		cmd.Stderr = os.Stderr
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, bufio.NewScanner(out))
	}
	total := 0
	for i, cmd := range cmds {
		for outs[i].Scan() {
			if w, ok := strings.CutPrefix(outs[i].Text(), "wins "); ok {
				n, _ := strconv.Atoi(w)
				total += n
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("process %d: %v", i, err)
		}
	}
	b, _, err := s.Get(context.Background(), "counter")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != strconv.Itoa(total) || total != procs*each {
		t.Fatalf("counter = %s after %d successful swaps in %d processes (want %d)", b, total, procs, procs*each)
	}
}
