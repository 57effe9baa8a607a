package csi

import (
	"context"
	"fmt"
	"sort"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

func blockCaps() []*csipb.VolumeCapability {
	return []*csipb.VolumeCapability{capOf(true, csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}
}

func fromVolume(id string) *csipb.VolumeContentSource {
	return &csipb.VolumeContentSource{Type: &csipb.VolumeContentSource_Volume{Volume: &csipb.VolumeContentSource_VolumeSource{VolumeId: id}}}
}

func fromSnapshot(id string) *csipb.VolumeContentSource {
	return &csipb.VolumeContentSource{Type: &csipb.VolumeContentSource_Snapshot{Snapshot: &csipb.VolumeContentSource_SnapshotSource{SnapshotId: id}}}
}

// TestCreateVolumeAgainOtherSource: CreateVolume of an existing name
// with a content source the volume was not made from is AlreadyExists
// (the CSI spec's "compatible with ... volume_content_source"), not the
// existing volume passed off as a copy of the source.
func TestCreateVolumeAgainOtherSource(t *testing.T) {
	ctx := context.Background()
	m := manage.New(objstore.NewMem())
	d := New(Config{Manager: m, Controller: true})
	for _, v := range []string{"src", "other"} {
		if _, err := d.CreateVolume(ctx, &csipb.CreateVolumeRequest{Name: v, VolumeCapabilities: blockCaps(),
			CapacityRange: &csipb.CapacityRange{RequiredBytes: 1 << 20}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.CreateSnapshot(ctx, &csipb.CreateSnapshotRequest{Name: "snap-other", SourceVolumeId: "other"}); err != nil {
		t.Fatal(err)
	}
	create := func(name string, src *csipb.VolumeContentSource) error {
		_, err := d.CreateVolume(ctx, &csipb.CreateVolumeRequest{Name: name, VolumeCapabilities: blockCaps(), VolumeContentSource: src})
		return err
	}
	if err := create("empty", nil); err != nil {
		t.Fatal(err)
	}
	if err := create("from-snap", fromSnapshot("snap-other")); err != nil {
		t.Fatal(err)
	}
	if err := create("from-vol", fromVolume("src")); err != nil {
		t.Fatal(err)
	}
	if err := create("from-vol", fromVolume("src")); err != nil {
		t.Errorf("CreateVolume from the same volume again: %v", err)
	}
	for _, c := range []struct {
		name string
		src  *csipb.VolumeContentSource
	}{
		{"empty", fromVolume("src")},
		{"from-snap", fromVolume("src")},
		{"empty", fromSnapshot("snap-other")},
		{"from-vol", fromSnapshot("snap-other")},
	} {
		if err := create(c.name, c.src); status.Code(err) != codes.AlreadyExists {
			t.Errorf("CreateVolume %s again from %v: %v, want AlreadyExists", c.name, c.src, err)
		}
	}
}

// TestListPagination: ListVolumes and ListSnapshots page through
// volumes and snapshots mixed in name order, every one exactly once
// whatever max_entries, with an empty token after the last page.
func TestListPagination(t *testing.T) {
	ctx := context.Background()
	m := manage.New(objstore.NewMem())
	d := New(Config{Manager: m, Controller: true})
	var vols, snaps []string
	for i := 0; i < 7; i++ {
		v := fmt.Sprintf("v%d", i)
		if _, err := m.CreateVolume(ctx, v, 1<<20, 0); err != nil {
			t.Fatal(err)
		}
		vols = append(vols, v)
		if i%2 == 0 {
			s := fmt.Sprintf("v%d-s", i)
			if _, err := m.Snapshot(ctx, v, s); err != nil {
				t.Fatal(err)
			}
			snaps = append(snaps, s)
		}
	}
	sort.Strings(vols)
	sort.Strings(snaps)
	for max := int32(0); max <= 8; max++ {
		var got []string
		tok := ""
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatalf("max %d: no end of the volume pages", max)
			}
			r, err := d.ListVolumes(ctx, &csipb.ListVolumesRequest{MaxEntries: max, StartingToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			if max > 0 && len(r.Entries) > int(max) {
				t.Fatalf("max %d: a page of %d", max, len(r.Entries))
			}
			for _, e := range r.Entries {
				got = append(got, e.Volume.VolumeId)
			}
			if tok = r.NextToken; tok == "" {
				break
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(vols) {
			t.Errorf("max %d: volumes %v, want %v", max, got, vols)
		}
		got = nil
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatalf("max %d: no end of the snapshot pages", max)
			}
			r, err := d.ListSnapshots(ctx, &csipb.ListSnapshotsRequest{MaxEntries: max, StartingToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range r.Entries {
				got = append(got, e.Snapshot.SnapshotId)
			}
			if tok = r.NextToken; tok == "" {
				break
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(snaps) {
			t.Errorf("max %d: snapshots %v, want %v", max, got, snaps)
		}
	}
	if _, err := d.ListVolumes(ctx, &csipb.ListVolumesRequest{StartingToken: "garbage"}); status.Code(err) != codes.Aborted {
		t.Errorf("a token the driver never gave: %v, want Aborted", err)
	}
}

// TestDeleteVolumeKeepsSnapshots: a volume with snapshots and clones is
// deleted, and its snapshots still list, clone and delete.
func TestDeleteVolumeKeepsSnapshots(t *testing.T) {
	ctx := context.Background()
	m := manage.New(objstore.NewMem())
	d := New(Config{Manager: m, Controller: true})
	if _, err := d.CreateVolume(ctx, &csipb.CreateVolumeRequest{Name: "v", VolumeCapabilities: blockCaps(),
		CapacityRange: &csipb.CapacityRange{RequiredBytes: 8 << 20}}); err != nil {
		t.Fatal(err)
	}
	manage.WriteT(t, m, "v", 5<<20, []byte("kept"))
	if _, err := d.CreateSnapshot(ctx, &csipb.CreateSnapshotRequest{Name: "s", SourceVolumeId: "v"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateVolume(ctx, &csipb.CreateVolumeRequest{Name: "c", VolumeCapabilities: blockCaps(), VolumeContentSource: fromVolume("v")}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DeleteVolume(ctx, &csipb.DeleteVolumeRequest{VolumeId: "v"}); err != nil {
		t.Fatal(err)
	}
	r, err := d.ListSnapshots(ctx, &csipb.ListSnapshotsRequest{SnapshotId: "s"})
	if err != nil || len(r.Entries) != 1 {
		t.Fatalf("ListSnapshots s after its volume was deleted: %v, %v", r, err)
	}
	if _, err := d.CreateVolume(ctx, &csipb.CreateVolumeRequest{Name: "c2", VolumeCapabilities: blockCaps(), VolumeContentSource: fromSnapshot("s")}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"c", "c2"} {
		if got := manage.ReadT(t, m, v, 5<<20, 4); string(got) != "kept" {
			t.Errorf("%s reads %q", v, got)
		}
	}
	if _, err := d.DeleteSnapshot(ctx, &csipb.DeleteSnapshotRequest{SnapshotId: "s"}); err != nil {
		t.Fatal(err)
	}
	if got := manage.ReadT(t, m, "c2", 5<<20, 4); string(got) != "kept" {
		t.Errorf("c2 reads %q after its snapshot was deleted", got)
	}
}

// TestCapacityWholeBlocks: a volume is made of whole 4 KiB blocks (a
// loop device drops a partial sector, a filesystem a partial block): a
// capacity range with no such size in it is OutOfRange, not a volume of
// 1000 bytes.
func TestCapacityWholeBlocks(t *testing.T) {
	ctx := context.Background()
	m := manage.New(objstore.NewMem())
	d := New(Config{Manager: m, Controller: true})
	for i, c := range []struct {
		req, limit, want int64 // want 0: OutOfRange
	}{
		{1, 1, 0},
		{1000, 2000, 0},
		{0, 100, 0},
		{5000, 0, 8192},
		{4096, 4096, 4096},
		{1, 10000, 4096},
		{0, 6 << 20, 6 << 20}, // the default (1 GiB) is over the limit
	} {
		name := fmt.Sprintf("v%d", i)
		r, err := d.CreateVolume(ctx, &csipb.CreateVolumeRequest{Name: name, VolumeCapabilities: blockCaps(),
			CapacityRange: &csipb.CapacityRange{RequiredBytes: c.req, LimitBytes: c.limit}})
		switch {
		case c.want == 0 && status.Code(err) != codes.OutOfRange:
			t.Errorf("range %d..%d: %v, %v; want OutOfRange", c.req, c.limit, r, err)
		case c.want != 0 && (err != nil || r.Volume.CapacityBytes != c.want):
			t.Errorf("range %d..%d: %v, %v; want %d bytes", c.req, c.limit, r, err, c.want)
		}
	}
}

// TestCreateSnapshotNameTaken: CreateSnapshot again of the same source
// returns the snapshot; of another source, or with a volume's name, is
// AlreadyExists.
func TestCreateSnapshotNameTaken(t *testing.T) {
	ctx := context.Background()
	m := manage.New(objstore.NewMem())
	d := New(Config{Manager: m, Controller: true})
	for _, v := range []string{"a", "b"} {
		if _, err := m.CreateVolume(ctx, v, 1<<20, 0); err != nil {
			t.Fatal(err)
		}
	}
	first, err := d.CreateSnapshot(ctx, &csipb.CreateSnapshotRequest{Name: "s", SourceVolumeId: "a"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := d.CreateSnapshot(ctx, &csipb.CreateSnapshotRequest{Name: "s", SourceVolumeId: "a"})
	if err != nil || again.Snapshot.SnapshotId != first.Snapshot.SnapshotId || !again.Snapshot.CreationTime.AsTime().Equal(first.Snapshot.CreationTime.AsTime()) {
		t.Errorf("CreateSnapshot again: %v, %v; first %v", again, err, first)
	}
	for _, c := range []struct{ name, src string }{{"s", "b"}, {"b", "a"}} {
		if _, err := d.CreateSnapshot(ctx, &csipb.CreateSnapshotRequest{Name: c.name, SourceVolumeId: c.src}); status.Code(err) != codes.AlreadyExists {
			t.Errorf("CreateSnapshot %s of %s: %v, want AlreadyExists", c.name, c.src, err)
		}
	}
}
