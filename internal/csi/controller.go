package csi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/volume"
)

// sizeAlign is what sizes are rounded up to: a loop device and most file
// systems want whole 4 KiB blocks.
const sizeAlign = 4096

func (d *Driver) ControllerGetCapabilities(ctx context.Context, req *csipb.ControllerGetCapabilitiesRequest) (*csipb.ControllerGetCapabilitiesResponse, error) {
	var caps []*csipb.ControllerServiceCapability
	for _, t := range []csipb.ControllerServiceCapability_RPC_Type{
		csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csipb.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csipb.ControllerServiceCapability_RPC_CLONE_VOLUME,
		csipb.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csipb.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csipb.ControllerServiceCapability_RPC_EXPAND_VOLUME,
	} {
		caps = append(caps, &csipb.ControllerServiceCapability{Type: &csipb.ControllerServiceCapability_Rpc{
			Rpc: &csipb.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csipb.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// sizeOf returns the size of the volume, snapshot or image rec names.
func (d *Driver) sizeOf(ctx context.Context, rec *catalog.Record) (int64, error) {
	h, _, err := volume.ReadHead(ctx, d.m.Store, rec.ID)
	if err != nil {
		return 0, err
	}
	return int64(h.Size), nil
}

// wantSize returns the size to make a volume of for r, at least min (the
// size of its source, 0 if none).
func (d *Driver) wantSize(r *csipb.CapacityRange, min int64) (int64, error) {
	req, limit := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || limit < 0 || limit != 0 && limit < req {
		return 0, status.Errorf(codes.OutOfRange, "csi: capacity range %d..%d is empty", req, limit)
	}
	size := req
	if size == 0 && min > 0 {
		size = min // a copy of the source
	} else if size == 0 {
		size = d.cfg.DefaultSize
		if limit != 0 && size > limit {
			size = limit / sizeAlign * sizeAlign
		}
	}
	size = max(size, min)
	if rounded := (size + sizeAlign - 1) / sizeAlign * sizeAlign; limit == 0 || rounded <= limit {
		size = rounded
	} else if size != min { // a source's own size is kept as it is
		return 0, status.Errorf(codes.OutOfRange, "csi: capacity range %d..%d holds no whole number of %d-byte blocks", req, limit, sizeAlign)
	}
	if size == 0 {
		return 0, status.Errorf(codes.OutOfRange, "csi: capacity range %d..%d holds no whole number of %d-byte blocks", req, limit, sizeAlign)
	}
	if limit != 0 && size > limit {
		return 0, status.Errorf(codes.OutOfRange, "csi: the source has %d bytes, over the limit of %d", min, limit)
	}
	return size, nil
}

func fits(size int64, r *csipb.CapacityRange) bool {
	return size >= r.GetRequiredBytes() && (r.GetLimitBytes() == 0 || size <= r.GetLimitBytes())
}

func (d *Driver) CreateVolume(ctx context.Context, req *csipb.CreateVolumeRequest) (*csipb.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, missing("name")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, missing("volume_capabilities")
	}
	if why := checkCaps(req.GetVolumeCapabilities()); why != "" {
		return nil, status.Error(codes.InvalidArgument, "csi: "+why)
	}
	name := storeName(req.GetName())
	resp, err := d.existingVolume(ctx, name, req)
	if resp != nil || err != nil {
		return resp, err
	}
	src := req.GetVolumeContentSource()
	var (
		from    *catalog.Record // the snapshot to clone
		minSize int64
	)
	switch {
	case src.GetSnapshot() != nil:
		from, err = d.m.Lookup(ctx, src.GetSnapshot().GetSnapshotId())
		if err == nil && !from.ReadOnly() {
			err = catalog.ErrNotFound
		}
	case src.GetVolume() != nil:
		from, err = d.m.Lookup(ctx, src.GetVolume().GetVolumeId())
		if err == nil && from.ReadOnly() {
			err = catalog.ErrNotFound
		}
	}
	if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrBadName) {
		return nil, status.Errorf(codes.NotFound, "csi: the content source does not exist: %v", err)
	}
	if err != nil {
		return nil, grpcError(err)
	}
	if from != nil {
		if minSize, err = d.sizeOf(ctx, from); err != nil {
			return nil, grpcError(err)
		}
	}
	size, err := d.wantSize(req.GetCapacityRange(), minSize)
	if err != nil {
		return nil, err
	}
	switch {
	case from == nil:
		_, err = d.m.CreateVolume(ctx, name, uint64(size), 0)
	case from.ReadOnly():
		_, err = d.m.Clone(ctx, from.Name, name, uint64(size))
	default:
		err = d.cloneVolume(ctx, from.Name, name, uint64(size))
	}
	if errors.Is(err, catalog.ErrExists) { // a concurrent create of the same name
		if resp, err := d.existingVolume(ctx, name, req); resp != nil || err != nil {
			return resp, err
		}
	}
	if err != nil {
		return nil, grpcError(err)
	}
	return &csipb.CreateVolumeResponse{Volume: &csipb.Volume{VolumeId: name, CapacityBytes: size, ContentSource: src}}, nil
}

// cloneVolume clones volume src as name through a snapshot it removes
// again: the clone keeps the blocks it shares with it.
func (d *Driver) cloneVolume(ctx context.Context, src, name string, size uint64) error {
	var b [8]byte
	rand.Read(b[:])
	tmp := "csi-clone-" + hex.EncodeToString(b[:])
	if _, err := d.m.Snapshot(ctx, src, tmp); err != nil {
		return err
	}
	_, err := d.m.Clone(ctx, tmp, name, size)
	if rerr := d.m.Remove(context.WithoutCancel(ctx), tmp); err == nil && rerr != nil && d.cfg.Logf != nil {
		d.cfg.Logf("csi: clone %s of %s: the snapshot %s it was made through is left: %v", name, src, tmp, rerr)
	}
	return err
}

// existingVolume returns the volume name if it exists and suits req,
// AlreadyExists if it exists and does not, and nil, nil if there is
// none.
func (d *Driver) existingVolume(ctx context.Context, name string, req *csipb.CreateVolumeRequest) (*csipb.CreateVolumeResponse, error) {
	rec, err := d.m.Lookup(ctx, name)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, grpcError(err)
	}
	if rec.Kind != catalog.KindVolume {
		return nil, status.Errorf(codes.AlreadyExists, "csi: %q is the name of a %s", name, rec.Kind)
	}
	size, err := d.sizeOf(ctx, rec)
	if err != nil {
		return nil, grpcError(err)
	}
	if !fits(size, req.GetCapacityRange()) {
		return nil, status.Errorf(codes.AlreadyExists, "csi: volume %q exists with %d bytes, outside the capacity asked", name, size)
	}
	if s := req.GetVolumeContentSource().GetSnapshot(); s != nil {
		snap, err := d.m.Lookup(ctx, s.GetSnapshotId())
		if err != nil || snap.ID != rec.Parent {
			return nil, status.Errorf(codes.AlreadyExists, "csi: volume %q exists, not cloned from snapshot %q", name, s.GetSnapshotId())
		}
	}
	if v := req.GetVolumeContentSource().GetVolume(); v != nil {
		ok, err := d.maybeClonedFrom(ctx, rec, v.GetVolumeId())
		if err != nil {
			return nil, grpcError(err)
		}
		if !ok {
			return nil, status.Errorf(codes.AlreadyExists, "csi: volume %q exists, not cloned from volume %q", name, v.GetVolumeId())
		}
	}
	return &csipb.CreateVolumeResponse{Volume: &csipb.Volume{VolumeId: name, CapacityBytes: size, ContentSource: req.GetVolumeContentSource()}}, nil
}

// maybeClonedFrom reports whether rec may be a clone of volume src: a
// clone of a volume has as parent the snapshot cloneVolume took of it,
// which is removed once the clone is made, so a parent still listed must
// be a snapshot of src, and a volume with no parent is no clone.
func (d *Driver) maybeClonedFrom(ctx context.Context, rec *catalog.Record, src string) (bool, error) {
	if rec.Parent.IsZero() {
		return false, nil
	}
	parent, err := d.m.Catalog.ByID(ctx, rec.Parent)
	if errors.Is(err, catalog.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	v, err := d.m.Lookup(ctx, src)
	if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrBadName) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return parent.Kind == catalog.KindSnapshot && parent.Origin == v.ID, nil
}

func (d *Driver) DeleteVolume(ctx context.Context, req *csipb.DeleteVolumeRequest) (*csipb.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, missing("volume_id")
	}
	if err := d.removeKind(ctx, req.GetVolumeId(), catalog.KindVolume); err != nil {
		return nil, err
	}
	return &csipb.DeleteVolumeResponse{}, nil
}

// removeKind removes name if it is of kind; a name that is missing, or
// names something else, is gone as far as the CO is concerned.
func (d *Driver) removeKind(ctx context.Context, name string, kind catalog.Kind) error {
	rec, err := d.m.Lookup(ctx, name)
	if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrBadName) || err == nil && rec.Kind != kind {
		return nil
	}
	if err != nil {
		return grpcError(err)
	}
	if err := d.m.Remove(ctx, name); err != nil && !errors.Is(err, catalog.ErrNotFound) {
		return grpcError(err)
	}
	return nil
}

