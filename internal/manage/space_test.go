package manage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/objstore"
)

// countReads records which volumes' heads and segments a store read.
type countReads struct {
	objstore.Store
	mu   sync.Mutex
	vols map[blockmap.ID]int
}

func (s *countReads) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if rest, ok := strings.CutPrefix(name, "vol/"); ok {
		if i := strings.IndexByte(rest, '/'); i > 0 {
			if id, err := blockmap.ParseID(rest[:i]); err == nil {
				s.mu.Lock()
				s.vols[id]++
				s.mu.Unlock()
			}
		}
	}
	return s.Store.Get(ctx, name)
}

func (s *countReads) reset() {
	s.mu.Lock()
	s.vols = map[blockmap.ID]int{}
	s.mu.Unlock()
}

// TestInfoReadsOnlyLineage (issue 12, space accounting): with many
// unrelated volumes, snapshots, clones and images in the store, info of
// a volume reads the maps of its own lineage and of nothing else.
func TestInfoReadsOnlyLineage(t *testing.T) {
	s := &countReads{Store: objstore.NewMem(), vols: map[blockmap.ID]int{}}
	m := New(s)
	data := func(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }
	for i := range 20 {
		name := fmt.Sprintf("other%d", i)
		if _, err := m.CreateVolume(ctx, name, 4*bs, 16); err != nil {
			t.Fatal(err)
		}
		WriteT(t, m, name, 0, data(byte(i+1), 2*bs))
		if i%4 == 0 {
			if _, err := m.Snapshot(ctx, name, name+"@s"); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Clone(ctx, name+"@s", name+"-c", 0); err != nil {
				t.Fatal(err)
			}
			WriteT(t, m, name+"-c", bs, data(0xee, bs))
		}
	}
	img := data(7, 4*bs)
	if _, _, err := m.Import(ctx, bytes.NewReader(img), int64(len(img)), "img", image.Options{BlockShift: 16}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := m.Clone(ctx, "img", fmt.Sprintf("img-c%d", i), 0); err != nil {
			t.Fatal(err)
		}
	}

	// The lineage: a, its snapshots, clones of those and their snapshots.
	if _, err := m.CreateVolume(ctx, "a", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	WriteT(t, m, "a", 0, data(1, 4*bs))
	snap := func(vol, name string) {
		if _, err := m.Snapshot(ctx, vol, name); err != nil {
			t.Fatal(err)
		}
	}
	clone := func(src, name string) {
		if _, err := m.Clone(ctx, src, name, 0); err != nil {
			t.Fatal(err)
		}
	}
	snap("a", "a@1")
	WriteT(t, m, "a", 0, data(2, bs))
	clone("a@1", "b")
	WriteT(t, m, "b", bs, data(3, bs))
	snap("b", "b@1")
	WriteT(t, m, "b", 2*bs+5, []byte("partial"))
	clone("b@1", "c")
	WriteT(t, m, "c", 3*bs, data(4, bs))
	family := map[blockmap.ID]string{}
	for _, n := range []string{"a", "a@1", "b", "b@1", "c"} {
		r, err := m.Lookup(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		family[r.ID] = n
	}
	for _, n := range []string{"a", "a@1", "b", "b@1", "c"} {
		s.reset()
		if _, err := m.Info(ctx, n); err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		for id, k := range s.vols {
			if _, ok := family[id]; !ok {
				t.Errorf("info %s read %d objects of volume %s, not of its lineage", n, k, id)
			}
		}
		s.mu.Unlock()
	}
}

// spaceModel drives random lineages on a mem store whose objects and
// collections share a fake clock, and remembers every volume ever made
// and what it was made from, removed ones included.
type spaceModel struct {
	t    *testing.T
	rng  *rand.Rand
	mem  *objstore.Mem
	m    *Manager
	now  time.Time
	seq  int
	from map[blockmap.ID]blockmap.ID   // parent or origin
	kids map[blockmap.ID][]blockmap.ID // the history's children
	pool [][]byte                      // blocks written more than once, for dedup
}

func newSpaceModel(t *testing.T, seed uint64) *spaceModel {
	sm := &spaceModel{t: t, rng: rand.New(rand.NewPCG(seed, 12)), mem: objstore.NewMem(), now: time.Unix(1_000_000, 0),
		from: map[blockmap.ID]blockmap.ID{}, kids: map[blockmap.ID][]blockmap.ID{}}
	sm.mem.Now = func() time.Time { return sm.now }
	sm.m = New(sm.mem)
	sm.m.Now = sm.mem.Now
	for range 3 {
		b := make([]byte, bs)
		for i := range b {
			b[i] = byte(sm.rng.IntN(255) + 1)
		}
		sm.pool = append(sm.pool, b)
	}
	return sm
}

func (sm *spaceModel) records() []catalog.Record {
	var rs []catalog.Record
	if err := sm.m.Catalog.All(ctx, func(r catalog.Record) error { rs = append(rs, r); return nil }); err != nil {
		sm.t.Fatal(err)
	}
	return rs
}

func (sm *spaceModel) pick(want func(catalog.Record) bool) (catalog.Record, bool) {
	var rs []catalog.Record
	for _, r := range sm.records() {
		if want(r) {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return catalog.Record{}, false
	}
	return rs[sm.rng.IntN(len(rs))], true
}

func (sm *spaceModel) made(r *catalog.Record, err error, from blockmap.ID) {
	if err != nil {
		sm.t.Fatal(err)
	}
	sm.from[r.ID] = from
	sm.kids[from] = append(sm.kids[from], r.ID)
}

func (sm *spaceModel) name() string { sm.seq++; return fmt.Sprintf("v%d", sm.seq) }

// step does one random operation.
func (sm *spaceModel) step() {
	writable := func(r catalog.Record) bool { return !r.ReadOnly() }
	switch k := sm.rng.IntN(20); {
	case k < 2:
		r, err := sm.m.CreateVolume(ctx, sm.name(), 4*bs, 16)
		sm.made(r, err, blockmap.ID{})
	case k < 3:
		img := make([]byte, 0, 4*bs)
		for range 4 {
			img = append(img, sm.pool[sm.rng.IntN(len(sm.pool))]...)
		}
		r, _, err := sm.m.Import(ctx, bytes.NewReader(img), int64(len(img)), sm.name(), image.Options{BlockShift: 16})
		sm.made(r, err, blockmap.ID{})
	case k < 10:
		r, ok := sm.pick(writable)
		if !ok {
			return
		}
		b := int64(sm.rng.IntN(4))
		switch sm.rng.IntN(3) {
		case 0: // a whole block, maybe one stored elsewhere too
			WriteT(sm.t, sm.m, r.Name, b*bs, sm.pool[sm.rng.IntN(len(sm.pool))])
		case 1:
			WriteT(sm.t, sm.m, r.Name, b*bs, bytes.Repeat([]byte{byte(sm.rng.IntN(255) + 1)}, bs))
		default: // a few sub-blocks: a partial block over an older one
			WriteT(sm.t, sm.m, r.Name, b*bs+int64(sm.rng.IntN(bs-3000)), bytes.Repeat([]byte{byte(sm.rng.IntN(255) + 1)}, 1+sm.rng.IntN(3000)))
		}
	case k < 13:
		r, ok := sm.pick(writable)
		if !ok {
			return
		}
		s, err := sm.m.Snapshot(ctx, r.Name, sm.name())
		sm.made(s, err, r.ID)
	case k < 16:
		r, ok := sm.pick(func(r catalog.Record) bool { return r.ReadOnly() })
		if !ok {
			return
		}
		c, err := sm.m.Clone(ctx, r.Name, sm.name(), 0)
		sm.made(c, err, r.ID)
	case k < 18:
		r, ok := sm.pick(func(catalog.Record) bool { return true })
		if !ok {
			return
		}
		if _, err := sm.m.Hash(ctx, r.Name, nil); err != nil {
			sm.t.Fatal(err)
		}
	default:
		r, ok := sm.pick(func(catalog.Record) bool { return true })
		if !ok || len(sm.records()) < 6 {
			return
		}
		if err := sm.m.Remove(ctx, r.Name); err != nil {
			sm.t.Fatal(err)
		}
	}
}

func (sm *spaceModel) gc() {
	sm.now = sm.now.Add(2 * time.Hour) // past the grace period
	if _, err := sm.m.GC(ctx, gc.Options{}); err != nil {
		sm.t.Fatal(err)
	}
}

// dataObjects returns the names of the block objects in the store.
func (sm *spaceModel) dataObjects() map[string]bool {
	out := map[string]bool{}
	err := sm.mem.List(ctx, "", func(in objstore.Info) error {
		if strings.HasPrefix(in.Name, "blk/") || strings.HasPrefix(in.Name, "vol/") && strings.Contains(in.Name, "/d/") {
			out[in.Name] = true
		}
		return nil
	})
	if err != nil {
		sm.t.Fatal(err)
	}
	return out
}

// historyLineage is a lineage that keeps removed volumes, as the lineage
// interface asks, and records which maps it read.
type historyLineage struct {
	sm   *spaceModel
	read map[blockmap.ID]bool
}

func (l *historyLineage) children(_ context.Context, id blockmap.ID) ([]blockmap.ID, error) {
	return l.sm.kids[id], nil
}

func (l *historyLineage) loadMap(ctx context.Context, id blockmap.ID) (*blockmap.Head, []blockmap.Entry, error) {
	l.read[id] = true
	return l.sm.m.loadMap(ctx, id)
}

func objectName(k [32]byte) string {
	return blockmap.PrivateEntry(blockmap.ID(k[:16]), binary.BigEndian.Uint64(k[16:]), binary.BigEndian.Uint64(k[24:])).ObjectName()
}

// TestExclusiveIsWhatGCFrees (issue 12, space accounting): over random
// lineages (volumes written whole and in sub-blocks, snapshots, clones,
// hashes, imports sharing content blocks, removals of any record,
// ancestors included), the private objects info counts as exclusive to a
// volume are exactly the private objects that removing it and then
// collecting garbage deletes, whether the lineage comes from the catalog
// document (Info) or from a lineage that keeps removed volumes (read
// then only from the volume's own family); and content blocks are never
// counted.
func TestExclusiveIsWhatGCFrees(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			sm := newSpaceModel(t, seed)
			for range 40 {
				sm.step()
			}
			for checked := 0; ; checked++ {
				if checked%3 == 2 {
					for range 8 {
						sm.step()
					}
				}
				rs := sm.records()
				if len(rs) == 0 {
					break
				}
				r := rs[sm.rng.IntN(len(rs))]
				sm.gc()
				in, err := sm.m.Info(ctx, r.Name)
				if err != nil {
					t.Fatal(err)
				}
				h, entries, err := sm.m.loadMap(ctx, r.ID)
				if err != nil {
					t.Fatal(err)
				}
				hl := &historyLineage{sm: sm, read: map[blockmap.ID]bool{}}
				sp, excl, err := spaceOf(ctx, hl, r.ID, h, entries)
				if err != nil {
					t.Fatal(err)
				}
				if sp != in.Space {
					t.Fatalf("%s: info %+v, from the whole history %+v", r.Name, in.Space, sp)
				}
				root := r.ID
				for !sm.from[root].IsZero() {
					root = sm.from[root]
				}
				family := map[blockmap.ID]bool{}
				var walk func(blockmap.ID)
				walk = func(id blockmap.ID) {
					family[id] = true
					for _, k := range sm.kids[id] {
						walk(k)
					}
				}
				walk(root)
				for id := range hl.read {
					if !family[id] {
						t.Errorf("%s: read the map of %s, of another family", r.Name, id)
					}
				}

				st, err := sm.m.StatsWith(ctx, StatsOptions{Volumes: true})
				if err != nil {
					t.Fatal(err)
				}
				i := slices.IndexFunc(st.VolumeSpace, func(v VolumeSpace) bool { return v.Name == r.Name })
				if i < 0 || st.VolumeSpace[i].ID != r.ID || st.VolumeSpace[i].ExclusiveBytes != in.ExclusiveBytes {
					t.Fatalf("%s: info %+v; store stats %+v", r.Name, in.Space, st.VolumeSpace)
				}
				// The bytes of each content block, as its first block in the map.
				contentLen := map[string]int64{}
				for b, e := range entries {
					for _, o := range []blockmap.Entry{e, e.Base()} {
						if _, ok := contentLen[o.ObjectName()]; !ok && o.Kind() == blockmap.Content {
							contentLen[o.ObjectName()] = h.BlockLen(int64(b))
						}
					}
				}

				before := sm.dataObjects()
				if err := sm.m.Remove(ctx, r.Name); err != nil {
					t.Fatal(err)
				}
				sm.gc()
				after := sm.dataObjects()
				freed := map[string]bool{}
				freedContent := int64(0)
				for o := range before {
					switch {
					case after[o]:
					case strings.HasPrefix(o, "blk/"):
						freedContent += contentLen[o]
					default:
						freed[o] = true
					}
				}
				if freedContent != st.VolumeSpace[i].ExclusiveContentBytes {
					t.Errorf("%s: removing it and collecting deleted %d bytes of content blocks; store stats says %d", r.Name, freedContent, st.VolumeSpace[i].ExclusiveContentBytes)
				}
				counted := map[string]bool{}
				for k := range excl {
					counted[objectName(k)] = true
				}
				for o := range counted {
					if !freed[o] {
						t.Errorf("%s: counted %s as exclusive, but removing it and collecting left it", r.Name, o)
					}
				}
				for o := range freed {
					if !counted[o] {
						t.Errorf("%s: removing it and collecting deleted %s, not counted as exclusive", r.Name, o)
					}
				}
				if t.Failed() {
					t.Fatalf("%s (%s, %d records left): %+v", r.Name, r.Kind, len(rs)-1, in.Space)
				}
			}
		})
	}
}

