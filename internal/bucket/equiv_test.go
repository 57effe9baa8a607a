package bucket_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// genData is size bytes, zero but in the blocks content names: those
// hold random bytes, but for the last tail bytes of each, which are zero
// (a block that ends in zeros is stored without them).
type genData struct {
	size    int64
	content map[int64]bool
	tail    int64
}

// block returns the bytes of block blk (bs of them, past the end too).
func (g genData) block(blk int64) []byte {
	p := make([]byte, bs)
	if g.content[blk] {
		rng := rand.New(rand.NewPCG(uint64(blk), 7))
		for i := range p[:bs-g.tail] {
			p[i] = byte(rng.Uint32()) | 1
		}
	}
	return p
}

// reader returns the data from its start.
func (g genData) reader() io.Reader { return &genReader{g: g} }

type genReader struct {
	g   genData
	off int64
}

func (r *genReader) Read(p []byte) (int, error) {
	if r.off >= r.g.size {
		return 0, io.EOF
	}
	blk, in := r.off/bs, r.off%bs
	n := copy(p, r.g.block(blk)[in:min(bs, r.g.size-blk*bs)])
	r.off += int64(n)
	return n, nil
}

// checker compares what is written to it with g.
type checker struct {
	g   genData
	off int64
	bad int64 // first differing offset + 1
}

func (c *checker) Write(p []byte) (int, error) {
	for done := 0; done < len(p); {
		blk, in := c.off/bs, c.off%bs
		want := c.g.block(blk)[in:]
		n := min(len(want), len(p)-done)
		if c.bad == 0 && !bytes.Equal(p[done:done+n], want[:n]) {
			c.bad = c.off + 1
		}
		done += n
		c.off += int64(n)
	}
	return len(p), nil
}

// normal returns h's head without what differs from one map to the
// next (its ID, its segments' owner).
func normal(h blockmap.Head) blockmap.Head {
	h.ID = blockmap.ID{}
	segs := make([]blockmap.SegmentRef, len(h.Segments))
	for i, r := range h.Segments {
		r.Owner = blockmap.ID{}
		segs[i] = r
	}
	h.Segments = segs
	return h
}

// A map an upload writes (storeBlocks, writeSegments, writeHead) is the
// map image.Import (volume.CreateImage) writes for the same data: the
// same head but for its ID, the same segments, byte for byte, and the
// same blocks; and both read back as the data through volume.Open.
func TestUploadMapIsImageMap(t *testing.T) {
	seg := int64(blockmap.SegmentEntries)
	cases := []struct {
		name string
		g    genData
		big  bool
	}{
		{"1 byte", genData{size: 1, content: map[int64]bool{0: true}}, false},
		{"block-1", genData{size: bs - 1, content: map[int64]bool{0: true}}, false},
		{"block", genData{size: bs, content: map[int64]bool{0: true}}, false},
		{"block+1", genData{size: bs + 1, content: map[int64]bool{0: true, 1: true}}, false},
		{"zero block between", genData{size: 3 * bs, content: map[int64]bool{0: true, 2: true}}, false},
		{"all zero", genData{size: 2*bs + 5}, false},
		{"zero tails", genData{size: 2*bs + 100, content: map[int64]bool{0: true, 1: true, 2: true}, tail: 1000}, false},
		{"segment", genData{size: seg * bs, content: map[int64]bool{0: true, seg - 1: true}}, true},
		{"segment+1", genData{size: seg*bs + 1, content: map[int64]bool{seg: true}}, true},
		{"zero first segment", genData{size: 2 * seg * bs, content: map[int64]bool{2*seg - 1: true}}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.big && testing.Short() {
				t.Skip("streams 256 MiB or more")
			}
			m := objstore.NewMem()
			b := &bucket.Store{S: m, BlockShift: 16}
			if err := b.CreateBucket(ctx, "bkt"); err != nil {
				t.Fatal(err)
			}
			obj, err := b.PutObject(ctx, "bkt", "obj", c.g.reader(), c.g.size, bucket.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			st, err := image.Import(ctx, m, c.g.reader(), c.g.size, image.Options{BlockShift: 16})
			if err != nil {
				t.Fatal(err)
			}
			if len(obj.Pieces) != 1 || obj.Pieces[0].Size != c.g.size || obj.Size != c.g.size {
				t.Fatalf("object of %d bytes has pieces %+v", c.g.size, obj.Pieces)
			}
			up, _, err := volume.ReadHead(ctx, m, obj.Pieces[0].Map)
			if err != nil {
				t.Fatal(err)
			}
			im, _, err := volume.ReadHead(ctx, m, st.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fmt.Sprintf("%+v", normal(*up)), fmt.Sprintf("%+v", normal(*im)); got != want {
				t.Fatalf("upload's head\n%s\nimage's head\n%s", got, want)
			}
			for i := range up.Segments {
				ub, _, err := m.Get(ctx, up.Segments[i].Name())
				if err != nil {
					t.Fatal(err)
				}
				ib, _, err := m.Get(ctx, im.Segments[i].Name())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(ub, ib) {
					t.Fatalf("segment %d differs", up.Segments[i].Index)
				}
			}
			for _, o := range []*bucket.Object{obj, {Key: "image", Size: st.Size, Pieces: []bucket.Piece{{Map: st.ID, Size: st.Size}}}} {
				ck := &checker{g: c.g}
				if err := b.Read(ctx, o, 0, o.Size, ck); err != nil {
					t.Fatal(err)
				}
				if ck.off != c.g.size || ck.bad != 0 {
					t.Fatalf("%s reads %d bytes, first wrong at %d", o.Key, ck.off, ck.bad-1)
				}
			}
		})
	}
}

// An object of no bytes has no map, and reads as nothing.
func TestUploadEmptyHasNoMap(t *testing.T) {
	m := objstore.NewMem()
	b := &bucket.Store{S: m, BlockShift: 16}
	if err := b.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{0, -1} {
		obj, err := b.PutObject(ctx, "bkt", "obj", bytes.NewReader(nil), size, bucket.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if obj.Size != 0 || len(obj.Pieces) != 0 {
			t.Fatalf("object of no bytes (size %d): %+v", size, obj)
		}
		n := 0
		m.List(ctx, blockmap.VolumesPrefix, func(objstore.Info) error { n++; return nil })
		if n != 0 {
			t.Fatalf("an object of no bytes left %d map objects", n)
		}
	}
}
