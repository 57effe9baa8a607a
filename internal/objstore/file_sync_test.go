package objstore

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// TestDirCommitsWakeLate: callers that ask while an fsync of their
// directory runs (their entry may have been linked after it began) share
// one fsync that begins after the running one ends, and none returns
// before it has completed; a caller that asks once that second fsync has
// begun waits for a third.
func TestDirCommitsWakeLate(t *testing.T) {
	var c dirCommits
	type call struct {
		begin chan struct{} // closed as the fsync begins
		end   chan struct{} // close to end it
	}
	calls := make(chan call, 10)
	var mu sync.Mutex
	var completed int // fsyncs completed
	run := func(string) error {
		cl := call{make(chan struct{}), make(chan struct{})}
		calls <- cl
		close(cl.begin)
		<-cl.end
		mu.Lock()
		completed++
		mu.Unlock()
		return nil
	}
	// returned[i] is the number of fsyncs completed when caller i returned.
	returned := make(chan [2]int, 10)
	ask := func(i int) {
		c.sync("d", run)
		mu.Lock()
		returned <- [2]int{i, completed}
		mu.Unlock()
	}
	go ask(0)
	first := <-calls
	const waiters = 5
	for i := 1; i <= waiters; i++ {
		go ask(i)
	}
	waitQueued(t, &c, "d", waiters)
	close(first.end)
	if r := <-returned; r != [2]int{0, 1} {
		t.Fatalf("first caller returned as %v, want after the first fsync", r)
	}
	second := <-calls
	select {
	case r := <-returned:
		t.Fatalf("caller %d returned while the fsync it needs (the second) runs", r[0])
	default:
	}
	// A late caller: the second fsync began before it asked.
	go ask(9)
	waitQueued(t, &c, "d", 1)
	close(second.end)
	for range waiters {
		if r := <-returned; r[0] == 9 || r[1] < 2 {
			t.Fatalf("caller %d returned after %d fsyncs, want the late caller after a third and the others after the second", r[0], r[1])
		}
	}
	third := <-calls
	close(third.end)
	if r := <-returned; r != [2]int{9, 3} {
		t.Fatalf("late caller returned as %v, want after the third fsync", r)
	}
	select {
	case cl := <-calls:
		close(cl.end)
		t.Fatal("an fsync nobody needed")
	default:
	}
	if len(c.dirs) != 0 {
		t.Errorf("%d directories remembered after every fsync ended", len(c.dirs))
	}
}

// waitQueued waits until n callers wait for the next fsync of dir: the
// leader on the running one, the others on the leader's.
func waitQueued(t *testing.T, c *dirCommits, dir string, n int) {
	t.Helper()
	for {
		c.mu.Lock()
		d := c.dirs[dir]
		got := 0
		if d != nil && d.next != nil {
			got = d.next.waiters
		}
		c.mu.Unlock()
		if got == n {
			return
		}
		runtime.Gosched()
	}
}

// TestDirCommitsRunPanics: an fsync whose run panics (a hook, a runtime
// error) still ends its batch: the panic reaches its own caller, the
// callers it serves get an error instead of waiting forever, the next
// batch's leader takes over, and the directory is forgotten once idle.
func TestDirCommitsRunPanics(t *testing.T) {
	var c dirCommits
	type call struct {
		end chan bool // send true to panic, false to succeed
	}
	calls := make(chan call, 10)
	run := func(string) error {
		cl := call{make(chan bool)}
		calls <- cl
		if <-cl.end {
			panic("injected")
		}
		return nil
	}
	type result struct {
		err      error
		panicked bool
	}
	ask := func(out chan<- result) {
		var r result
		defer func() {
			if recover() != nil {
				r.panicked = true
			}
			out <- r
		}()
		r.err = c.sync("d", run)
	}
	running := func() *dirBatch {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.dirs["d"].running
	}
	ended := func(b *dirBatch) bool {
		select {
		case <-b.done:
			return true
		default:
			return false
		}
	}

	// The first fsync panics while two callers wait for the next.
	first := make(chan result, 1)
	go ask(first)
	cl := <-calls
	b1 := running()
	rest := make(chan result, 2)
	go ask(rest)
	go ask(rest)
	waitQueued(t, &c, "d", 2)
	cl.end <- true
	if r := <-first; !r.panicked {
		t.Fatalf("the caller whose fsync panicked got %v, want the panic", r.err)
	}
	if !ended(b1) {
		t.Fatal("an fsync that panicked never ended: the callers waiting for the next one wait forever")
	}
	(<-calls).end <- false // the next batch's leader runs its own
	for range 2 {
		if r := <-rest; r.panicked || r.err != nil {
			t.Fatalf("a caller of the fsync after the one that panicked got %+v, want success", r)
		}
	}

	// The batch's own fsync panics: the callers it serves get an error.
	go ask(first)
	cl = <-calls
	go ask(rest)
	go ask(rest)
	waitQueued(t, &c, "d", 2)
	cl.end <- false
	if r := <-first; r.panicked || r.err != nil {
		t.Fatalf("first caller got %+v, want success", r)
	}
	cl = <-calls
	b2 := running()
	cl.end <- true
	var panics int
	for range 2 {
		r := <-rest
		if r.panicked {
			panics++
		} else if r.err == nil {
			t.Error("a caller served by an fsync that panicked got success")
		}
		if panics == 1 && !ended(b2) {
			t.Fatal("an fsync that panicked never ended: the callers it serves wait forever")
		}
	}
	if panics != 1 {
		t.Errorf("%d callers got the panic, want its leader only", panics)
	}
	c.mu.Lock()
	n := len(c.dirs)
	c.mu.Unlock()
	if n != 0 {
		t.Errorf("%d directories remembered after every fsync ended", n)
	}
	if err := c.sync("d", func(string) error { return nil }); err != nil {
		t.Errorf("a later caller got %v, want the success of its own fsync", err)
	}
}

