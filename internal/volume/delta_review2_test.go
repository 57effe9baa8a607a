package volume

import (
	"bytes"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestResizeAcrossDeltaSegments (issue 11 review2): a volume of two map
// segments whose head's delta holds entries of both (and, after a
// checkpoint, whose second segment exists) shrinks into the first
// segment, to the middle of a block of the second and past a delta
// entry, and grows again: every view (the writer, a follower, a reopen,
// a snapshot taken with the delta and its clone) reads what an oracle
// says, the grown tail zeros.
func TestResizeAcrossDeltaSegments(t *testing.T) {
	for _, checkpoint := range []bool{false, true} {
		s := objstore.NewMem()
		n := int64(blockmap.SegmentEntries + 16)
		v := NewTestVolume(t, s, uint64(n*bs), SmallShift)
		f, err := Open(ctx, s, v.ID(), OpenOptions{Follow: true})
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, n*bs)
		write := func(off int64, c byte, l int) {
			t.Helper()
			copy(want[off:], fill(l, c))
			if err := v.WriteAt(ctx, fill(l, c), off, false); err != nil {
				t.Fatal(err)
			}
		}
		check := func(what string, snapWant []byte, snaps ...*Volume) {
			t.Helper()
			r, err := Open(ctx, s, v.ID(), OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close(ctx)
			// Only where the writes, the delta and the resizes are: the
			// first blocks and the last 20 (reading 256 MiB a check is
			// slow under the race detector).
			tail := max(0, int64(len(want))-20*bs)
			for i, h := range []*Volume{v, f, r} {
				for _, rg := range [][2]int64{{0, 2 * bs}, {tail, int64(len(want))}} {
					got := mustRead(t, h, rg[0], int(rg[1]-rg[0])) // (a follower reloads the map at a read)
					if h.Size() != int64(len(want)) {
						t.Fatalf("%s: view %d has size %d, want %d", what, i, h.Size(), len(want))
					}
					if w := want[rg[0]:rg[1]]; !bytes.Equal(got, w) {
						k := 0
						for got[k] == w[k] {
							k++
						}
						k += int(rg[0])
						t.Fatalf("%s (checkpoint %v): view %d differs at byte %d (block %d)", what, checkpoint, i, k, int64(k)/bs)
					}
				}
			}
			for _, h := range snaps {
				for _, rg := range [][2]int64{{0, 2 * bs}, {int64(len(snapWant)) - 20*bs, int64(len(snapWant))}} {
					if got := mustRead(t, h, rg[0], int(rg[1]-rg[0])); !bytes.Equal(got, snapWant[rg[0]:rg[1]]) {
						t.Fatalf("%s: a snapshot or clone changed", what)
					}
				}
			}
		}
		write(1*bs+5, 1, 100)
		write((n-16)*bs+7, 2, 3000)
		write((n-11)*bs, 3, int(bs))
		write((n-5)*bs+bs/2, 4, 100)
		if checkpoint {
			if err := v.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			write((n-4)*bs, 9, 10)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if h := v.Head(); len(h.Delta) == 0 {
			t.Fatal("no delta")
		}
		check("after a delta flush", nil)
		sid, err := v.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		snapWant := append([]byte(nil), want...)
		cid, err := Clone(ctx, s, sid, 0)
		if err != nil {
			t.Fatal(err)
		}
		sh, err := Open(ctx, s, sid, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ch, err := Open(ctx, s, cid, OpenOptions{Writable: true})
		if err != nil {
			t.Fatal(err)
		}
		write((n-11)*bs+bs/4, 5, 200) // a partial block over the snapshot's
		write((n-3)*bs, 6, 50)
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		check("after a second delta flush", snapWant, sh, ch)
		for _, size := range []int64{(n-12)*bs + 100, (n - 16) * bs, 4000*bs + 1, n * bs} {
			if err := v.Resize(ctx, uint64(size)); err != nil {
				t.Fatal(err)
			}
			if size < int64(len(want)) {
				want = want[:size]
			} else {
				want = append(want, make([]byte, size-int64(len(want)))...)
			}
			check("after a resize", snapWant, sh, ch)
			write(size-1, 7, 1)
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			check("after a write at the end", snapWant, sh, ch)
		}
		if got := mustRead(t, ch, 0, len(snapWant)); !bytes.Equal(got, snapWant) {
			t.Fatal("the clone changed")
		}
		v.Close(ctx)
	}
}

// TestHashSealDeltaPartials (issue 11 review2): partial blocks that live
// only in heads' deltas (a clone's first small writes, a snapshot of it
// taken with them, a takeover's unsealed epoch) are hashed and sealed
// into content blocks, repaired from their own objects and bases after
// the new content objects are lost, and read the same throughout.
func TestHashSealDeltaPartials(t *testing.T) {
	s := objstore.NewMem()
	v, data := snapshotted(t, s)
	sid, err := v.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cid, err := Clone(ctx, s, sid, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(ctx, s, cid, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{7, bs + 3000, 3*bs - 2} {
		if err := c.WriteAt(ctx, []byte("xyz"), int64(off), false); err != nil {
			t.Fatal(err)
		}
		copy(data[off:], "xyz")
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if h := c.Head(); len(h.Delta) != 4 || h.Delta[3].Entry.Kind() != blockmap.Partial {
		t.Fatalf("clone head: delta %v; want 4 partial entries", h.Delta)
	}
	// A takeover: the clone's partial objects are of an unsealed epoch.
	c2, err := Open(ctx, s, cid, OpenOptions{Writable: true, NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.WriteAt(ctx, []byte("Q"), bs+3001, false); err != nil { // the unsealed partial block, copied whole
		t.Fatal(err)
	}
	data[bs+3001] = 'Q'
	if err := c2.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	for b, e := range c2.Entries() {
		if unsealed(&blockmap.Head{ID: cid, Epoch: c2.Head().Epoch, Unsealed: 1}, e) {
			t.Fatalf("block %d is %v after the seal", b, e)
		}
	}
	wantBytes(t, c2, 0, data, "after the seal")
	// A snapshot with the sealed entries in its delta, hashed.
	s2, err := c2.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.WriteAt(ctx, []byte("later"), 2*bs+10, false); err != nil {
		t.Fatal(err)
	}
	if err := c2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	h, err := Open(ctx, s, s2, OpenOptions{Remap: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := h.HashWith(ctx, HashOptions{KeepReplaced: true})
	if err != nil {
		t.Fatal(err)
	}
	h.Close(ctx)
	for _, r := range st.Replaced {
		s.Delete(ctx, r.New.ObjectName())
	}
	if lost, err := RepairHash(ctx, s, st.Replaced); err != nil || len(lost) != 0 {
		t.Fatalf("repair: lost %v, %v", lost, err)
	}
	for _, id := range []blockmap.ID{s2, cid} {
		r, err := Open(ctx, s, id, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := data
		if id == cid {
			want = append([]byte(nil), data...)
			copy(want[2*bs+10:], "later")
		}
		wantBytes(t, r, 0, want, "after the hash and the repair")
		if id == s2 {
			if hd := r.Head(); len(hd.Delta) != 0 {
				t.Fatalf("the hashed snapshot keeps a delta %v", hd.Delta)
			}
		}
	}
}
