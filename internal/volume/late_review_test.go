package volume

import (
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestLateWriteUnderSameWriter: a write times out (it may still land),
// the client writes the same range again, which succeeds and is
// flushed; then the first write lands. The acknowledged, flushed write
// must still be what the volume reads: a writer must not write again in
// place into an object a write of unknown outcome may still change.
func TestLateWriteUnderSameWriter(t *testing.T) {
	ls := NewLateStore(objstore.NewMem())
	v := NewTestVolume(t, ls, 4*bs, SmallShift)
	if err := v.WriteAt(ctx, fill(bs, 'A'), 0, true); err != nil {
		t.Fatal(err)
	}
	ls.Arm()
	if err := v.WriteAt(ctx, fill(100, 'L'), 0, false); err == nil {
		t.Fatal("the write that timed out succeeded")
	}
	if err := v.WriteAt(ctx, fill(100, 'B'), 0, true); err != nil {
		t.Fatal(err)
	}
	ls.Land()
	wantBytes(t, v, 0, fill(100, 'B'), "the flushed write after the late one landed")
	r, err := Open(ctx, ls, v.ID(), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	wantBytes(t, r, 0, fill(100, 'B'), "the flushed write, read by another handle")
}

// TestLateWriteAndSnapshot: a snapshot taken after a write timed out
// does not share the object that write may still change: its bytes do
// not change when the write lands (issue 10 #2).
func TestLateWriteAndSnapshot(t *testing.T) {
	ls := NewLateStore(objstore.NewMem())
	v := NewTestVolume(t, ls, 4*bs, SmallShift)
	if err := v.WriteAt(ctx, fill(bs, 'A'), 0, true); err != nil {
		t.Fatal(err)
	}
	ls.Arm()
	if err := v.WriteAt(ctx, fill(100, 'L'), 0, false); err == nil {
		t.Fatal("the write that timed out succeeded")
	}
	sid, err := v.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := Open(ctx, ls, sid, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close(ctx)
	before := mustRead(t, snap, 0, 100)
	ls.Land()
	wantBytes(t, snap, 0, before, "the snapshot after the late write landed")
}