// servedBy is the error a test's run returns: which fsync (in the order
// they began) served the caller.
type servedBy struct {
	dir string
	n   int64
}

func (s *servedBy) Error() string { return fmt.Sprintf("fsync %d of %s", s.n, s.dir) }

// TestDirCommitsServedAfterCall: callers of many directories at once,
// with fsyncs that stall a random while: each caller gets the result of
// an fsync of its own directory that began after its call (so every
// caller an fsync serves gets its error, and none the error or success
// of one begun before it asked), and every directory is forgotten once
// idle.
func TestDirCommitsServedAfterCall(t *testing.T) {
	var c dirCommits
	const dirs, callers, rounds = 4, 8, 50
	var mu sync.Mutex
	begun := map[string]int64{} // fsyncs of each directory begun
	run := func(dir string) error {
		mu.Lock()
		begun[dir]++
		n := begun[dir]
		mu.Unlock()
		for range rand.IntN(20) {
			runtime.Gosched()
		}
		return &servedBy{dir, n}
	}
	var wg sync.WaitGroup
	errs := make(chan error, dirs*callers)
	for i := range dirs * callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := fmt.Sprint("d", i%dirs)
			for range rounds {
				mu.Lock()
				before := begun[dir]
				mu.Unlock()
				var s *servedBy
				if err := c.sync(dir, run); !errors.As(err, &s) || s.dir != dir {
					errs <- fmt.Errorf("a caller of %s got %v", dir, err)
					return
				} else if s.n <= before {
					errs <- fmt.Errorf("a caller of %s asked when %d fsyncs had begun, got the result of fsync %d", dir, before, s.n)
					return
				}
				for range rand.IntN(5) {
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(c.dirs) != 0 {
		t.Errorf("%d directories remembered after every fsync ended", len(c.dirs))
	}
	total := int64(0)
	for _, n := range begun {
		total += n
	}
	t.Logf("%d calls, %d fsyncs", dirs*callers*rounds, total)
}

// TestDirCommitsRemoved: a directory removed before the fsync its
// callers wait for begins fails each of them with fs.ErrNotExist, and
// one made again at the path serves a later caller.
func TestDirCommitsRemoved(t *testing.T) {
	var c dirCommits
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	first, release := make(chan struct{}), make(chan struct{})
	run := func(d string) error {
		select {
		case <-first:
		default:
			close(first)
			<-release
		}
		return fsyncDir(d)
	}
	res := make(chan error, 3)
	go func() { res <- c.sync(dir, run) }()
	<-first
	go func() { res <- c.sync(dir, run) }()
	go func() { res <- c.sync(dir, run) }()
	waitQueued(t, &c, dir, 2)
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	close(release)
	var missing int
	for range 3 {
		if err := <-res; errors.Is(err, fs.ErrNotExist) {
			missing++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	// The first fsync may have opened the directory before the removal.
	if missing < 2 {
		t.Errorf("%d callers got fs.ErrNotExist, want at least the 2 that asked while the first fsync ran", missing)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.sync(dir, run); err != nil {
		t.Errorf("a caller after the directory was made again got %v", err)
	}
	if len(c.dirs) != 0 {
		t.Errorf("%d directories remembered after every fsync ended", len(c.dirs))
	}
}
