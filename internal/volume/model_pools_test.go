package volume

import (
	"fmt"
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
