package csi

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/nbdattach"
	"github.com/archipelago-go/archip/internal/objstore"
)

type nodeFixture struct {
	t   *testing.T
	dir string
	m   *manage.Manager
	d   *Driver
}

func newNodeFixture(t *testing.T) *nodeFixture {
	needTools(t)
	dir := t.TempDir()
	store := objstore.NewMem()
	sock := serveNBD(t, store, dir)
	m := manage.New(store)
	return &nodeFixture{t: t, dir: dir, m: m, d: New(Config{Manager: m, Controller: true, NodeID: "node-1",
		NBD: "unix:" + sock, Attacher: &nbdattach.FuseLoop{RunDir: filepath.Join(dir, "run")}})}
}

func capOf(block bool, mode csipb.VolumeCapability_AccessMode_Mode) *csipb.VolumeCapability {
	c := &csipb.VolumeCapability{AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode}}
	if block {
		c.AccessType = &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}}
	} else {
		c.AccessType = &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{}}
	}
	return c
}

// stagePublish stages and publishes volume id and returns the target
// path; the test's cleanup unpublishes and unstages.
func (f *nodeFixture) stagePublish(id string, c *csipb.VolumeCapability, name string) string {
	f.t.Helper()
	ctx := context.Background()
	staging := filepath.Join(f.dir, name+"-staging")
	os.MkdirAll(staging, 0o750)
	target := filepath.Join(f.dir, name+"-target")
	f.t.Cleanup(func() { // after a failure; nothing to do after unpublishUnstage
		f.d.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
		f.d.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	})
	if _, err := f.d.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: c}); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.d.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: c}); err != nil {
		f.t.Fatal(err)
	}
	return target
}

func (f *nodeFixture) unpublishUnstage(id, name string) {
	f.t.Helper()
	ctx := context.Background()
	if _, err := f.d.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: filepath.Join(f.dir, name+"-target")}); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.d.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: filepath.Join(f.dir, name+"-staging")}); err != nil {
		f.t.Fatal(err)
	}
}

