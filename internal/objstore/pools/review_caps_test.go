package pools

import (
	"context"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// radosish writes in place, syncs, copies, lends its buffers, fences and keeps
// handles, as RADOS does (over a mem store).
type radosish struct{ *objstore.Mem }

func (r radosish) ReadLend(ctx context.Context, name string, off int64, n int, fn func([][]byte) error) error {
	b := make([]byte, n)
	if err := r.Mem.ReadAt(ctx, name, b, off); err != nil {
		return err
	}
	return fn([][]byte{b})
}
func (radosish) FenceID(context.Context) (string, error) { return "c1", nil }
func (radosish) Fence(context.Context, string) error     { return nil }

// durableRW writes in place durably: no Syncer.
type durableRW struct{ m *objstore.Mem }

func (d durableRW) ReadAt(ctx context.Context, n string, p []byte, off int64) error {
	return d.m.ReadAt(ctx, n, p, off)
}
func (d durableRW) Get(ctx context.Context, n string) ([]byte, objstore.Version, error) {
	return d.m.Get(ctx, n)
}
func (d durableRW) Put(ctx context.Context, n string, b []byte) (objstore.Version, error) {
	return d.m.Put(ctx, n, b)
}
func (d durableRW) Create(ctx context.Context, n string, b []byte) (objstore.Version, error) {
	return d.m.Create(ctx, n, b)
}
func (d durableRW) Swap(ctx context.Context, n string, b []byte, v objstore.Version) (objstore.Version, error) {
	return d.m.Swap(ctx, n, b, v)
}
func (d durableRW) Delete(ctx context.Context, n string) error { return d.m.Delete(ctx, n) }
func (d durableRW) DeleteVersion(ctx context.Context, n string, v objstore.Version) error {
	return d.m.DeleteVersion(ctx, n, v)
}
func (d durableRW) Stat(ctx context.Context, n string) (objstore.Info, error) {
	return d.m.Stat(ctx, n)
}
func (d durableRW) List(ctx context.Context, p string, fn func(objstore.Info) error) error {
	return d.m.List(ctx, p, fn)
}
func (d durableRW) Close() error { return nil }
func (d durableRW) WriteAt(ctx context.Context, n string, p []byte, off int64) error {
	return d.m.WriteAt(ctx, n, p, off)
}

// TestReviewCapabilityMixes: capabilities of mixes beyond TestCapabilities
// (RADOS-like pools that lend and fence, a part whose in-place writes
// need no sync), and that each claimed one works on every part a name of
// it reaches.
func TestReviewCapabilityMixes(t *testing.T) {
	m := func() *objstore.Mem { return objstore.NewMem() }
	for _, tc := range []struct {
		name               string
		s                  objstore.Store
		rw, sync, cp, lend bool
	}{
		{"rados+rados", newTest(radosish{m()}, isData, radosish{m()}, radosish{m()}), true, true, true, true},
		{"mem+rados", newTest(m(), isData, radosish{m()}), true, true, true, true},
		{"durable+durable", newTest(durableRW{m()}, isData, durableRW{m()}), true, false, false, false},
		{"durable+mem", newTest(durableRW{m()}, isData, m()), true, true, true, false},
		{"bare+rados", newTest(bare{m()}, isData, radosish{m()}), false, false, false, true},
	} {
		got := []bool{has[objstore.RangeWriter](tc.s), has[objstore.Syncer](tc.s), has[objstore.Copier](tc.s), has[objstore.Lender](tc.s)}
		for i, what := range []string{"RangeWriter", "Syncer", "Copier", "Lender"} {
			if want := []bool{tc.rw, tc.sync, tc.cp, tc.lend}[i]; got[i] != want {
				t.Errorf("%s: %s = %v, want %v", tc.name, what, got[i], want)
			}
		}
		if has[objstore.Fencer](tc.s) || has[objstore.HandleOpener](tc.s) {
			t.Errorf("%s: a router claims Fencer or HandleOpener", tc.name)
		}
		blk := blockmap.PrivateEntry(blockmap.NewID(), 1, 1).ObjectName()
		for _, name := range []string{blk, blockmap.LogName(blockmap.NewID(), 1, 1)} {
			if rw, ok := tc.s.(objstore.RangeWriter); ok {
				if err := rw.WriteAt(ctx, name, []byte("abc"), 1); err != nil {
					t.Fatalf("%s: WriteAt %s: %v", tc.name, name, err)
				}
			} else if _, err := tc.s.Put(ctx, name, []byte("\x00abc")); err != nil {
				t.Fatal(err)
			}
			if sy, ok := tc.s.(objstore.Syncer); ok {
				if err := sy.Sync(ctx, name); err != nil {
					t.Fatalf("%s: Sync %s: %v", tc.name, name, err)
				}
			}
			if l, ok := tc.s.(objstore.Lender); ok {
				var got []byte
				err := l.ReadLend(ctx, name, 1, 3, func(bufs [][]byte) error {
					for _, b := range bufs {
						got = append(got, b...)
					}
					return nil
				})
				if err != nil || string(got) != "abc" {
					t.Fatalf("%s: ReadLend %s: %q %v", tc.name, name, got, err)
				}
			}
		}
	}
}
