package manage

import (
	"bytes"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestInfoCountsWriteLog: a clone's writer logs a flushed write (the
// write log, not yet checkpointed into blocks): Info counts the log
// object the head names as the volume's (LogBytes, and in ExclusiveBytes:
// removing the volume frees it), and nothing once Close checkpointed it.
func TestInfoCountsWriteLog(t *testing.T) {
	s := objstore.NewMem()
	m := New(s)
	if _, err := m.CreateVolume(ctx, "vm", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	WriteT(t, m, "vm", 0, bytes.Repeat([]byte{1}, 4*bs))
	if _, err := m.Snapshot(ctx, "vm", "vm@s"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Clone(ctx, "vm@s", "c", 0); err != nil {
		t.Fatal(err)
	}
	v, r, err := m.Open(ctx, "c", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, []byte("x"), 2*bs+10, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var logs int64
	for _, ref := range v.Head().Logs {
		in, err := s.Stat(ctx, blockmap.LogName(r.ID, ref.Epoch, ref.Seq))
		if err != nil {
			t.Fatal(err)
		}
		logs += in.Size
	}
	if logs == 0 {
		t.Fatal("the clone's flushed write left no log bytes (not logged?)")
	}
	in, err := m.Info(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if in.LogBytes != logs || in.ExclusiveBytes != logs {
		t.Fatalf("info of a clone with a logged write: log %d, exclusive %d bytes; want both %d (its log)", in.LogBytes, in.ExclusiveBytes, logs)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	in, err = m.Info(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	sub := int64(bs / blockmap.SubBlocks)
	if in.LogBytes != 0 || in.ExclusiveBytes != sub {
		t.Fatalf("info after Close checkpointed the log: log %d, exclusive %d bytes; want 0 and %d", in.LogBytes, in.ExclusiveBytes, sub)
	}
}

// segOnly is a store without in-place writes whose Stat is fresh (S3):
// the write log is stored as segments.
type segOnly struct{ objstore.Store }

func (segOnly) FreshStat() bool { return true }

// TestInfoCountsWriteLogSegments (issue 13): on a store without in-place
// writes, Info counts the segments of the log the head names.
func TestInfoCountsWriteLogSegments(t *testing.T) {
	s := segOnly{objstore.NewMem()}
	m := New(s)
	if _, err := m.CreateVolume(ctx, "vm", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	v, r, err := m.Open(ctx, "vm", true)
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for i := range 3 {
		if err := v.WriteAt(ctx, []byte("x"), int64(i*bs+10), false); err != nil {
			t.Fatal(err)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	err = s.List(ctx, blockmap.VolumePrefix(r.ID)+"l/", func(in objstore.Info) error {
		want += in.Size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want == 0 {
		t.Fatal("no log segment was written")
	}
	in, err := m.Info(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	if in.LogBytes != want {
		t.Fatalf("info: log %d bytes, want %d (its segments)", in.LogBytes, want)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
