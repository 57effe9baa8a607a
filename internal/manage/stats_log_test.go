package manage

import (
	"bytes"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// segStore is a store without in-place writes whose Stat is fresh (S3):
// a writer that logs keeps its writes in the write log's segments and
// checkpoints by storing the log's index, not blocks.
type segStore struct{ objstore.Store }

func (segStore) FreshStat() bool { return true }

// segVolume creates the 4-block volume "vm" on a new segStore and
// returns the store, its manager and the volume's ID.
func segVolume(t *testing.T) (segStore, *Manager, blockmap.ID) {
	t.Helper()
	s := segStore{objstore.NewMem()}
	m := New(s)
	if _, err := m.CreateVolume(ctx, "vm", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	r, err := m.Lookup(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	return s, m, r.ID
}

// On such a store, data written and flushed lives in the write log, not
// in blocks: store stats count it as stored (LogBytes), and the blocks
// the index has bytes in as allocated, where the map has them as zero.
func TestStatsCountWriteLog(t *testing.T) {
	s, m, id := segVolume(t)
	v, err := volume.Open(ctx, s, id, volume.OpenOptions{Writable: true, Log: true})
	if err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte{7}, 4096)
	for _, off := range []int64{bs + 100, bs + 9000, 3*bs + 5} {
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Close(ctx); err != nil { // stores the index, writes no block
		t.Fatal(err)
	}
	if h := v.Head(); h.Index.IsZero() {
		t.Fatalf("the close stored no write log index: head %+v", h)
	}
	st, err := m.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PrivateObjects != 0 || st.ContentObjects != 0 {
		t.Fatalf("blocks written: %+v", st)
	}
	if st.LogicalBytes != 2*bs {
		t.Fatalf("logical bytes %d, want %d (blocks 1 and 3, in the index only)", st.LogicalBytes, 2*bs)
	}
	if st.LogObjects == 0 || st.LogBytes < 3*4096 || st.StoredBytes != st.LogBytes {
		t.Fatalf("write log %d objects %d bytes, stored %d: want the log's segments and index, all of what is stored", st.LogObjects, st.LogBytes, st.StoredBytes)
	}
}
