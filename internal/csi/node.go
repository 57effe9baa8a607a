package csi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/extstorage"
	"github.com/archipelago-go/archip/internal/nbdattach"
)

func (d *Driver) NodeGetInfo(ctx context.Context, req *csipb.NodeGetInfoRequest) (*csipb.NodeGetInfoResponse, error) {
	return &csipb.NodeGetInfoResponse{NodeId: d.cfg.NodeID}, nil
}

func (d *Driver) NodeGetCapabilities(ctx context.Context, req *csipb.NodeGetCapabilitiesRequest) (*csipb.NodeGetCapabilitiesResponse, error) {
	return &csipb.NodeGetCapabilitiesResponse{Capabilities: []*csipb.NodeServiceCapability{{
		Type: &csipb.NodeServiceCapability_Rpc{Rpc: &csipb.NodeServiceCapability_RPC{
			Type: csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}}}}}, nil
}

// checkNodeReq checks the fields every stage and publish needs.
func checkNodeReq(id, path, pathName string, c *csipb.VolumeCapability) error {
	switch {
	case id == "":
		return missing("volume_id")
	case path == "":
		return missing(pathName)
	case c == nil:
		return missing("volume_capability")
	}
	if why := checkCaps([]*csipb.VolumeCapability{c}); why != "" {
		return status.Error(codes.InvalidArgument, "csi: "+why)
	}
	return nil
}

// attach attaches volume id (which must exist) as a block device.
func (d *Driver) attach(ctx context.Context, id string, c *csipb.VolumeCapability) (string, error) {
	rec, err := d.m.Lookup(ctx, id)
	if err == nil && rec.Kind != catalog.KindVolume {
		err = catalog.ErrNotFound
	}
	if err != nil {
		return "", grpcError(err)
	}
	dev, err := d.cfg.Attacher.Attach(ctx, id, extstorage.ExportURI(d.cfg.NBD, id), readOnlyMode(c))
	if err != nil {
		return "", status.Errorf(codes.Internal, "csi: attach %s through the node's archip serve at %s: %v", id, d.cfg.NBD, err)
	}
	return dev, nil
}

// lockVolume serializes the node calls on volume id: a CO may retry a
// call while the first still runs, and two stages at once would format
// and mount the volume twice.
func (d *Driver) lockVolume(id string) (unlock func()) {
	d.nodeMu.Lock()
	if d.nodeLocks == nil {
		d.nodeLocks = map[string]*volumeLock{}
	}
	l := d.nodeLocks[id]
	if l == nil {
		l = &volumeLock{}
		d.nodeLocks[id] = l
	}
	l.users++
	d.nodeMu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		d.nodeMu.Lock()
		if l.users--; l.users == 0 {
			delete(d.nodeLocks, id)
		}
		d.nodeMu.Unlock()
	}
}

type volumeLock struct {
	sync.Mutex
	users int // holding or waiting
}

