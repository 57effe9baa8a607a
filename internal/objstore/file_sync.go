package objstore

import (
	"errors"
	"os"
	"sync"
)

// dirCommits batches concurrent fsyncs of one directory (group commit):
// an fsync makes durable every entry linked in the directory before it
// began, so writers that ask for one while another runs share the next,
// which begins after all of them asked. A caller returns only once an
// fsync of the directory that began after its call has completed, the
// same promise as an fsync of its own. N writers linking in one
// directory at once make two fsyncs instead of N (one running, one for
// all that came during it). An fsync's error fails every caller it
// serves.
type dirCommits struct {
	mu   sync.Mutex
	dirs map[string]*dirCommit
}

// dirCommit is the state of one directory's fsyncs: the one running, if
// any, and the one that its waiters will start when it ends.
type dirCommit struct {
	running *dirBatch
	next    *dirBatch
}

// dirBatch is one fsync and the callers it serves.
type dirBatch struct {
	done    chan struct{}
	err     error
	waiters int // callers it serves that came while the one before ran
}

// sync fsyncs dir, or waits for an fsync of it that begins after this
// call, and returns its error. run does the fsync.
func (c *dirCommits) sync(dir string, run func(string) error) error {
	c.mu.Lock()
	if c.dirs == nil {
		c.dirs = map[string]*dirCommit{}
	}
	d := c.dirs[dir]
	if d == nil {
		d = &dirCommit{}
		c.dirs[dir] = d
	}
	if d.running == nil {
		b := &dirBatch{done: make(chan struct{})}
		d.running = b
		c.mu.Unlock()
		return c.run(dir, d, b, run)
	}
	// An fsync is running, and may have begun before this caller's
	// entry was linked: this caller needs the next one.
	b, lead := d.next, false
	if b == nil {
		b, lead = &dirBatch{done: make(chan struct{})}, true
		d.next = b
	}
	b.waiters++
	prev := d.running
	c.mu.Unlock()
	if !lead {
		<-b.done
		return b.err
	}
	<-prev.done
	c.mu.Lock()
	d.running, d.next = b, nil // joiners after this wait for the fsync after b
	c.mu.Unlock()
	return c.run(dir, d, b, run)
}

// run does batch b's fsync of dir and wakes its waiters. A run that
// panics (or exits its goroutine) still ends the batch, failing the
// callers it serves with errDirSyncAborted, so that neither they nor
// the next batch's leader wait forever.
func (c *dirCommits) run(dir string, d *dirCommit, b *dirBatch, run func(string) error) error {
	b.err = errDirSyncAborted
	defer func() {
		c.mu.Lock()
		if d.next == nil {
			// Nobody waits for another: forget the directory. (With a
			// waiter, its leader, blocked on b.done, takes over.)
			d.running = nil
			delete(c.dirs, dir)
		}
		c.mu.Unlock()
		close(b.done)
	}()
	b.err = run(dir)
	return b.err
}

// errDirSyncAborted is the error of the callers sharing a directory
// fsync whose run panicked.
var errDirSyncAborted = errors.New("objstore: a directory fsync shared with this write failed (panicked); retry the write")

// fsyncDir opens dir and fsyncs it.
func fsyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