func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csipb.ValidateVolumeCapabilitiesRequest) (*csipb.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, missing("volume_id")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, missing("volume_capabilities")
	}
	rec, err := d.m.Lookup(ctx, req.GetVolumeId())
	if err == nil && rec.Kind != catalog.KindVolume {
		err = catalog.ErrNotFound
	}
	if err != nil {
		return nil, grpcError(err)
	}
	if why := checkCaps(req.GetVolumeCapabilities()); why != "" {
		return &csipb.ValidateVolumeCapabilitiesResponse{Message: why}, nil
	}
	return &csipb.ValidateVolumeCapabilitiesResponse{Confirmed: &csipb.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext: req.GetVolumeContext(), VolumeCapabilities: req.GetVolumeCapabilities(), Parameters: req.GetParameters()}}, nil
}

// errStop ends a walk of the catalog early.
var errStop = errors.New("csi: page full")

// walk calls fn with the records of kind in name order from token on,
// until fn returns false, and returns the token of the next page ("" at
// the end). max is the page size (0: everything).
func (d *Driver) walk(ctx context.Context, token string, max int32, kind catalog.Kind, fn func(catalog.Record) (bool, error)) (string, error) {
	if max < 0 {
		return "", status.Errorf(codes.InvalidArgument, "csi: max_entries %d is negative", max)
	}
	after, err := decodeToken(token)
	if err != nil {
		return "", err
	}
	var n int32
	var next string
	_, err = d.m.Catalog.Walk(ctx, catalog.ListOptions{After: after}, 256, func(recs []catalog.Record) error {
		for _, r := range recs {
			if r.Kind != kind {
				continue
			}
			if max > 0 && n == max {
				next = encodeToken(after)
				return errStop
			}
			ok, err := fn(r)
			if err != nil {
				return err
			}
			if ok {
				n++
				after = r.Name
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return "", grpcError(err)
	}
	return next, nil
}

func (d *Driver) ListVolumes(ctx context.Context, req *csipb.ListVolumesRequest) (*csipb.ListVolumesResponse, error) {
	resp := &csipb.ListVolumesResponse{}
	next, err := d.walk(ctx, req.GetStartingToken(), req.GetMaxEntries(), catalog.KindVolume, func(r catalog.Record) (bool, error) {
		size, err := d.sizeOf(ctx, &r)
		if err != nil {
			return false, nil // removed meanwhile
		}
		resp.Entries = append(resp.Entries, &csipb.ListVolumesResponse_Entry{Volume: &csipb.Volume{VolumeId: r.Name, CapacityBytes: size}})
		return true, nil
	})
	resp.NextToken = next
	return resp, err
}

func (d *Driver) ControllerExpandVolume(ctx context.Context, req *csipb.ControllerExpandVolumeRequest) (*csipb.ControllerExpandVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, missing("volume_id")
	}
	if req.GetCapacityRange() == nil {
		return nil, missing("capacity_range")
	}
	rec, err := d.m.Lookup(ctx, req.GetVolumeId())
	if err == nil && rec.Kind != catalog.KindVolume {
		err = catalog.ErrNotFound
	}
	if err != nil {
		return nil, grpcError(err)
	}
	cur, err := d.sizeOf(ctx, rec)
	if err != nil {
		return nil, grpcError(err)
	}
	size, err := d.wantSize(req.GetCapacityRange(), cur)
	if err != nil {
		return nil, err
	}
	if size > cur {
		if err := d.m.Resize(ctx, rec.Name, uint64(size), false); err != nil {
			return nil, grpcError(err)
		}
	}
	// A filesystem is grown when the volume is next staged (expansion
	// is offline), so the node has nothing to do now.
	return &csipb.ControllerExpandVolumeResponse{CapacityBytes: size, NodeExpansionRequired: false}, nil
}

// Snapshots.

func (d *Driver) snapshotOf(ctx context.Context, r *catalog.Record, source string) (*csipb.Snapshot, error) {
	size, err := d.sizeOf(ctx, r)
	if err != nil {
		return nil, err
	}
	if source == "" {
		source = r.Origin.String() // the volume is gone: its id is all there is
		if o, err := d.m.Catalog.ByID(ctx, r.Origin); err == nil {
			source = o.Name
		}
	}
	return &csipb.Snapshot{SnapshotId: r.Name, SourceVolumeId: source, SizeBytes: size,
		CreationTime: timestamppb.New(r.Created), ReadyToUse: true}, nil
}

func (d *Driver) CreateSnapshot(ctx context.Context, req *csipb.CreateSnapshotRequest) (*csipb.CreateSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, missing("name")
	}
	if req.GetSourceVolumeId() == "" {
		return nil, missing("source_volume_id")
	}
	name := storeName(req.GetName())
	src, err := d.m.Lookup(ctx, req.GetSourceVolumeId())
	if err == nil && src.Kind != catalog.KindVolume {
		err = catalog.ErrNotFound
	}
	if err != nil {
		return nil, grpcError(err)
	}
	existing := func() (*csipb.CreateSnapshotResponse, error) {
		rec, err := d.m.Lookup(ctx, name)
		if err != nil {
			return nil, err
		}
		if rec.Kind != catalog.KindSnapshot || rec.Origin != src.ID {
			return nil, status.Errorf(codes.AlreadyExists, "csi: %q exists and is not a snapshot of %q", name, src.Name)
		}
		s, err := d.snapshotOf(ctx, rec, src.Name)
		if err != nil {
			return nil, grpcError(err)
		}
		return &csipb.CreateSnapshotResponse{Snapshot: s}, nil
	}
	if resp, err := existing(); !errors.Is(err, catalog.ErrNotFound) {
		return resp, grpcError(err)
	}
	rec, err := d.m.Snapshot(ctx, src.Name, name)
	if errors.Is(err, catalog.ErrExists) {
		resp, err := existing()
		return resp, grpcError(err)
	}
	if err != nil {
		return nil, grpcError(err)
	}
	s, err := d.snapshotOf(ctx, rec, src.Name)
	if err != nil {
		return nil, grpcError(err)
	}
	return &csipb.CreateSnapshotResponse{Snapshot: s}, nil
}

func (d *Driver) DeleteSnapshot(ctx context.Context, req *csipb.DeleteSnapshotRequest) (*csipb.DeleteSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, missing("snapshot_id")
	}
	if err := d.removeKind(ctx, req.GetSnapshotId(), catalog.KindSnapshot); err != nil {
		return nil, err
	}
	return &csipb.DeleteSnapshotResponse{}, nil
}

