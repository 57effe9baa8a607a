// Package csi is Archipelago's Kubernetes CSI driver ('archip csi'):
// the Identity, Controller and Node services of the Container Storage
// Interface on the volumes of one store.
//
// A CSI volume is an archip volume and its id is the volume's name (the
// name the CO gave, or, if that is no valid archip name, "csi-" and a
// hash of it); a CSI snapshot is an archip snapshot, named likewise.
// Creating a volume from a snapshot is a clone, and from another volume
// a snapshot, a clone and the removal of the snapshot: no data is copied
// either way. Listings page through the catalog in name order. A
// StorageClass needs no parameters; those given are ignored.
//
// The node service does not serve data: the node's 'archip serve' does,
// over NBD, and the node service attaches its export as a block device
// (package nbdattach: a loop device over nbdfuse, so no kernel NBD client
// is needed). A raw block volume is published as that device (a
// read-only publication of a volume attached writable as another loop
// device, read-only, over the same file: a read-only bind mount of a
// device node does not stop writes to the device); a
// filesystem volume is formatted on first use (ext4 unless the
// capability names ext3 or xfs), mounted at the staging path and bind
// mounted at each target, and grown to the volume at each stage after an
// (offline) expansion.
//
// Block volumes may be attached on several nodes at once
// (MULTI_NODE_MULTI_WRITER), as KubeVirt's live migration needs: the
// daemons of both nodes serve the volume, and the volume's lease moves
// to whichever writes, flushed and handed over, so the migration never
// sees a write lost or reordered. A filesystem volume is single-node
// (or read-only on many).
package csi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/volume"
)

// DefaultName is the driver's name (a StorageClass's provisioner).
const DefaultName = "archip.csi.archipelago"

// Attacher maps a volume's NBD export to a block device of this node
// (nbdattach.FuseLoop).
type Attacher interface {
	// Attach maps the export at uri, of the volume name, and returns the
	// device; attaching what is attached returns the same device.
	Attach(ctx context.Context, name, uri string, readOnly bool) (string, error)
	// Detach undoes Attach; nothing attached is no error.
	Detach(ctx context.Context, name string) error
}

// Config configures a Driver.
type Config struct {
	Name    string // DefaultName if empty
	Version string
	// Manager works on the store; both services use it.
	Manager *manage.Manager
	// Controller serves the controller service.
	Controller bool
	// NodeID, if not empty, serves the node service as this node; it
	// then needs NBD (the node's daemon's listener, unix:PATH or
	// HOST:PORT) and Attacher.
	NodeID   string
	NBD      string
	Attacher Attacher
	// DefaultSize is the size of a volume created with no capacity
	// asked (1 GiB if 0).
	DefaultSize int64
	// Logf hears about failed calls (nil: silent).
	Logf func(format string, args ...any)
}

// Driver implements the CSI services.
type Driver struct {
	cfg       Config
	m         *manage.Manager
	nodeMu    sync.Mutex
	nodeLocks map[string]*volumeLock // by volume id (lockVolume)
	csipb.UnimplementedIdentityServer
	csipb.UnimplementedControllerServer
	csipb.UnimplementedNodeServer
	csipb.UnimplementedSnapshotMetadataServer
}

// New returns a driver.
func New(c Config) *Driver {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Version == "" {
		c.Version = "0.1.0"
	}
	if c.DefaultSize == 0 {
		c.DefaultSize = 1 << 30
	}
	return &Driver{cfg: c, m: c.Manager}
}

// Register registers the services the driver serves on s.
func (d *Driver) Register(s *grpc.Server) {
	csipb.RegisterIdentityServer(s, d)
	if d.cfg.Controller {
		csipb.RegisterControllerServer(s, d)
		csipb.RegisterSnapshotMetadataServer(s, d)
	}
	if d.cfg.NodeID != "" {
		csipb.RegisterNodeServer(s, d)
	}
}

// Interceptor logs the calls that fail, with their error.
func (d *Driver) Interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	if err != nil && d.cfg.Logf != nil {
		d.cfg.Logf("csi: %s: %v", info.FullMethod, err)
	}
	return resp, err
}