func (d *Driver) NodeStageVolume(ctx context.Context, req *csipb.NodeStageVolumeRequest) (_ *csipb.NodeStageVolumeResponse, err error) {
	c := req.GetVolumeCapability()
	if err := checkNodeReq(req.GetVolumeId(), req.GetStagingTargetPath(), "staging_target_path", c); err != nil {
		return nil, err
	}
	defer d.lockVolume(req.GetVolumeId())()
	staging := req.GetStagingTargetPath()
	if c.GetMount() != nil && nbdattach.Mounted(staging) {
		return &csipb.NodeStageVolumeResponse{}, nil
	}
	dev, err := d.attach(ctx, req.GetVolumeId(), c)
	if err != nil {
		return nil, err
	}
	if c.GetBlock() != nil {
		return &csipb.NodeStageVolumeResponse{}, nil
	}
	defer func() {
		// The CO does not unstage a volume whose stage failed.
		if err != nil {
			d.cfg.Attacher.Detach(context.WithoutCancel(ctx), req.GetVolumeId())
		}
	}()
	fs := c.GetMount().GetFsType()
	if fs == "" {
		fs = "ext4"
	}
	has, err := fsType(ctx, dev)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	ro := readOnlyMode(c)
	if has == "" {
		if ro {
			return nil, status.Errorf(codes.FailedPrecondition, "csi: volume %s has no filesystem to mount read-only", req.GetVolumeId())
		}
		if _, err := nbdattach.Command(ctx, "mkfs."+fs, mkfsArgs(fs, dev)...); err != nil {
			return nil, status.Errorf(codes.Internal, "csi: format %s: %v", req.GetVolumeId(), err)
		}
		has = fs
	}
	if !ro {
		// After an expansion the device is larger than the filesystem.
		if err := growFS(ctx, has, dev); err != nil {
			return nil, status.Errorf(codes.Internal, "csi: grow the filesystem of %s: %v", req.GetVolumeId(), err)
		}
	}
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	opts := c.GetMount().GetMountFlags()
	if ro {
		opts = append(opts, "ro")
	}
	args := []string{"-t", has}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	if _, err := nbdattach.Command(ctx, "mount", append(args, dev, staging)...); err != nil {
		return nil, status.Errorf(codes.Internal, "csi: mount %s: %v", req.GetVolumeId(), err)
	}
	if !ro && has == "xfs" { // xfs grows only mounted
		if _, err := nbdattach.Command(ctx, "xfs_growfs", staging); err != nil {
			unmount(context.WithoutCancel(ctx), staging)
			return nil, status.Errorf(codes.Internal, "csi: grow the filesystem of %s: %v", req.GetVolumeId(), err)
		}
	}
	return &csipb.NodeStageVolumeResponse{}, nil
}

