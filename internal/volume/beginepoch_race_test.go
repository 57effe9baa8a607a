package volume

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestBeginEpochConcurrentWrites: epochs begun while writes (logged and
// in place) run: every write reads back after a reopen, and no block
// object of an ended epoch changes after its end.
func TestBeginEpochConcurrentWrites(t *testing.T) {
	for _, logged := range []bool{false, true} {
		t.Run(fmt.Sprint("logged=", logged), func(t *testing.T) { testBeginEpochConcurrentWrites(t, logged) })
	}
}

func testBeginEpochConcurrentWrites(t *testing.T, logged bool) {
	ctx := context.Background()
	s := objstore.NewMem()
	const blocks = 8
	id := newClone(t, s, blocks)
	v := openLogged(t, s, id, OpenOptions{})
	if !logged {
		v.Close(ctx)
		var err error
		if v, err = Open(ctx, s, id, OpenOptions{Writable: true}); err != nil {
			t.Fatal(err)
		}
	}
	want := pattern(blocks*bs, 1)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				b := (w*3 + i) % blocks
				var off int64
				var p []byte
				if i%2 == 0 {
					off, p = int64(b*bs), pattern(bs, byte(10+w*40+i))
				} else {
					off, p = int64(b*bs+13), pattern(50, byte(10+w*40+i))
				}
				mu.Lock()
				err := v.WriteAt(ctx, p, off, false)
				if err == nil {
					copy(want[off:], p)
				}
				mu.Unlock()
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	ended := map[string][]byte{} // objects of ended epochs, as they were then
	for i := 0; i < 10; i++ {
		e0 := v.Head().Epoch
		e, err := v.BeginEpoch(ctx, e0+1, fmt.Sprint("k", i))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		if err := s.List(ctx, "vol/"+id.String()+"/d/", func(in objstore.Info) error {
			n := blockmap.ParseName(in.Name)
			if _, ok := ended[in.Name]; !ok && n.Kind == blockmap.PrivateObject && n.Entry.Epoch() < e {
				names = append(names, in.Name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			b, _, err := s.Get(ctx, name)
			if err != nil && !objstore.IsNotExist(err) {
				t.Fatal(err)
			}
			ended[name] = b
		}
	}
	wg.Wait()
	for name, b := range ended {
		now, _, err := s.Get(ctx, name)
		if err == nil && b != nil && !bytes.Equal(now, b) {
			t.Errorf("%s, of an ended epoch, changed in place", name)
		}
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	got := make([]byte, blocks*bs)
	if err := r.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the volume does not read what was written")
	}
}
