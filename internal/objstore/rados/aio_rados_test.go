//go:build ceph

package rados

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestAloneAndQueuedWaits: an operation alone in flight waits blocked in
// librados, those of a deep queue take the completion callback; both
// ways report the bytes and the errors alike (a missing object's read, a
// fenced client's writes).
func TestAloneAndQueuedWaits(t *testing.T) {
	ss := OpenTestStores(t, 2)
	a, b := ss[0], ss[1]
	const n = 16
	p := bytes.Repeat([]byte{7}, 4096)
	// each runs fn(0..n-1) at once and returns the first error.
	each := func(fn func(i int) error) error {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() { defer wg.Done(); errs <- fn(i) }()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}
	writeSync := func(s *Store, name string) error {
		if err := s.WriteAt(ctx, name, p, 4096); err != nil {
			return err
		}
		return s.Sync(ctx, name)
	}
	before := alone.Load()
	if err := writeSync(a, "o/0"); err != nil {
		t.Fatal(err)
	}
	if alone.Load() == before {
		t.Fatal("a write alone in flight did not wait blocked")
	}
	before = alone.Load()
	if err := each(func(i int) error { return writeSync(a, fmt.Sprintf("o/%d", i)) }); err != nil {
		t.Fatal(err)
	}
	if alone.Load()-before >= n {
		t.Fatalf("all %d writes sent at once waited blocked", n)
	}
	read := func(i int) error {
		got := make([]byte, len(p))
		if err := a.ReadAt(ctx, fmt.Sprintf("o/%d", i), got, 4096); err != nil {
			return err
		}
		if !bytes.Equal(got, p) {
			return fmt.Errorf("o/%d: read other bytes", i)
		}
		return a.ReadLend(ctx, fmt.Sprintf("o/%d", i), 4096, len(p), func(bufs [][]byte) error {
			if !bytes.Equal(bytes.Join(bufs, nil), p) {
				return fmt.Errorf("o/%d: lent other bytes", i)
			}
			return nil
		})
	}
	if err := read(3); err != nil {
		t.Fatal(err)
	}
	if err := each(read); err != nil {
		t.Fatal(err)
	}
	missing := func(int) error {
		err := a.ReadAt(ctx, "o/missing", p[:1], 0)
		if !errors.Is(err, objstore.ErrNotFound) {
			return fmt.Errorf("read of a missing object: %v, want ErrNotFound", err)
		}
		return nil
	}
	if err := missing(0); err != nil {
		t.Fatal(err)
	}
	if err := each(missing); err != nil {
		t.Fatal(err)
	}
	id, err := a.FenceID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Fence(ctx, id); err != nil {
		t.Fatal(err)
	}
	fenced := func(i int) error {
		if err := writeSync(a, fmt.Sprintf("o/%d", i)); !errors.Is(err, objstore.ErrFenced) {
			return fmt.Errorf("fenced client's write to o/%d: %v, want ErrFenced", i, err)
		}
		return nil
	}
	if err := fenced(0); err != nil {
		t.Fatal(err)
	}
	if err := each(fenced); err != nil {
		t.Fatal(err)
	}
}
