package volume

import (
	"slices"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// inodeSyncNames is syncNames on a store whose sync writes an object's
// inode after a write in place (objstore.InodeSyncer: the file store on
// ext4 without a journal).
type inodeSyncNames struct{ *syncNames }

func (inodeSyncNames) SyncWritesInode() bool { return true }

// filledScatter returns a volume of blocks blocks on a store whose sync
// writes the inode, every block written and flushed by a writer before,
// open again with the log, its store, and the bytes it holds.
func filledScatter(t *testing.T, blocks int) (*Volume, inodeSyncNames, []byte) {
	t.Helper()
	s := inodeSyncNames{&syncNames{Mem: objstore.NewMem()}}
	if !objstore.SyncWritesInode(s) {
		t.Fatal("the test store does not say its sync writes the inode")
	}
	v, _, want := filledLogged(t, s, blocks)
	s.mu.Lock()
	s.names, s.swaps = nil, 0
	s.mu.Unlock()
	return v, s, want
}

// filledLogged creates a volume of blocks blocks on s, writes and
// flushes every block with a writer without the log (so that the next
// writer owns them), and opens it again with the log; it returns the
// writer, the volume's ID and the bytes it holds.
func filledLogged(t *testing.T, s objstore.Store, blocks int) (*Volume, blockmap.ID, []byte) {
	t.Helper()
	id, err := Create(ctx, s, CreateOptions{Size: uint64(blocks * bs), BlockShift: SmallShift})
	if err != nil {
		t.Fatal(err)
	}
	want := pattern(blocks*bs, 1)
	w, err := Open(ctx, s, id, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteAt(ctx, want, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	v := openLogged(t, s, id, OpenOptions{})
	t.Cleanup(func() { v.Close(ctx) })
	return v, id, want
}

// synced returns the names synced since the last call, and the head
// swaps.
func (s inodeSyncNames) synced() ([]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names, swaps := s.names, s.swaps
	s.names, s.swaps = nil, 0
	slices.Sort(names)
	return slices.Compact(names), swaps
}

func writeFlush(t *testing.T, v *Volume, want, p []byte, off int64) {
	t.Helper()
	if err := v.WriteAt(ctx, p, off, false); err != nil {
		t.Fatal(err)
	}
	copy(want[off:], p)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func logName(v *Volume) string {
	h := v.Head()
	return blockmap.LogName(v.id, h.Logs[len(h.Logs)-1].Epoch, h.Logs[len(h.Logs)-1].Seq)
}

// TestScatterSyncsTheLogOnly: on a store whose sync writes the inode, a
// small write + flush to a block other than the last write's, in a
// volume whose blocks the writer owns, syncs the write log and nothing
// else, and swaps no head; what was written reads back, before and after
// a reopen.
func TestScatterSyncsTheLogOnly(t *testing.T) {
	v, s, want := filledScatter(t, 4)
	for k := range 8 {
		b := (k + 1) % 4
		writeFlush(t, v, want, pattern(4096, byte(10+k)), int64(b*bs+4096*k))
		names, swaps := s.synced()
		if len(names) != 1 || names[0] != logName(v) || swaps != 0 {
			t.Fatalf("write and flush %d (block %d) synced %v and swapped the head %d times, want one sync of the log %s and no swap", k, b, names, swaps, logName(v))
		}
	}
	wantContents(t, v, want, "the writer")
	wantStored(t, s, v.id, want, "a reopen")
}

// TestScatterKeepsRunsInPlace: writes that follow each other in one block
// (a sequential stream), and writes larger than logScattered, go in
// place: each flush syncs the block's object, not the log.
func TestScatterKeepsRunsInPlace(t *testing.T) {
	v, s, want := filledScatter(t, 4)
	// The first write to block 2 comes from another block (the last
	// write's, block 0 at open): logged.
	writeFlush(t, v, want, pattern(4096, 20), 2*bs)
	if names, _ := s.synced(); !slices.Equal(names, []string{logName(v)}) {
		t.Fatalf("the first write to block 2 synced %v, want the log", names)
	}
	e, _ := v.entry(2)
	for k := 1; k < 8; k++ {
		writeFlush(t, v, want, pattern(4096, byte(20+k)), int64(2*bs+4096*k))
		if names, swaps := s.synced(); !slices.Equal(names, []string{e.ObjectName()}) || swaps != 0 {
			t.Fatalf("sequential write %d synced %v and swapped %d times, want only %s", k, names, swaps, e.ObjectName())
		}
	}
	// Large writes scattered over the blocks: in place.
	for k := range 4 {
		b := (k + 1) % 4
		writeFlush(t, v, want, pattern(int(logScattered)+4096, byte(40+k)), int64(b*bs+bs/2)) // beside block 2's logged bytes
		e, _ := v.entry(int64(b))
		if names, _ := s.synced(); !slices.Equal(names, []string{e.ObjectName()}) {
			t.Fatalf("large write %d to block %d synced %v, want only %s", k, b, names, e.ObjectName())
		}
	}
	wantContents(t, v, want, "the writer")
	wantStored(t, s, v.id, want, "a reopen")
}

// TestScatterOverlapGoesToLog: in a block the writer owns that has logged
// bytes, a write beside them goes in place, and a write over any of them
// goes to the log (an in-place write under them would be hidden by the
// index, and written over at the checkpoint); reads, a reopen (replay)
// and a checkpoint (Close) all see the newest bytes.
func TestScatterOverlapGoesToLog(t *testing.T) {
	v, s, want := filledScatter(t, 4)
	writeFlush(t, v, want, pattern(4096, 30), 1*bs+8192) // logged (block 1 after block 0)
	s.synced()
	e, _ := v.entry(1)
	writeFlush(t, v, want, pattern(4096, 31), 1*bs) // beside it: in place
	if names, _ := s.synced(); !slices.Equal(names, []string{e.ObjectName()}) {
		t.Fatalf("a write beside the logged bytes synced %v, want only %s", names, e.ObjectName())
	}
	for k, off := range []int64{8192 + 1024, 8192 - 512, 8192 + 4096 - 1} {
		writeFlush(t, v, want, pattern(1024, byte(32+k)), 1*bs+off) // over them: logged
		if names, _ := s.synced(); !slices.Equal(names, []string{logName(v)}) {
			t.Fatalf("a write at %d over the logged bytes synced %v, want the log", off, names)
		}
	}
	wantContents(t, v, want, "the writer")
	wantStored(t, s, v.id, want, "a reopen (replay)")
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _, _, err := readMap(ctx, s, v.id); err != nil || len(h.Logs) != 0 {
		t.Fatalf("after Close the head names logs (%v)", err)
	}
	wantStored(t, s, v.id, want, "a reopen after the checkpoint")
}

// TestScatterBlocksBound: past logScatterBlocks blocks with logged bytes,
// scattered writes to other blocks go in place; blocks with logged bytes
// still take them.
func TestScatterBlocksBound(t *testing.T) {
	old := logScatterBlocks
	logScatterBlocks = 2
	defer func() { logScatterBlocks = old }()
	v, s, want := filledScatter(t, 4)
	for k, b := range []int{1, 2, 3, 1, 0} {
		writeFlush(t, v, want, pattern(4096, byte(50+k)), int64(b*bs+4096*(k+1)))
		names, _ := s.synced()
		e, _ := v.entry(int64(b))
		wantName := logName(v)
		if b == 3 || b == 0 {
			wantName = e.ObjectName()
		}
		if !slices.Equal(names, []string{wantName}) {
			t.Fatalf("write %d to block %d synced %v, want %s", k, b, names, wantName)
		}
	}
	wantContents(t, v, want, "the writer")
	wantStored(t, s, v.id, want, "a reopen")
}

// TestScatterNeedsInodeSync: on a store whose sync does not write the
// inode (XFS, ext4 with a journal, RADOS), scattered writes stay in place
// (TestInPlaceFlushSyncsItsObject), and on ext4 without a journal the
// file store says it does.
func TestScatterNeedsInodeSync(t *testing.T) {
	if objstore.SyncWritesInode(&syncNames{Mem: objstore.NewMem()}) {
		t.Fatal("the memory store says its sync writes the inode")
	}
	v, _, _ := filledScatter(t, 2)
	if !v.scatter {
		t.Fatal("a writer on a store whose sync writes the inode does not send scattered writes to the log")
	}
}
