package move

import (
	"bytes"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/volume"
)

// TestMoveAfterTakeoverSealsFirst: a volume whose writer was taken over
// (its last epoch unsealed: that writer may still land a late write in
// place in its own objects) is moved; the late write lands in the
// source's object after the copy. The move must not leave the map
// referencing a name whose copies in the two pools differ (which one a
// read finds, and which one gc keeps, would then depend on caches and
// timing): it seals the taken-over epoch before it copies, as a
// snapshot does.
func TestMoveAfterTakeoverSealsFirst(t *testing.T) {
	for _, kind := range []string{"mem", "file"} {
		t.Run(kind, func(t *testing.T) {
			f := newKind(t, kind)
			rec, err := f.m.Lookup(ctx, "v")
			if err != nil {
				t.Fatal(err)
			}
			// The takeover: a writer opens v in a new epoch without the
			// old one's release (what lease.TookOver makes OpenWriter do).
			w, err := volume.Open(ctx, f.m.Store, rec.ID, volume.OpenOptions{Writable: true, NewEpoch: true})
			if err != nil {
				t.Fatal(err)
			}
			h := w.Head()
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if h.Unsealed == 0 {
				t.Fatal("no unsealed epoch after the takeover")
			}
			var late string
			for _, e := range w.Entries() {
				if e.IsPrivate() && e.Owner() == rec.ID && e.Epoch() >= h.Unsealed && e.Epoch() < h.Epoch {
					late = e.ObjectName()
				}
			}
			if late == "" {
				t.Fatal("no block of the unsealed epoch")
			}
			landed := false
			_, err = Move(ctx, f.m, "v", "b", Options{Hook: func(step string) error {
				if step == StepSwitch && !landed {
					// The old writer's late write lands in its object, in a.
					landed = true
					b, _, err := f.a.Get(ctx, late)
					if err != nil {
						return err
					}
					_, err = f.a.Put(ctx, late, bytes.Repeat([]byte("L"), len(b)))
					return err
				}
				return nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			if !landed {
				t.Fatal("the late write did not land")
			}
			names, err := referenced(ctx, f.m, rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range names {
				if n == late {
					t.Errorf("after the move, v still references %s, of the epoch taken over", n)
				}
				if blockmap.ParseName(n).Kind != blockmap.PrivateObject {
					continue
				}
				ba, _, erra := f.a.Get(ctx, n)
				bb, _, errb := f.b.Get(ctx, n)
				if erra == nil && errb == nil && !bytes.Equal(ba, bb) {
					t.Errorf("%s: its copies in a and b differ", n)
				}
			}
			if v, _, err := f.m.Open(ctx, "v", false); err != nil {
				t.Fatal(err)
			} else if v.Head().Unsealed != 0 {
				t.Errorf("v left unsealed after the move: %d", v.Head().Unsealed)
			}
		})
	}
}