// unknownLineage cannot tell what was made from what.
type unknownLineage struct{ lineage }

func (unknownLineage) children(context.Context, blockmap.ID) ([]blockmap.ID, error) {
	return nil, errLineageUnknown
}

// TestExclusiveWithoutLineage: a lineage that cannot list what was made
// from a volume leaves as exclusive only what the volume wrote since its
// last snapshot, which nothing else can reference.
func TestExclusiveWithoutLineage(t *testing.T) {
	m := New(objstore.NewMem())
	if _, err := m.CreateVolume(ctx, "v", 4*bs, 16); err != nil {
		t.Fatal(err)
	}
	WriteT(t, m, "v", 0, bytes.Repeat([]byte{1}, 2*bs))
	if _, err := m.Snapshot(ctx, "v", "v@1"); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, "v@1"); err != nil {
		t.Fatal(err)
	}
	WriteT(t, m, "v", 2*bs, bytes.Repeat([]byte{2}, bs))
	r, err := m.Lookup(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	h, entries, err := m.loadMap(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	known, _, err := spaceOf(ctx, catLineage{m}, r.ID, h, entries)
	if err != nil || known.ExclusiveBytes != 3*bs || known.PrivateBytes != bs {
		t.Fatalf("with the catalog's lineage: %+v, %v; want all 3 blocks exclusive, 1 private", known, err)
	}
	sp, _, err := spaceOf(ctx, unknownLineage{catLineage{m}}, r.ID, h, entries)
	if err != nil || sp.ExclusiveBytes != bs || sp.PrivateBytes != bs {
		t.Fatalf("without a lineage: %+v, %v; want the 1 block written since the snapshot", sp, err)
	}
}