func (d *Driver) ListSnapshots(ctx context.Context, req *csipb.ListSnapshotsRequest) (*csipb.ListSnapshotsResponse, error) {
	resp := &csipb.ListSnapshotsResponse{}
	var origin blockmap.ID
	if v := req.GetSourceVolumeId(); v != "" {
		src, err := d.m.Lookup(ctx, v)
		if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrBadName) || err == nil && src.Kind != catalog.KindVolume {
			return resp, nil
		}
		if err != nil {
			return nil, grpcError(err)
		}
		origin = src.ID
	}
	if id := req.GetSnapshotId(); id != "" {
		rec, err := d.m.Lookup(ctx, id)
		if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrBadName) || err == nil && (rec.Kind != catalog.KindSnapshot || !origin.IsZero() && rec.Origin != origin) {
			return resp, nil
		}
		if err != nil {
			return nil, grpcError(err)
		}
		s, err := d.snapshotOf(ctx, rec, "")
		if err != nil {
			return nil, grpcError(err)
		}
		resp.Entries = []*csipb.ListSnapshotsResponse_Entry{{Snapshot: s}}
		return resp, nil
	}
	next, err := d.walk(ctx, req.GetStartingToken(), req.GetMaxEntries(), catalog.KindSnapshot, func(r catalog.Record) (bool, error) {
		if !origin.IsZero() && r.Origin != origin {
			return false, nil
		}
		s, err := d.snapshotOf(ctx, &r, "")
		if err != nil {
			return false, nil // removed meanwhile
		}
		resp.Entries = append(resp.Entries, &csipb.ListSnapshotsResponse_Entry{Snapshot: s})
		return true, nil
	})
	resp.NextToken = next
	return resp, err
}
