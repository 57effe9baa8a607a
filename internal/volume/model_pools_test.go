package volume

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
	"github.com/archipelago-go/archip/internal/objstore/s3"
)

// splitStore is a store of a metadata backend and data pools (package
// pools), the default pool first.
func splitStore(t *testing.T, meta objstore.Store, data ...objstore.Store) objstore.Store {
	t.Helper()
	var named []pools.Named
	for i, d := range data {
		named = append(named, pools.Named{Name: fmt.Sprint("p", i), Store: d})
	}
	s, err := pools.New(meta, named)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestModelPools runs the model on stores of several backends: blocks in
// a pool with in-place writes (the write log on), in one without (the S3
// case: whole blocks, no log), and in the first of two pools.
func TestModelPools(t *testing.T) {
	type putOnly struct{ objstore.Store }
	for _, tc := range []struct {
		name string
		open func(t *testing.T) objstore.Store
	}{
		{"mem+mem", func(t *testing.T) objstore.Store { return splitStore(t, objstore.NewMem(), objstore.NewMem()) }},
		{"mem+putonly", func(t *testing.T) objstore.Store {
			return splitStore(t, objstore.NewMem(), putOnly{objstore.NewMem()})
		}},
		{"file+file+file", func(t *testing.T) objstore.Store {
			var ss []objstore.Store
			for range 3 {
				s, err := objstore.OpenFile(t.TempDir(), true)
				if err != nil {
					t.Fatal(err)
				}
				ss = append(ss, s)
			}
			return splitStore(t, ss[0], ss[1:]...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= seeds(3); seed++ {
				t.Run(fmt.Sprint(seed), func(t *testing.T) {
					s := tc.open(t)
					defer s.Close()
					runModel(t, s, seed, 200, nil, false)
				})
			}
		})
	}
}

// TestModelSplitS3 runs the model on the split configuration of issue 13:
// metadata on files, blocks on an S3 server without conditional writes.
func TestModelSplitS3(t *testing.T) {
	c := s3.TestServer(t, "versitygw")
	c.NoConditional = true
	for seed := uint64(1); seed <= seeds(2); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			meta, err := objstore.OpenFile(t.TempDir(), true)
			if err != nil {
				t.Fatal(err)
			}
			data := s3.OpenTestStore(t, c)
			s := splitStore(t, meta, data)
			runModel(t, s, seed, 100, nil, false)
			n := 0
			data.List(ctx, "", func(objstore.Info) error { n++; return nil })
			if n == 0 {
				t.Fatal("no block reached the S3 pool")
			}
		})
	}
}

// splitStoreLogs is splitStore through pools.Open, with the
// configuration's logs key (pools.LogsMetadata keeps write log indexes).
func splitStoreLogs(t *testing.T, logs string, meta objstore.Store, data ...objstore.Store) objstore.Store {
	t.Helper()
	byURL := map[string]objstore.Store{"mem://meta": meta}
	c := pools.Config{Metadata: "mem://meta", Logs: logs}
	for i, d := range data {
		u := fmt.Sprint("mem://p", i)
		byURL[u] = d
		c.Pools = append(c.Pools, pools.Pool{Name: fmt.Sprint("p", i), URL: u})
	}
	open := func(_ context.Context, u string, _ objstore.OpenOptions) (objstore.Store, error) {
		return noClose{byURL[u]}, nil
	}
	s, err := pools.Open(context.Background(), c, open, objstore.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// noClose keeps a backend open when a router over it closes, so that
// another router may be opened over the same backends.
type noClose struct{ objstore.Store }

func (noClose) Close() error { return nil }

func (s noClose) FreshStat() bool { return objstore.FreshStat(s.Store) }

// putOnlyStore is a backend without in-place writes (the S3 case).
type putOnlyStore struct{ objstore.Store }

func (s putOnlyStore) FreshStat() bool { return objstore.FreshStat(s.Store) }

// TestModelPoolsLogsMetadata runs the model on pools stores with
// logs = "metadata" whose pools lack in-place writes: writers keep write
// log indexes in the metadata backend (takeovers, snapshots, restarts,
// removals of the model included).
func TestModelPoolsLogsMetadata(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) objstore.Store
	}{
		{"mem+putonly", func(t *testing.T) objstore.Store {
			return splitStoreLogs(t, pools.LogsMetadata, objstore.NewMem(), putOnlyStore{objstore.NewMem()})
		}},
		{"file+putonly+putonly", func(t *testing.T) objstore.Store {
			meta, err := objstore.OpenFile(t.TempDir(), true)
			if err != nil {
				t.Fatal(err)
			}
			return splitStoreLogs(t, pools.LogsMetadata, meta, putOnlyStore{objstore.NewMem()}, putOnlyStore{objstore.NewMem()})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= seeds(4); seed++ {
				t.Run(fmt.Sprint(seed), func(t *testing.T) {
					s := tc.open(t)
					defer s.Close()
					if !objstore.KeepsLogIndex(s) {
						t.Fatal("the store keeps no write log index")
					}
					runModel(t, s, seed, 300, nil, false)
				})
			}
		})
	}
}

