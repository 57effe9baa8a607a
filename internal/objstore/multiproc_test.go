package objstore_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestMain lets the test binary act as one of the processes of
// TestFileSwapAcrossProcesses and TestFileMutexAcrossProcesses.
func TestMain(m *testing.M) {
	if dir := os.Getenv("ARCHIP_MUTEX_DIR"); dir != "" {
		n, _ := strconv.Atoi(os.Getenv("ARCHIP_MUTEX_N"))
		if err := mutexLoop(dir, n); err != nil {
			fmt.Fprintln(os.Stderr, "mutex child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
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
	if dir := os.Getenv("ARCHIP_INDEX_DIR"); dir != "" {
		n, _ := strconv.Atoi(os.Getenv("ARCHIP_INDEX_N"))
		if err := indexLoop(dir, n); err != nil {
			fmt.Fprintln(os.Stderr, "index child:", err)
			os.Exit(1)
		}
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

// mutexLoop takes the lock object n times, by Create or by Swap from 0,
// and releases it by Delete. While it holds the lock it makes a marker
// file outside the store exclusively (a second holder would fail to) and
// increments the counter object with a plain Get and Put, which loses
// increments unless holders are alone.
func mutexLoop(dir string, n int) error {
	ctx := context.Background()
	s, err := objstore.OpenFile(dir, false)
	if err != nil {
		return err
	}
	marker := filepath.Join(filepath.Dir(dir), "held")
	for i := 0; i < n; {
		if i%2 == 0 {
			_, err = s.Create(ctx, "gc/lock", []byte(strconv.Itoa(os.Getpid())))
		} else {
			_, err = s.Swap(ctx, "gc/lock", []byte(strconv.Itoa(os.Getpid())), 0)
		}
		if errors.Is(err, objstore.ErrExists) || errors.Is(err, objstore.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		m, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("two holders at once: %v", err)
		}
		m.Close()
		b, _, err := s.Get(ctx, "counter")
		if err != nil {
			return err
		}
		c, _ := strconv.Atoi(string(b))
		if _, err := s.Put(ctx, "counter", []byte(strconv.Itoa(c+1))); err != nil {
			return err
		}
		if err := os.Remove(marker); err != nil {
			return err
		}
		if err := s.Delete(ctx, "gc/lock"); err != nil {
			return fmt.Errorf("releasing the lock: %v", err)
		}
		i++
	}
	return nil
}

// TestFileMutexAcrossProcesses runs processes that take and release a
// lock made of one object (Create or Swap from 0, then Delete) on one file
// store: deleting removes the object's directory, and creating makes it
// again, racing with the other processes' deletes and creates. Holders
// must be alone and the lock must end absent.
func TestFileMutexAcrossProcesses(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	s, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Put(ctx, "counter", []byte("0")); err != nil {
		t.Fatal(err)
	}
	const procs, each = 4, 40
	var cmds []*exec.Cmd
	for i := 0; i < procs; i++ {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "ARCHIP_MUTEX_DIR="+root, "ARCHIP_MUTEX_N="+strconv.Itoa(each))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("process %d: %v", i, err)
		}
	}
	if b, _, err := s.Get(ctx, "counter"); err != nil || string(b) != strconv.Itoa(procs*each) {
		t.Errorf("counter = %q, %v after %d holds (want %d)", b, err, procs*each, procs*each)
	}
	if _, _, err := s.Get(ctx, "gc/lock"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("lock after the last release: %v, want ErrNotFound", err)
	}
}