// fsType returns the filesystem on dev, "" if none.
func fsType(ctx context.Context, dev string) (string, error) {
	out, err := exec.CommandContext(ctx, "blkid", "-p", "-s", "TYPE", "-o", "value", dev).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 { // nothing found
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("csi: blkid %s: %v", dev, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func mkfsArgs(fs, dev string) []string {
	if fs == "xfs" {
		return []string{"-q", dev}
	}
	return []string{"-q", "-F", dev}
}

// growFS grows an ext3 or ext4 filesystem on dev, not mounted, to the
// device if the device is larger (an expansion); it checks the
// filesystem first, as resize2fs requires.
func growFS(ctx context.Context, fs, dev string) error {
	if fs != "ext3" && fs != "ext4" {
		return nil
	}
	out, err := nbdattach.Command(ctx, "dumpe2fs", "-h", dev)
	if err != nil {
		return err
	}
	var blocks, bsize int64
	for _, l := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(l, ":")
		switch strings.TrimSpace(k) {
		case "Block count":
			blocks, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		case "Block size":
			bsize, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	size, err := f.Seek(0, io.SeekEnd)
	f.Close()
	if err != nil || blocks == 0 || bsize == 0 || size < (blocks+1)*bsize {
		return err
	}
	// e2fsck -p exits 1 when it fixed something, which is fine here.
	if err := exec.CommandContext(ctx, "e2fsck", "-f", "-p", dev).Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() > 1 {
			return fmt.Errorf("e2fsck -f -p %s: %v", dev, err)
		}
	}
	_, err = nbdattach.Command(ctx, "resize2fs", dev)
	return err
}

func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csipb.NodeUnstageVolumeRequest) (*csipb.NodeUnstageVolumeResponse, error) {
	switch {
	case req.GetVolumeId() == "":
		return nil, missing("volume_id")
	case req.GetStagingTargetPath() == "":
		return nil, missing("staging_target_path")
	}
	defer d.lockVolume(req.GetVolumeId())()
	if err := unmount(ctx, req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	if err := d.cfg.Attacher.Detach(ctx, req.GetVolumeId()); err != nil {
		return nil, status.Errorf(codes.Internal, "csi: detach %s: %v", req.GetVolumeId(), err)
	}
	return &csipb.NodeUnstageVolumeResponse{}, nil
}

func unmount(ctx context.Context, path string) error {
	for nbdattach.Mounted(path) { // bind mounts may stack
		if _, err := nbdattach.Command(ctx, "umount", path); err != nil {
			return status.Errorf(codes.Internal, "csi: %v", err)
		}
	}
	return nil
}

func (d *Driver) NodePublishVolume(ctx context.Context, req *csipb.NodePublishVolumeRequest) (*csipb.NodePublishVolumeResponse, error) {
	c := req.GetVolumeCapability()
	if err := checkNodeReq(req.GetVolumeId(), req.GetTargetPath(), "target_path", c); err != nil {
		return nil, err
	}
	if req.GetStagingTargetPath() == "" {
		return nil, missing("staging_target_path")
	}
	defer d.lockVolume(req.GetVolumeId())()
	target := req.GetTargetPath()
	if nbdattach.Mounted(target) {
		return &csipb.NodePublishVolumeResponse{}, nil
	}
	var src string
	if c.GetBlock() != nil {
		dev, err := d.attach(ctx, req.GetVolumeId(), c) // the device staging attached
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o640)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		f.Close()
		src = dev
		if req.GetReadonly() && !readOnlyMode(c) {
			// A read-only bind mount of a device node still lets the
			// device be written: publish a read-only device.
			v, ok := d.cfg.Attacher.(viewer)
			if !ok {
				return nil, status.Errorf(codes.FailedPrecondition, "csi: this node cannot publish block volume %s read-only", req.GetVolumeId())
			}
			if src, err = v.ReadOnlyView(ctx, req.GetVolumeId()); err != nil {
				return nil, status.Errorf(codes.Internal, "csi: publish %s read-only: %v", req.GetVolumeId(), err)
			}
			defer func() {
				if !nbdattach.Mounted(target) {
					v.DropView(context.WithoutCancel(ctx), req.GetVolumeId(), src)
				}
			}()
		}
	} else {
		if !nbdattach.Mounted(req.GetStagingTargetPath()) {
			return nil, status.Errorf(codes.FailedPrecondition, "csi: volume %s is not staged at %s", req.GetVolumeId(), req.GetStagingTargetPath())
		}
		if err := os.MkdirAll(target, 0o750); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		src = req.GetStagingTargetPath()
	}
	if _, err := nbdattach.Command(ctx, "mount", "--bind", src, target); err != nil {
		return nil, status.Errorf(codes.Internal, "csi: publish %s: %v", req.GetVolumeId(), err)
	}
	if req.GetReadonly() {
		if _, err := nbdattach.Command(ctx, "mount", "-o", "remount,bind,ro", target); err != nil {
			unmount(context.WithoutCancel(ctx), target)
			return nil, status.Errorf(codes.Internal, "csi: publish %s read-only: %v", req.GetVolumeId(), err)
		}
	}
	return &csipb.NodePublishVolumeResponse{}, nil
}

func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csipb.NodeUnpublishVolumeRequest) (*csipb.NodeUnpublishVolumeResponse, error) {
	switch {
	case req.GetVolumeId() == "":
		return nil, missing("volume_id")
	case req.GetTargetPath() == "":
		return nil, missing("target_path")
	}
	defer d.lockVolume(req.GetVolumeId())()
	dev := mountedDevice(req.GetTargetPath())
	if err := unmount(ctx, req.GetTargetPath()); err != nil {
		return nil, err
	}
	if v, ok := d.cfg.Attacher.(viewer); ok && dev != "" {
		if err := v.DropView(ctx, req.GetVolumeId(), dev); err != nil {
			return nil, status.Errorf(codes.Internal, "csi: unpublish %s: %v", req.GetVolumeId(), err)
		}
	}
	if err := os.Remove(req.GetTargetPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csipb.NodeUnpublishVolumeResponse{}, nil
}

// viewer is an Attacher that can publish a read-only device over a
// volume attached writable (nbdattach.FuseLoop).
type viewer interface {
	ReadOnlyView(ctx context.Context, name string) (string, error)
	// DropView detaches dev if ReadOnlyView made it for name.
	DropView(ctx context.Context, name, dev string) error
}

// mountedDevice returns the block device bind mounted at path (a
// published block volume), "" if none.
func mountedDevice(path string) string {
	if !nbdattach.Mounted(path) {
		return ""
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(l, "DEVNAME="); ok {
			return "/dev/" + name
		}
	}
	return ""
}
