package volume

import (
	"bytes"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestLogFlushKeepsLogSize: on the file store, a flush of logged writes
// does not change the log's size (the log is written with zeros ahead of
// its tail, logAhead at a time), so that its fdatasync writes the data
// and no metadata: a file that grows at each flush costs a journal commit
// per fdatasync, about 1.5x the sync of an in-place write. The bytes
// written stay readable through a reopen.
func TestLogFlushKeepsLogSize(t *testing.T) {
	s, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	id := newClone(t, s, 8)
	v := openLogged(t, s, id, OpenOptions{})
	lf := v.Head().Logs[0]
	name := blockmap.LogName(id, lf.Epoch, lf.Seq)
	want := pattern(8*bs, 1)
	var sizes []int64
	for k := range 32 {
		off := (k%8)*bs + 512*k
		p := pattern(4096, byte(10+k))
		if err := v.WriteAt(ctx, p, int64(off), false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		info, err := s.Stat(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, info.Size)
	}
	end := int64(32 * (2*logHeader + 4096))
	if sizes[0] < end || sizes[len(sizes)-1] != sizes[0] {
		t.Errorf("the log's size after each of 32 flushes: %v; want one size, at least %d", sizes, end)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, s, id, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := r.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("a reopen reads other bytes than were written")
	}
}
