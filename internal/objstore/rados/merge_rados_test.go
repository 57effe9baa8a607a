//go:build ceph

package rados

import (
	"bytes"
	"errors"
	"math/rand"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// On RADOS: writes queued behind one in flight go in one operation of
// several extents (overlapping ones in arrival order), and what the
// object holds afterwards is what each write, in that order, wrote. A
// fenced client's merged writes are refused, and Sync says so.
func TestWriteMergeRados(t *testing.T) {
	ss := OpenTestStores(t, 2)
	s, taker := ss[0], ss[1]
	real := s.merger.submit
	gate := make(chan struct{})
	var once sync.Once
	var ops [][]extent
	var mu sync.Mutex
	s.merger.submit = func(name string, ext []extent, done func(error)) error {
		once.Do(func() { <-gate }) // the first operation waits for the queue
		mu.Lock()
		ops = append(ops, ext)
		mu.Unlock()
		return real(name, ext, done)
	}
	const n, size = 8, 64 << 10
	rng := rand.New(rand.NewSource(1))
	data := make([][]byte, n)
	want := make([]byte, n*size)
	errs := make(chan error, n)
	for i := range n {
		data[i] = make([]byte, size)
		rng.Read(data[i])
		copy(want[i*size:], data[i])
		go func() { errs <- s.WriteAt(ctx, "blk/m", data[i], int64(i*size)) }()
		waitFor(t, "the write queued", func() bool { return i == 0 || s.merger.waiting("blk/m") == i })
	}
	// The last write overlaps the first two's boundary: queued last, it
	// must win there.
	over := bytes.Repeat([]byte{0xee}, 4096)
	copy(want[size-2048:], over)
	go func() { errs <- s.WriteAt(ctx, "blk/m", over, size-2048) }()
	waitFor(t, "the overlapping write queued", func() bool { return s.merger.waiting("blk/m") == n })
	close(gate)
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx, "blk/m"); err != nil {
		t.Fatal(err)
	}
	if len(ops) != 2 || len(ops[1]) != n {
		t.Fatalf("%d operations, the second of %d extents: want the first write alone, then the %d queued in one", len(ops), len(ops[len(ops)-1]), n)
	}
	got := make([]byte, len(want))
	if err := s.ReadAt(ctx, "blk/m", got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the object does not hold the merged writes in their order")
	}

	// Fenced: the queued writes' operation fails with ErrFenced, which
	// Sync reports.
	id, err := s.FenceID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gate2 := make(chan struct{})
	var once2 sync.Once
	s.merger.submit = func(name string, ext []extent, done func(error)) error {
		once2.Do(func() { <-gate2 })
		return real(name, ext, done)
	}
	for i := range 3 {
		go func() { errs <- s.WriteAt(ctx, "blk/m", data[i], int64(i*size)) }()
		waitFor(t, "the write queued", func() bool { return i == 0 || s.merger.waiting("blk/m") == i })
	}
	if err := taker.Fence(ctx, id); err != nil {
		t.Fatal(err)
	}
	close(gate2)
	for range 3 {
		if err := <-errs; err != nil && !errors.Is(err, objstore.ErrFenced) {
			t.Fatalf("a fenced client's write returned %v, want nil (sent) or ErrFenced", err)
		}
	}
	if err := s.Sync(ctx, "blk/m"); !errors.Is(err, objstore.ErrFenced) {
		t.Fatalf("Sync of a fenced client's writes: %v, want ErrFenced", err)
	}
	got2 := make([]byte, len(want))
	if err := taker.ReadAt(ctx, "blk/m", got2, 0); err != nil || !bytes.Equal(got2, want) {
		t.Fatalf("the fencer reads the fenced client's writes (%v)", err)
	}
}