// TestNodeBlockVolume publishes a raw block volume on this kernel (no
// NBD client: a loop device over nbdfuse), writes through the published
// device, and reads the data back from the store, also in a clone made
// from a snapshot and one made from the volume. A second publication of
// the volume (as KubeVirt's migration target does, multi-node) sees the
// data too.
func TestNodeBlockVolume(t *testing.T) {
	f := newNodeFixture(t)
	ctx := context.Background()
	c := capOf(true, csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
	if _, err := f.d.CreateVolume(ctx, &csipb.CreateVolumeRequest{Name: "pvc-1", CapacityRange: &csipb.CapacityRange{RequiredBytes: 32 << 20},
		VolumeCapabilities: []*csipb.VolumeCapability{c}}); err != nil {
		t.Fatal(err)
	}
	target := f.stagePublish("pvc-1", c, "a")
	var st syscall.Stat_t
	if err := syscall.Stat(target, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		t.Fatalf("the published target %s is not a block device (%v)", target, err)
	}
	want := bytes.Repeat([]byte("archip!\n"), 8192) // 64 KiB
	dev, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.WriteAt(want, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := dev.Sync(); err != nil {
		t.Fatal(err)
	}
	dev.Close()

	// The multi-writer volume published a second time.
	target2 := f.stagePublish("pvc-1", c, "b")
	got := make([]byte, len(want))
	if dev2, err := os.Open(target2); err != nil {
		t.Fatal(err)
	} else if _, err := dev2.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the second publication reads other data (%v)", err)
	} else {
		dev2.Close()
	}
	f.unpublishUnstage("pvc-1", "b")
	f.unpublishUnstage("pvc-1", "a")

	if got := manage.ReadT(t, f.m, "pvc-1", 1<<20, len(want)); !bytes.Equal(got, want) {
		t.Fatal("the volume does not hold what was written through the device")
	}
	if _, err := f.d.CreateSnapshot(ctx, &csipb.CreateSnapshotRequest{Name: "snap-1", SourceVolumeId: "pvc-1"}); err != nil {
		t.Fatal(err)
	}
	for _, src := range []*csipb.VolumeContentSource{
		{Type: &csipb.VolumeContentSource_Snapshot{Snapshot: &csipb.VolumeContentSource_SnapshotSource{SnapshotId: "snap-1"}}},
		{Type: &csipb.VolumeContentSource_Volume{Volume: &csipb.VolumeContentSource_VolumeSource{VolumeId: "pvc-1"}}},
	} {
		name := map[bool]string{true: "from-snap", false: "from-vol"}[src.GetSnapshot() != nil]
		resp, err := f.d.CreateVolume(ctx, &csipb.CreateVolumeRequest{Name: name, VolumeContentSource: src, VolumeCapabilities: []*csipb.VolumeCapability{c}})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if resp.Volume.CapacityBytes != 32<<20 {
			t.Fatalf("%s: %d bytes", name, resp.Volume.CapacityBytes)
		}
		if got := manage.ReadT(t, f.m, name, 1<<20, len(want)); !bytes.Equal(got, want) {
			t.Fatalf("%s does not hold its source's data", name)
		}
	}
	// The volume clone went through a snapshot that is gone again.
	ls, err := f.d.ListSnapshots(ctx, &csipb.ListSnapshotsRequest{})
	if err != nil || len(ls.Entries) != 1 || ls.Entries[0].Snapshot.SnapshotId != "snap-1" {
		t.Fatalf("snapshots: %v, %v", ls, err)
	}
}

// TestNodeFilesystemVolume stages a filesystem volume (formatted on
// first use), writes a file, expands the volume while unstaged, and
// finds the file and the larger filesystem at the next stage.
func TestNodeFilesystemVolume(t *testing.T) {
	f := newNodeFixture(t)
	ctx := context.Background()
	c := capOf(false, csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	if _, err := f.d.CreateVolume(ctx, &csipb.CreateVolumeRequest{Name: "pvc-fs", CapacityRange: &csipb.CapacityRange{RequiredBytes: 32 << 20},
		VolumeCapabilities: []*csipb.VolumeCapability{c}}); err != nil {
		t.Fatal(err)
	}
	target := f.stagePublish("pvc-fs", c, "fs")
	if err := os.WriteFile(filepath.Join(target, "hello"), []byte("world"), 0o644); err != nil {
		t.Fatal(err)
	}
	var before syscall.Statfs_t
	syscall.Statfs(target, &before)
	f.unpublishUnstage("pvc-fs", "fs")

	if _, err := f.d.ControllerExpandVolume(ctx, &csipb.ControllerExpandVolumeRequest{VolumeId: "pvc-fs",
		CapacityRange: &csipb.CapacityRange{RequiredBytes: 64 << 20}}); err != nil {
		t.Fatal(err)
	}
	target = f.stagePublish("pvc-fs", c, "fs")
	defer f.unpublishUnstage("pvc-fs", "fs")
	if b, err := os.ReadFile(filepath.Join(target, "hello")); err != nil || string(b) != "world" {
		t.Fatalf("after restaging: %q, %v", b, err)
	}
	var after syscall.Statfs_t
	syscall.Statfs(target, &after)
	if after.Blocks*uint64(after.Bsize) < before.Blocks*uint64(before.Bsize)*3/2 {
		t.Fatalf("the filesystem did not grow with the volume: %d -> %d bytes", before.Blocks*uint64(before.Bsize), after.Blocks*uint64(after.Bsize))
	}
	// A filesystem cannot be written from two nodes.
	if _, err := f.d.ValidateVolumeCapabilities(ctx, &csipb.ValidateVolumeCapabilitiesRequest{VolumeId: "pvc-fs",
		VolumeCapabilities: []*csipb.VolumeCapability{capOf(false, csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}}); err != nil {
		t.Fatal(err)
	} else if resp, _ := f.d.ValidateVolumeCapabilities(ctx, &csipb.ValidateVolumeCapabilitiesRequest{VolumeId: "pvc-fs",
		VolumeCapabilities: []*csipb.VolumeCapability{capOf(false, csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}}); resp.Confirmed != nil {
		t.Fatal("a multi-writer filesystem was confirmed")
	}
}
