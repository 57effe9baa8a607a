package csi

import (
	"context"
	"errors"
	"io"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestSnapshotMetadata: the allocated ranges of a snapshot and the
// changed ranges between two, streamed in batches of max_results from
// starting_offset on, as whole 4 MiB blocks.
func TestSnapshotMetadata(t *testing.T) {
	ctx := context.Background()
	m := manage.New(objstore.NewMem())
	d := New(Config{Manager: m, Controller: true})
	conn, err := grpc.NewClient(startDriver(t, d, t.TempDir()), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := csipb.NewSnapshotMetadataClient(conn)

	for _, name := range []string{"vol", "other"} {
		if _, err := m.CreateVolume(ctx, name, 16<<20, 0); err != nil {
			t.Fatal(err)
		}
	}
	manage.WriteT(t, m, "vol", 1<<20, []byte("a"))
	manage.WriteT(t, m, "vol", 9<<20, []byte("b"))
	m.Snapshot(ctx, "vol", "s1")
	manage.WriteT(t, m, "vol", 13<<20, []byte("c"))
	m.Snapshot(ctx, "vol", "s2")
	m.Snapshot(ctx, "other", "o1")

	type rng struct{ off, n int64 }
	collect := func(recv func() ([]*csipb.BlockMetadata, error)) ([][]rng, error) {
		var msgs [][]rng
		for {
			b, err := recv()
			if errors.Is(err, io.EOF) {
				return msgs, nil
			}
			if err != nil {
				return msgs, err
			}
			var msg []rng
			for _, x := range b {
				msg = append(msg, rng{x.ByteOffset, x.SizeBytes})
			}
			msgs = append(msgs, msg)
		}
	}
	allocated := func(req *csipb.GetMetadataAllocatedRequest) ([][]rng, error) {
		s, err := c.GetMetadataAllocated(ctx, req)
		if err != nil {
			return nil, err
		}
		return collect(func() ([]*csipb.BlockMetadata, error) {
			r, err := s.Recv()
			if err == nil && (r.VolumeCapacityBytes != 16<<20 || r.BlockMetadataType != csipb.BlockMetadataType_VARIABLE_LENGTH) {
				t.Errorf("response %v", r)
			}
			return r.GetBlockMetadata(), err
		})
	}
	delta := func(req *csipb.GetMetadataDeltaRequest) ([][]rng, error) {
		s, err := c.GetMetadataDelta(ctx, req)
		if err != nil {
			return nil, err
		}
		return collect(func() ([]*csipb.BlockMetadata, error) {
			r, err := s.Recv()
			return r.GetBlockMetadata(), err
		})
	}
	same := func(what string, got, want [][]rng, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
		for i := range got {
			if len(got[i]) != len(want[i]) {
				t.Fatalf("%s: %v, want %v", what, got, want)
			}
			for j := range got[i] {
				if got[i][j] != want[i][j] {
					t.Fatalf("%s: %v, want %v", what, got, want)
				}
			}
		}
	}
	const mib = 1 << 20
	got, err := allocated(&csipb.GetMetadataAllocatedRequest{SnapshotId: "s1"})
	same("allocated s1", got, [][]rng{{{0, 4 * mib}, {8 * mib, 4 * mib}}}, err)
	got, err = allocated(&csipb.GetMetadataAllocatedRequest{SnapshotId: "s2", MaxResults: 1}) // adjacent blocks merge
	same("allocated s2, one a message", got, [][]rng{{{0, 4 * mib}}, {{8 * mib, 8 * mib}}}, err)
	got, err = allocated(&csipb.GetMetadataAllocatedRequest{SnapshotId: "s2", StartingOffset: 10 * mib})
	same("allocated s2 from 10 MiB", got, [][]rng{{{8 * mib, 8 * mib}}}, err)
	got, err = delta(&csipb.GetMetadataDeltaRequest{BaseSnapshotId: "s1", TargetSnapshotId: "s2"})
	same("delta s1 s2", got, [][]rng{{{12 * mib, 4 * mib}}}, err)

	for _, c := range []struct {
		err  error
		code codes.Code
	}{
		{func() error { _, err := allocated(&csipb.GetMetadataAllocatedRequest{}); return err }(), codes.InvalidArgument},
		{func() error {
			_, err := allocated(&csipb.GetMetadataAllocatedRequest{SnapshotId: "nosuch"})
			return err
		}(), codes.NotFound},
		{func() error { _, err := allocated(&csipb.GetMetadataAllocatedRequest{SnapshotId: "vol"}); return err }(), codes.NotFound},
		{func() error {
			_, err := allocated(&csipb.GetMetadataAllocatedRequest{SnapshotId: "s1", StartingOffset: 16 * mib})
			return err
		}(), codes.OutOfRange},
		{func() error {
			_, err := delta(&csipb.GetMetadataDeltaRequest{BaseSnapshotId: "s1", TargetSnapshotId: "o1"})
			return err
		}(), codes.InvalidArgument},
	} {
		if status.Code(c.err) != c.code {
			t.Errorf("error %v, want code %s", c.err, c.code)
		}
	}
}
