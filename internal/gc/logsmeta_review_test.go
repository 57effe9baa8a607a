package gc_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/move"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
	"github.com/archipelago-go/archip/internal/volume"
)

// openLogsPools opens a pools store over meta and the pools a and b
// (stores without in-place writes, as S3) with the logs key given.
func openLogsPools(t *testing.T, logs string, meta, a, b objstore.Store) objstore.Store {
	t.Helper()
	by := map[string]objstore.Store{"mem://m": meta, "mem://a": a, "mem://b": b}
	c := pools.Config{Metadata: "mem://m", Logs: logs, Pools: []pools.Pool{{Name: "a", URL: "mem://a"}, {Name: "b", URL: "mem://b"}}}
	s, err := pools.Open(ctx, c, func(_ context.Context, u string, _ objstore.OpenOptions) (objstore.Store, error) {
		return keepOpen{by[u]}, nil
	}, objstore.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// keepOpen is a backend that a router's Close leaves open, with its
// Stat's freshness.
type keepOpen struct{ objstore.Store }

func (keepOpen) Close() error      { return nil }
func (k keepOpen) FreshStat() bool { return objstore.FreshStat(k.Store) }

// TestPoolsLogsMetadataMoveGC: on a pools store with logs = "metadata"
// whose pools lack in-place writes, a volume's written data stays in its
// write log index (in the metadata backend); collections at every step of
// a move from a to b, the collection after it (which deletes a's copies)
// and a writer configured without the key (which materializes the index
// into blocks of b) leave every byte readable, and a empty.
func TestPoolsLogsMetadataMoveGC(t *testing.T) {
	meta, a, b := objstore.NewMem(), segOnly{objstore.NewMem()}, segOnly{objstore.NewMem()}
	s := openLogsPools(t, pools.LogsMetadata, meta, a, b)
	m := manage.New(s)
	const bs = 1 << blockmap.MinBlockShift
	const size = 8 * bs
	if _, err := m.CreateVolume(ctx, "v", size, blockmap.MinBlockShift); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	want := map[string][]byte{"v": make([]byte, size)}
	write := func(n int) {
		t.Helper()
		for range n {
			off := rng.Int64N(size/4096) * 4096
			p := randBytes(rng, 4096)
			manage.WriteT(t, m, "v", off, p)
			copy(want["v"][off:], p)
		}
	}
	write(20)
	if _, err := m.Snapshot(ctx, "v", "v@1"); err != nil {
		t.Fatal(err)
	}
	want["v@1"] = bytes.Clone(want["v"])
	write(20)
	r, err := m.Lookup(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if h, _, err := volume.ReadHead(ctx, s, r.ID); err != nil || h.Index.IsZero() {
		t.Fatalf("no write log index (test premise): %v", err)
	}
	collect(t, m)
	readAll(t, m, want)
	hook := func(step string) error {
		switch step {
		case move.StepReopen, move.StepCopy, move.StepSwitch, move.StepDone:
			collect(t, m)
			readAll(t, m, want)
		}
		return nil
	}
	if _, err := move.Move(ctx, m, "v", "b", move.Options{Hook: hook}); err != nil {
		t.Fatal(err)
	}
	collect(t, m)
	if n := countIn(t, a); n != 0 {
		t.Errorf("%d copies left in a after the move", n)
	}
	readAll(t, m, want)
	write(10)
	collect(t, m)
	readAll(t, m, want)
	// A snapshot materializes the index into blocks of b.
	if _, err := m.Snapshot(ctx, "v", "v@2"); err != nil {
		t.Fatal(err)
	}
	want["v@2"] = bytes.Clone(want["v"])
	write(10)
	collect(t, m)
	readAll(t, m, want)
	if n := countIn(t, a); n != 0 {
		t.Errorf("%d blocks in a after the snapshot", n)
	}
	// A writer of a configuration without the key materializes the
	// index into blocks of b.
	plain := manage.New(openLogsPools(t, "", meta, a, b))
	manage.WriteT(t, plain, "v", 0, want["v"][:4096])
	if h, _, err := volume.ReadHead(ctx, s, r.ID); err != nil || !h.Index.IsZero() {
		t.Fatalf("the writer without logs = \"metadata\" left the index: %v", err)
	}
	collect(t, plain)
	readAll(t, plain, want)
	readAll(t, m, want)
	if n := countIn(t, a); n != 0 {
		t.Errorf("%d blocks in a after the materialization", n)
	}
}