// TestPoolsLogsSwitch: a volume written through a pools store with
// logs = "metadata" (its flushed writes kept in a write log index), taken
// over by a writer of the same backends configured without it (which
// materializes the index at open, putting the blocks to the pool), then
// taken over again with logs = "metadata", each writer dying without a
// close: every flushed write reads back at each step, and the writer
// without the key leaves no index behind.
func TestPoolsLogsSwitch(t *testing.T) {
	ctx := context.Background()
	meta, data := objstore.NewMem(), putOnlyStore{objstore.NewMem()}
	open := func(logs string) objstore.Store {
		return splitStoreLogs(t, logs, noClose{meta}, noClose{data})
	}
	keep, plain := open(pools.LogsMetadata), open("")
	id, v := newSegVolume(t, keep, 8)
	want := readAll(t, v)
	rng := rand.New(rand.NewPCG(3, 4))
	randomWrites(t, v, want, rng, 64) // ends with a flush
	if err := v.checkpointNow(ctx); err != nil {
		t.Fatal(err)
	}
	if h := storedHead(t, meta, id); h.Index.IsZero() {
		t.Fatal("logs = \"metadata\": the checkpoint stored no index")
	}
	for round := range 4 {
		s := plain
		if round%2 == 1 {
			s = keep
		}
		w := takeOver(t, s, id, want)
		h := storedHead(t, meta, id)
		if s == plain && !h.Index.IsZero() {
			t.Fatalf("round %d: a writer without logs = \"metadata\" left the index in the head", round)
		}
		randomWrites(t, w, want, rng, 64)
		for i, h := range []*Volume{w, nil} {
			if h == nil {
				var err error
				if h, err = Open(ctx, s, id, OpenOptions{}); err != nil {
					t.Fatal(err)
				}
				defer h.Close(ctx)
			}
			if !bytes.Equal(readAll(t, h), want) {
				t.Fatalf("round %d: handle %d does not read the writes flushed before a checkpoint", round, i)
			}
		}
		if err := w.checkpointNow(ctx); err != nil {
			t.Fatal(err)
		}
		randomWrites(t, w, want, rng, 32)
		// w dies without a close.
		r, err := Open(ctx, s, id, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, r), want) {
			t.Fatalf("round %d: a reader does not read every flushed write", round)
		}
		r.Close(ctx)
	}
}

// TestModelPoolsLogsMetadataCrash is TestModelSegLogCrash on a pools
// store with logs = "metadata": crash images of the metadata backend
// (write log segments, indexes, heads) before each of its operations,
// with the pool (no in-place writes) as it was then.
func TestModelPoolsLogsMetadataCrash(t *testing.T) {
	for seed := uint64(1); seed <= seeds(6); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if seed%2 == 0 {
				defer setMaxDelta(2)()
			}
			defer setSegMax([]int{64, 1 << 10, 1 << 20}[seed%3])()
			defer setSegCount([]int{1024, 3, 1024, 1024, 3}[seed%5])()
			defer setIdxMaxExts([]int{1 << 19, 16, 1 << 19, 64}[seed%4])()
			mem, data := objstore.NewCrashable(), objstore.NewCrashable()
			cp := &crashPoints{Store: mem, mem: mem}
			drng := rand.New(rand.NewPCG(seed, 11))
			wrap := func(img objstore.Store) objstore.Store {
				return splitStoreLogs(t, pools.LogsMetadata, img, putOnlyStore{data.Crash(drng)})
			}
			s := splitStoreLogs(t, pools.LogsMetadata, cp, putOnlyStore{data})
			m := runModelWith(t, &model{wrap: wrap}, s, seed, 300, cp, seed%4 == 1)
			if cp.images == 0 && !t.Failed() {
				t.Fatalf("no crash image was taken inside an operation (%d steps)", len(m.vols))
			}
			if m.logged == 0 && !t.Failed() {
				t.Fatal("no logged write was seen")
			}
		})
	}
}
