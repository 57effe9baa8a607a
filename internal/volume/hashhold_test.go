package volume

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestHashCheckRefused: a hash whose check fails (its hold on garbage
// collections was lost) changes nothing in the store, not even by a later
// flush; with KeepReplaced a hash that succeeds deletes no private block,
// and RepairHash stores again a content block deleted meanwhile.
func TestHashCheckRefused(t *testing.T) {
	s := objstore.NewMem()
	v := NewTestVolume(t, s, 4*bs, SmallShift)
	data := append(append(fill(bs, 1), fill(bs, 2)...), fill(2*bs, 0)...)
	data[3*bs-1] = 7
	if err := v.WriteAt(ctx, data, 0, true); err != nil {
		t.Fatal(err)
	}
	before := v.Entries()
	errLost := errors.New("lost")
	if _, err := v.HashWith(ctx, HashOptions{Check: func(context.Context) error { return errLost }, KeepReplaced: true}); !errors.Is(err, errLost) {
		t.Fatalf("hash with a refusing check: %v", err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, s, v.ID(), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Entries(); !equalEntries(got, before) || !equalEntries(v.Entries(), before) {
		t.Fatalf("map after a refused hash: stored %v, handle %v, want %v", got, v.Entries(), before)
	}
	wantBytes(t, v, 0, data, "after a refused hash")

	st, err := v.HashWith(ctx, HashOptions{Check: func(context.Context) error { return nil }, KeepReplaced: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Replaced) != 4 || len(st.Freed) != 4 || st.Converted != 3 || st.Zeroed != 1 {
		t.Fatalf("stats %+v: want 4 replaced and freed, 3 converted, 1 zeroed", st)
	}
	for _, name := range st.Freed {
		if _, err := s.Stat(ctx, name); err != nil {
			t.Fatalf("kept private block %s: %v", name, err)
		}
	}
	for _, r := range st.Replaced {
		if r.New.Kind() == blockmap.Content {
			s.Delete(ctx, r.New.ObjectName()) // a collection that marked the old map
		}
	}
	lost, err := RepairHash(ctx, s, st.Replaced)
	if err != nil || len(lost) != 0 {
		t.Fatalf("repair: lost %v, %v", lost, err)
	}
	for _, name := range st.Freed {
		s.Delete(ctx, name)
	}
	r, err = Open(ctx, s, v.ID(), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, r, 0, data, "after a repaired hash")
	// Both gone: reported.
	i := 0
	for st.Replaced[i].New.Kind() != blockmap.Content {
		i++
	}
	s.Delete(ctx, st.Replaced[i].New.ObjectName())
	if lost, err := RepairHash(ctx, s, st.Replaced); err != nil || len(lost) != 1 || lost[0] != i {
		t.Fatalf("repair with both objects gone: lost %v, %v", lost, err)
	}
}

func equalEntries(a, b []blockmap.Entry) bool {
	return len(a) == len(b) && bytes.Equal(encodeEntries(a), encodeEntries(b))
}

func encodeEntries(es []blockmap.Entry) []byte {
	b, _ := blockmap.EncodeSegment(0, es)
	return b
}