// Identity service.

func (d *Driver) GetPluginInfo(ctx context.Context, req *csipb.GetPluginInfoRequest) (*csipb.GetPluginInfoResponse, error) {
	return &csipb.GetPluginInfoResponse{Name: d.cfg.Name, VendorVersion: d.cfg.Version}, nil
}

func (d *Driver) GetPluginCapabilities(ctx context.Context, req *csipb.GetPluginCapabilitiesRequest) (*csipb.GetPluginCapabilitiesResponse, error) {
	var caps []*csipb.PluginCapability
	if d.cfg.Controller {
		caps = append(caps,
			&csipb.PluginCapability{Type: &csipb.PluginCapability_Service_{Service: &csipb.PluginCapability_Service{
				Type: csipb.PluginCapability_Service_CONTROLLER_SERVICE}}},
			&csipb.PluginCapability{Type: &csipb.PluginCapability_Service_{Service: &csipb.PluginCapability_Service{
				Type: csipb.PluginCapability_Service_SNAPSHOT_METADATA_SERVICE}}},
			// Offline: a published device keeps its size until it is
			// attached again (the next stage grows a filesystem).
			&csipb.PluginCapability{Type: &csipb.PluginCapability_VolumeExpansion_{VolumeExpansion: &csipb.PluginCapability_VolumeExpansion{
				Type: csipb.PluginCapability_VolumeExpansion_OFFLINE}}})
	}
	return &csipb.GetPluginCapabilitiesResponse{Capabilities: caps}, nil
}

func (d *Driver) Probe(ctx context.Context, req *csipb.ProbeRequest) (*csipb.ProbeResponse, error) {
	return &csipb.ProbeResponse{}, nil
}

// storeName returns the archip name for a CO's name of a volume or
// snapshot.
func storeName(name string) string {
	if catalog.ValidName(name) == nil {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "csi-" + hex.EncodeToString(sum[:20])
}

// grpcError maps an error of the store to a gRPC status.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, catalog.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, catalog.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, catalog.ErrBadName):
		code = codes.InvalidArgument
	case errors.Is(err, volume.ErrBadSize), errors.Is(err, manage.ErrShrink):
		code = codes.OutOfRange
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

// fsTypes are the filesystems a mount volume may have; "" is ext4.
var fsTypes = map[string]bool{"": true, "ext4": true, "ext3": true, "xfs": true}

// checkCaps returns why the capabilities cannot be met, or "".
func checkCaps(caps []*csipb.VolumeCapability) string {
	for _, c := range caps {
		mode := c.GetAccessMode().GetMode()
		switch {
		case c.GetBlock() != nil:
			switch mode {
			case csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
				csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, csipb.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
				csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
			default:
				return fmt.Sprintf("access mode %s is not supported", mode)
			}
		case c.GetMount() != nil:
			if fs := c.GetMount().GetFsType(); !fsTypes[fs] {
				return fmt.Sprintf("filesystem %q is not supported (ext4, ext3, xfs)", fs)
			}
			switch mode {
			case csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
				csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
			default:
				return fmt.Sprintf("access mode %s is for raw block volumes only: a filesystem cannot be written from two nodes", mode)
			}
		default:
			return "a capability must be block or mount"
		}
	}
	return ""
}

// readOnlyMode reports whether the capability only reads.
func readOnlyMode(c *csipb.VolumeCapability) bool {
	switch c.GetAccessMode().GetMode() {
	case csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return true
	}
	return false
}

// missing returns InvalidArgument for a required field left empty.
func missing(what string) error {
	return status.Errorf(codes.InvalidArgument, "csi: %s is required", what)
}

// pageToken encodes and decodes listing tokens: the last name listed.
const tokenPrefix = "archip:"

func encodeToken(name string) string { return tokenPrefix + name }

func decodeToken(tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	name, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok || catalog.ValidName(name) != nil {
		return "", status.Errorf(codes.Aborted, "csi: starting token %q is not one this driver gave", tok)
	}
	return name, nil
}
