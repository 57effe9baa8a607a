//go:build ceph

package rados

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestReview11ReadYourWrites: writers race on one object (so writes
// queue behind operations in flight and go merged); each, as soon as
// its WriteAt returns, scribbles over its buffer (the caller may reuse
// it) and reads its range back through ReadAt, ReadLend, Get and Stat:
// each sees its own write. At the end a Copy of the object, and the
// object, hold every write's bytes.
func TestReview11ReadYourWrites(t *testing.T) {
	s := OpenTestStore(t)
	const name, dst = "blk/ryw", "blk/ryw-copy"
	const writers, rounds, size = 8, 40, 48 << 10
	want := make([]byte, writers*size)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, size)
			for r := range rounds {
				off := int64(w * size)
				fill := byte(w*rounds + r + 1)
				for i := range p {
					p[i] = fill ^ byte(i)
				}
				exp := bytes.Clone(p)
				if err := s.WriteAt(ctx, name, p, off); err != nil {
					errs <- err
					return
				}
				for i := range p {
					p[i] = 0xEE // reuse
				}
				got := make([]byte, size)
				if err := s.ReadAt(ctx, name, got, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, exp) {
					errs <- fmt.Errorf("writer %d round %d: ReadAt after WriteAt returned reads other bytes", w, r)
					return
				}
				var lent []byte
				if err := s.ReadLend(ctx, name, off, size, func(bufs [][]byte) error {
					for _, b := range bufs {
						lent = append(lent, b...)
					}
					return nil
				}); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(lent, exp) {
					errs <- fmt.Errorf("writer %d round %d: ReadLend after WriteAt returned reads other bytes", w, r)
					return
				}
				if r%8 == 0 {
					all, _, err := s.Get(ctx, name)
					if err != nil {
						errs <- err
						return
					}
					if int64(len(all)) < off+size || !bytes.Equal(all[off:off+size], exp) {
						errs <- fmt.Errorf("writer %d round %d: Get after WriteAt returned reads other bytes (len %d)", w, r, len(all))
						return
					}
					in, err := s.Stat(ctx, name)
					if err != nil {
						errs <- err
						return
					}
					if in.Size < off+size {
						errs <- fmt.Errorf("writer %d round %d: Stat size %d after a write to %d", w, r, in.Size, off+size)
						return
					}
				}
				if r == rounds-1 {
					mu.Lock()
					copy(want[off:], exp)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	t.Logf("%d writes in %v, %d merged", writers*rounds, time.Since(start), s.Merged())
	// Copy right after the last writes returned (Copy Syncs its source).
	if err := s.Copy(ctx, name, dst); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{name, dst} {
		got, _, err := s.Get(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s does not hold every write's last bytes", n)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.Sync(sctx, name); err != nil {
		t.Fatal(err)
	}
}

// TestReview11QueuedBufferReuse: writes held behind an operation (their
// WriteAt returns only once the merged operation is sent) have their
// buffers overwritten the moment WriteAt returns; the object holds what
// each buffer held when it was written.
func TestReview11QueuedBufferReuse(t *testing.T) {
	s := OpenTestStore(t)
	const name = "blk/reuse"
	release := s.HoldWrites()
	const n, size = 16, 32 << 10
	want := make([]byte, n*size)
	bufs := make([][]byte, n)
	errs := make(chan error, n)
	for i := range n {
		bufs[i] = bytes.Repeat([]byte{byte(i + 1)}, size)
		copy(want[i*size:], bufs[i])
		go func() {
			err := s.WriteAt(ctx, name, bufs[i], int64(i*size))
			for j := range bufs[i] {
				bufs[i][j] = 0xEE
			}
			errs <- err
		}()
		if i == 0 {
			waitFor(t, "the first write held", func() bool { return s.merger.waiting(name) == 0 })
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(t, "the writes queued", func() bool { return s.merger.waiting(name) == n-1 })
	release()
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, len(want))
	if err := s.ReadAt(ctx, name, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("reused buffers changed what queued writes wrote")
	}
	if err := s.Sync(ctx, name); err != nil {
		t.Fatal(err)
	}
	if s.Merged() == 0 {
		t.Fatal("no write was merged")
	}
}
