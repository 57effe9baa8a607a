//go:build ceph

package rados

import (
	"bytes"
	"math/rand"
	"sync"
	"testing"
)

// On RADOS, a merged operation of thousands of small extents (512-byte
// writes, NBD's smallest, queued in an order unlike their offsets, some
// overlapping) is accepted and leaves the object as the writes one after
// the other would.
func TestWriteMergeManyExtentsRados(t *testing.T) {
	s := OpenTestStore(t)
	real := s.merger.submit
	gate := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var sizes []int
	s.merger.submit = func(name string, ext []extent, done func(error)) error {
		once.Do(func() { <-gate })
		mu.Lock()
		sizes = append(sizes, len(ext))
		mu.Unlock()
		return real(name, ext, done)
	}
	const n, sz = 2048, 512
	rng := rand.New(rand.NewSource(2))
	want := make([]byte, (n+1)*sz)
	errs := make(chan error, n+1)
	first := bytes.Repeat([]byte{0xaa}, sz)
	copy(want, first)
	go func() { errs <- s.WriteAt(ctx, "blk/many", first, 0) }()
	waitFor(t, "the first write in flight", func() bool { return s.merger.busy("blk/many") })
	for i := range n {
		p := make([]byte, sz)
		rng.Read(p)
		off := int64(rng.Intn(n*sz - sz)) // anywhere, overlapping others
		copy(want[off:], p)
		go func() { errs <- s.WriteAt(ctx, "blk/many", p, off) }()
		waitFor(t, "queued", func() bool { return s.merger.waiting("blk/many") == i+1 })
	}
	close(gate)
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx, "blk/many"); err != nil {
		t.Fatal(err)
	}
	if len(sizes) != 2 || sizes[1] != n {
		t.Fatalf("operations of %v extents, want [1 %d]", sizes, n)
	}
	got := make([]byte, len(want))
	if err := s.ReadAt(ctx, "blk/many", got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the object does not hold the writes in their arrival order")
	}
}

// busy reports whether name has an operation in flight (tests).
func (m *writeMerger) busy(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.objs[name] != nil
}

// Merged writes whose bytes are slices of one buffer (one Go object
// pinned once per extent, as the volume's shared zero buffer would be)
// are written (also under GOEXPERIMENT=cgocheck2).
func TestWriteMergeSharedBufferRados(t *testing.T) {
	s := OpenTestStore(t)
	release := s.HoldWrites()
	buf := make([]byte, 64<<10)
	rand.New(rand.NewSource(4)).Read(buf)
	const n = 16
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- s.WriteAt(ctx, "blk/shared", buf[i*4096:(i+1)*4096], int64(i*4096)) }()
		waitFor(t, "queued", func() bool { return s.Queued() == max(0, i) && s.merger.busy("blk/shared") })
	}
	release()
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx, "blk/shared"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(buf))
	if err := s.ReadAt(ctx, "blk/shared", got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, buf) {
		t.Fatal("the object does not hold the buffer's slices")
	}
	if s.Merged() == 0 {
		t.Fatal("nothing merged")
	}
}
