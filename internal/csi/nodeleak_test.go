package csi

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// leftovers lists what the node service left under dir: loop devices
// backed by a file there, mounts there, nbdfuse processes naming it. It
// waits a while for it to go: nbdfuse ends once its lazy unmount is done.
func leftovers(dir string) []string {
	var left []string
	for i := 0; i < 100; i++ {
		left = nil
		loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		for _, f := range loops {
			if b, _ := os.ReadFile(f); strings.HasPrefix(strings.TrimSpace(string(b)), dir) {
				left = append(left, "loop device on "+strings.TrimSpace(string(b)))
			}
		}
		b, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir) {
				left = append(left, "mount "+f[4])
			}
		}
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, f := range procs {
			if b, _ := os.ReadFile(f); strings.Contains(string(b), dir) {
				left = append(left, "process "+strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
		if len(left) == 0 {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return left
}

// mountsAt counts the mounts stacked at path.
func mountsAt(path string) int {
	n := 0
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			n++
		}
	}
	return n
}

// TestNodeStageConcurrent: stages of one filesystem volume at once (a
// CO's retries) format it once and mount it once; unstage, twice,
// leaves no mount, loop device or nbdfuse behind.
func TestNodeStageConcurrent(t *testing.T) {
	f := newNodeFixture(t)
	ctx := context.Background()
	if _, err := f.m.CreateVolume(ctx, "fs", 64<<20, 0); err != nil {
		t.Fatal(err)
	}
	c := capOf(false, csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	staging := filepath.Join(f.dir, "staging")
	req := &csipb.NodeStageVolumeRequest{VolumeId: "fs", StagingTargetPath: staging, VolumeCapability: c}
	unstage := &csipb.NodeUnstageVolumeRequest{VolumeId: "fs", StagingTargetPath: staging}
	t.Cleanup(func() {
		for mountsAt(staging) > 0 {
			f.d.NodeUnstageVolume(ctx, unstage)
		}
		f.d.NodeUnstageVolume(ctx, unstage)
	})
	const n = 3
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = f.d.NodeStageVolume(ctx, req)
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("stage %d: %v", i, err)
		}
	}
	if got := mountsAt(staging); got != 1 {
		t.Errorf("%d mounts at the staging path after %d concurrent stages, want 1", got, n)
	}
	for i := 0; i < 2; i++ {
		if _, err := f.d.NodeUnstageVolume(ctx, unstage); err != nil {
			t.Fatalf("unstage %d: %v", i, err)
		}
	}
	if left := leftovers(f.dir); len(left) > 0 {
		t.Errorf("after unstage: %s", strings.Join(left, "; "))
	}
}

// TestNodeStageFailedLeavesNothing: a stage that fails (a read-only
// stage of a volume with no filesystem) leaves the volume detached: the
// CO does not unstage what it was told is not staged.
func TestNodeStageFailedLeavesNothing(t *testing.T) {
	f := newNodeFixture(t)
	ctx := context.Background()
	if _, err := f.m.CreateVolume(ctx, "blank", 16<<20, 0); err != nil {
		t.Fatal(err)
	}
	staging := filepath.Join(f.dir, "staging")
	t.Cleanup(func() {
		f.d.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: "blank", StagingTargetPath: staging})
	})
	_, err := f.d.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: "blank", StagingTargetPath: staging,
		VolumeCapability: capOf(false, csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY)})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("read-only stage of a volume without a filesystem: %v, want FailedPrecondition", err)
	}
	if left := leftovers(f.dir); len(left) > 0 {
		t.Errorf("after a failed stage: %s", strings.Join(left, "; "))
	}
}

// TestNodePublishBlockReadonly: a raw block volume published with
// readonly set cannot be written through its target (a read-only bind
// mount does not stop writes to a device node), while another
// publication of it, not read-only, can; unpublish and unstage leave
// nothing.
func TestNodePublishBlockReadonly(t *testing.T) {
	f := newNodeFixture(t)
	ctx := context.Background()
	if _, err := f.m.CreateVolume(ctx, "blk", 16<<20, 0); err != nil {
		t.Fatal(err)
	}
	c := capOf(true, csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	staging := filepath.Join(f.dir, "staging")
	if _, err := f.d.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: "blk", StagingTargetPath: staging, VolumeCapability: c}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.d.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: "blk", StagingTargetPath: staging})
	})
	publish := func(target string, ro bool) {
		t.Helper()
		if _, err := f.d.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: "blk", StagingTargetPath: staging,
			TargetPath: target, VolumeCapability: c, Readonly: ro}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			f.d.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: "blk", TargetPath: target})
		})
	}
	write := func(target string) error {
		w, err := os.OpenFile(target, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer w.Close()
		_, err = w.WriteAt(make([]byte, 4096), 0)
		if err == nil {
			err = w.Sync()
		}
		return err
	}
	roTarget, rwTarget := filepath.Join(f.dir, "ro"), filepath.Join(f.dir, "rw")
	publish(roTarget, true)
	publish(rwTarget, false)
	if err := write(roTarget); err == nil {
		t.Error("a write through the read-only publication succeeded")
	}
	if err := write(rwTarget); err != nil {
		t.Errorf("a write through the writable publication: %v", err)
	}
	for _, target := range []string{roTarget, rwTarget} {
		if _, err := f.d.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: "blk", TargetPath: target}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.d.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: "blk", StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(f.dir); len(left) > 0 {
		t.Errorf("after unpublish and unstage: %s", strings.Join(left, "; "))
	}
}
