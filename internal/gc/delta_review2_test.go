package gc_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// TestRandomDeltaPartialGC (issue 11 review2): volumes, snapshots and
// clones written in small pieces (partial blocks, entries in the head's
// delta), trimmed, checkpointed, resized and removed at random, with a
// collection after most steps once everything is past its grace. Every
// name must read what an oracle says and the store must hold exactly
// what the maps reference: a collection that deletes a segment entry's
// object a delta still needs, or a partial block's base, fails it.
func TestRandomDeltaPartialGC(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomDeltaGC(t, seed) })
	}
}

func randomDeltaGC(t *testing.T, seed uint64) {
	s := objstore.NewMem()
	m, clk := setup(s)
	rng := rand.New(rand.NewPCG(seed, 11))
	oracle := map[string][]byte{}
	writable := map[string]bool{}
	n := 0
	newName := func(p string) string { n++; return fmt.Sprintf("%s%d", p, n) }
	if _, err := m.CreateVolume(ctx, "v0", 6*bs, 16); err != nil {
		t.Fatal(err)
	}
	oracle["v0"], writable["v0"] = make([]byte, 6*bs), true
	pick := func(w bool) string {
		var c []string
		for name := range oracle {
			if !w || writable[name] {
				c = append(c, name)
			}
		}
		if len(c) == 0 {
			return ""
		}
		// (map order is random: sort for a reproducible run)
		for i := range c {
			for j := i + 1; j < len(c); j++ {
				if c[j] < c[i] {
					c[i], c[j] = c[j], c[i]
				}
			}
		}
		return c[rng.IntN(len(c))]
	}
	var trace []string
	defer func() {
		if t.Failed() {
			t.Logf("seed %d, steps:\n%v", seed, trace[max(0, len(trace)-20):])
		}
	}()
	for step := 0; step < 150; step++ {
		switch op := rng.IntN(100); {
		case op < 40:
			name := pick(true)
			if name == "" {
				continue
			}
			d := oracle[name]
			off := rng.IntN(len(d))
			l := 1 + rng.IntN(min(len(d)-off, bs/8))
			if rng.IntN(4) == 0 {
				l = min(len(d)-off, 1+rng.IntN(2*bs))
			}
			p := randBytes(rng, l)
			v, _, err := m.Open(ctx, name, true)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.WriteAt(ctx, p, int64(off), false); err != nil {
				t.Fatal(err)
			}
			if rng.IntN(4) == 0 {
				if err := v.Checkpoint(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := v.Close(ctx); err != nil {
				t.Fatal(err)
			}
			copy(d[off:], p)
			trace = append(trace, fmt.Sprintf("write %s %d+%d", name, off, l))
		case op < 50:
			name := pick(true)
			if name == "" {
				continue
			}
			d := oracle[name]
			b := rng.IntN((len(d) + bs - 1) / bs)
			l := min(bs, len(d)-b*bs)
			v, _, err := m.Open(ctx, name, true)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Trim(ctx, int64(b*bs), int64(l)); err != nil {
				t.Fatal(err)
			}
			if err := v.Close(ctx); err != nil {
				t.Fatal(err)
			}
			clear(d[b*bs : b*bs+l])
			trace = append(trace, fmt.Sprintf("trim %s block %d", name, b))
		case op < 60:
			name := pick(true)
			if name == "" {
				continue
			}
			sn := newName("s")
			if _, err := m.Snapshot(ctx, name, sn); err != nil {
				t.Fatal(err)
			}
			oracle[sn] = append([]byte(nil), oracle[name]...)
			trace = append(trace, "snapshot "+name+" "+sn)
		case op < 70:
			var snaps []string
			for name := range oracle {
				if !writable[name] {
					snaps = append(snaps, name)
				}
			}
			if len(snaps) == 0 {
				continue
			}
			src := pick(false)
			if writable[src] {
				continue
			}
			cn := newName("c")
			if _, err := m.Clone(ctx, src, cn, 0); err != nil {
				t.Fatal(err)
			}
			oracle[cn], writable[cn] = append([]byte(nil), oracle[src]...), true
			trace = append(trace, "clone "+src+" "+cn)
		case op < 76:
			name := pick(true)
			if name == "" {
				continue
			}
			size := max(1, len(oracle[name])+rng.IntN(4*bs)-2*bs)
			v, _, err := m.Open(ctx, name, true)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Resize(ctx, uint64(size)); err != nil {
				t.Fatal(err)
			}
			if err := v.Close(ctx); err != nil {
				t.Fatal(err)
			}
			d := oracle[name]
			if size < len(d) {
				d = d[:size]
			} else {
				d = append(d, make([]byte, size-len(d))...)
			}
			oracle[name] = d
			trace = append(trace, fmt.Sprintf("resize %s %d", name, size))
		case op < 84:
			name := pick(false)
			if name == "" || len(oracle) < 3 {
				continue
			}
			if err := m.Remove(ctx, name); err != nil {
				t.Fatal(err)
			}
			delete(oracle, name)
			delete(writable, name)
			trace = append(trace, "remove "+name)
		default:
			clk.advance(2 * time.Hour)
			if _, err := m.GC(ctx, gc.Options{}); err != nil {
				t.Fatal(err)
			}
			trace = append(trace, "gc")
			for name, want := range oracle {
				if got := manage.ReadT(t, m, name, 0, -1); !bytes.Equal(got, want) {
					i := 0
					for i < len(got) && i < len(want) && got[i] == want[i] {
						i++
					}
					t.Fatalf("step %d: %s differs from the oracle at byte %d (block %d) after a collection", step, name, i, i/bs)
				}
			}
			checkClean(t, m)
		}
	}
}

// TestSharedSegmentDeltaOverride (issue 11 review2): a segment shared by
// two clones, one of which overrides an entry of it in its head's delta
// with a partial block over that entry's object, and the volume they
// came from checkpointed and trimmed since. Collections as each of the
// others is removed keep what each remaining map reads (the segment's
// entries that the delta overrides while the other clone reads them), up to the last
// clone whose only reference to the old object is as the base of its
// delta's partial entry, which overrides the segment's.
func TestSharedSegmentDeltaOverride(t *testing.T) {
	s := objstore.NewMem()
	m, clk := setup(s)
	rng := rand.New(rand.NewPCG(8, 9))
	if _, err := m.CreateVolume(ctx, "vm", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	orig := randBytes(rng, 4*bs)
	v, _, err := m.Open(ctx, "vm", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, orig, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Snapshot(ctx, "vm", "vm@a"); err != nil {
		t.Fatal(err)
	}
	manage.WriteT(t, m, "vm", bs+100, []byte("patched"))
	patched := append([]byte(nil), orig...)
	copy(patched[bs+100:], "patched")
	// and a block replaced whole: the segment's entry for it, which d's
	// delta overrides, is then referenced by c alone.
	whole := randBytes(rng, bs)
	manage.WriteT(t, m, "vm", 2*bs, whole)
	copy(patched[2*bs:], whole)
	if _, err := m.Snapshot(ctx, "vm", "vm@b"); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"vm@a", "c"}, {"vm@b", "d"}} {
		if _, err := m.Clone(ctx, c[0], c[1], 0); err != nil {
			t.Fatal(err)
		}
	}
	rd, err := m.Lookup(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if h, _, _ := volume.ReadHead(ctx, s, rd.ID); len(h.Delta) != 2 || len(h.Segments) != 1 {
		t.Fatalf("clone d: delta %v, segments %v; want two entries over one shared segment", h.Delta, h.Segments)
	}
	v, _, err = m.Open(ctx, "vm", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Trim(ctx, 0, 4*bs); err != nil {
		t.Fatal(err)
	}
	if err := v.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"c": orig, "d": patched, "vm": make([]byte, 4*bs)}
	for _, gone := range []string{"vm@a", "vm@b", "vm", "c"} {
		if err := m.Remove(ctx, gone); err != nil {
			t.Fatal(err)
		}
		delete(want, gone)
		clk.advance(2 * time.Hour)
		if _, err := m.GC(ctx, gc.Options{}); err != nil {
			t.Fatal(err)
		}
		for name, w := range want {
			if !bytes.Equal(manage.ReadT(t, m, name, 0, -1), w) {
				t.Fatalf("after removing %s and a collection, %s reads otherwise", gone, name)
			}
		}
		checkClean(t, m)
	}
}
