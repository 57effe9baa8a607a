package csi

import (
	"context"
	"errors"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/volume"
)

// The SnapshotMetadata service (alpha in CSI; Kubernetes' changed block
// tracking): the allocated ranges of a snapshot, from its map's block
// status, and the ranges two snapshots of one volume differ in, from
// their maps (manage.Diff, as 'archip volume diff'), without reading
// data. Ranges are of variable length, whole blocks at the volume's block
// size, merged where adjacent.

// metadataBatch is how many ranges a response message carries when the
// caller does not say.
const metadataBatch = 1024

// snapshotRecord returns the snapshot called id.
func (d *Driver) snapshotRecord(ctx context.Context, field, id string) (*catalog.Record, error) {
	if id == "" {
		return nil, missing(field)
	}
	rec, err := d.m.Lookup(ctx, id)
	if errors.Is(err, catalog.ErrBadName) || err == nil && rec.Kind != catalog.KindSnapshot {
		err = catalog.ErrNotFound
	}
	if err != nil {
		return nil, status.Errorf(grpcCode(err), "csi: %s %q: %v", field, id, err)
	}
	return rec, nil
}

func grpcCode(err error) codes.Code { return status.Code(grpcError(err)) }

// sendRanges streams the ranges that end after start, batch at a time.
func sendRanges(ranges []manage.Range, start int64, max int32, send func([]*csipb.BlockMetadata) error) error {
	if max <= 0 {
		max = metadataBatch
	}
	var batch []*csipb.BlockMetadata
	for _, r := range ranges {
		if r.Offset+r.Length <= start {
			continue
		}
		batch = append(batch, &csipb.BlockMetadata{ByteOffset: r.Offset, SizeBytes: r.Length})
		if len(batch) == int(max) {
			if err := send(batch); err != nil {
				return err
			}
			batch = nil
		}
	}
	if len(batch) > 0 {
		return send(batch)
	}
	return nil
}

func checkStart(start, size int64) error {
	if start < 0 || start >= size {
		return status.Errorf(codes.OutOfRange, "csi: starting_offset %d is outside the snapshot (%d bytes)", start, size)
	}
	return nil
}

func (d *Driver) GetMetadataAllocated(req *csipb.GetMetadataAllocatedRequest, stream csipb.SnapshotMetadata_GetMetadataAllocatedServer) error {
	ctx := stream.Context()
	rec, err := d.snapshotRecord(ctx, "snapshot_id", req.GetSnapshotId())
	if err != nil {
		return err
	}
	v, err := volume.Open(ctx, d.m.Store, rec.ID, volume.OpenOptions{})
	if err != nil {
		return grpcError(err)
	}
	defer v.Close(context.WithoutCancel(ctx))
	size := v.Size()
	if err := checkStart(req.GetStartingOffset(), size); err != nil {
		return err
	}
	exts, err := v.BlockStatus(ctx, 0, size)
	if err != nil {
		return grpcError(err)
	}
	var ranges []manage.Range
	for _, e := range exts {
		if !e.Zero {
			ranges = append(ranges, manage.Range{Offset: e.Offset, Length: e.Length})
		}
	}
	return sendRanges(ranges, req.GetStartingOffset(), req.GetMaxResults(), func(b []*csipb.BlockMetadata) error {
		return stream.Send(&csipb.GetMetadataAllocatedResponse{BlockMetadataType: csipb.BlockMetadataType_VARIABLE_LENGTH,
			VolumeCapacityBytes: size, BlockMetadata: b})
	})
}

func (d *Driver) GetMetadataDelta(req *csipb.GetMetadataDeltaRequest, stream csipb.SnapshotMetadata_GetMetadataDeltaServer) error {
	ctx := stream.Context()
	base, err := d.snapshotRecord(ctx, "base_snapshot_id", req.GetBaseSnapshotId())
	if err != nil {
		return err
	}
	target, err := d.snapshotRecord(ctx, "target_snapshot_id", req.GetTargetSnapshotId())
	if err != nil {
		return err
	}
	if base.Origin != target.Origin {
		return status.Errorf(codes.InvalidArgument, "csi: snapshots %q and %q are of different volumes", base.Name, target.Name)
	}
	size, err := d.sizeOf(ctx, target)
	if err != nil {
		return grpcError(err)
	}
	if err := checkStart(req.GetStartingOffset(), size); err != nil {
		return err
	}
	ranges, err := d.m.Diff(ctx, base.Name, target.Name)
	if err != nil {
		return grpcError(err)
	}
	return sendRanges(ranges, req.GetStartingOffset(), req.GetMaxResults(), func(b []*csipb.BlockMetadata) error {
		return stream.Send(&csipb.GetMetadataDeltaResponse{BlockMetadataType: csipb.BlockMetadataType_VARIABLE_LENGTH,
			VolumeCapacityBytes: size, BlockMetadata: b})
	})
}
