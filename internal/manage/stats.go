package manage

import (
	"context"
	"strings"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/objstore"
)

// StoreStats describe a whole store.
type StoreStats struct {
	Volumes   int `json:"volumes"`
	Snapshots int `json:"snapshots"`
	Images    int `json:"images"`
	// ProvisionedBytes is the sum of all sizes.
	ProvisionedBytes int64 `json:"provisioned_bytes"`
	// LogicalBytes is the allocated bytes summed over every map: what
	// the data would take if nothing were shared.
	LogicalBytes int64 `json:"logical_bytes"`
	// StoredBytes is what data objects take: ContentBytes + PrivateBytes.
	StoredBytes     int64 `json:"stored_bytes"`
	ContentObjects  int64 `json:"content_objects"`
	ContentBytes    int64 `json:"content_bytes"`
	PrivateObjects  int64 `json:"private_objects"`
	PrivateBytes    int64 `json:"private_bytes"`
	MetadataObjects int64 `json:"metadata_objects"`
	MetadataBytes   int64 `json:"metadata_bytes"`
	// DedupRatio is LogicalBytes / StoredBytes: how many bytes of volume
	// data each stored byte serves, through clones, snapshots and dedup.
	DedupRatio float64 `json:"dedup_ratio"`
}

// Stats walks the catalog, every map and every object.
func (m *Manager) Stats(ctx context.Context) (*StoreStats, error) {
	st := &StoreStats{}
	err := m.Catalog.All(ctx, func(r catalog.Record) error {
		switch r.Kind {
		case catalog.KindVolume:
			st.Volumes++
		case catalog.KindSnapshot:
			st.Snapshots++
		case catalog.KindImage:
			st.Images++
		}
		h, entries, err := m.loadMap(ctx, r.ID)
		if err != nil {
			return err
		}
		st.ProvisionedBytes += int64(h.Size)
		for b, e := range entries {
			if e.Kind() != blockmap.Zero {
				st.LogicalBytes += h.BlockLen(int64(b))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = m.Store.List(ctx, "", func(in objstore.Info) error {
		switch {
		case strings.HasPrefix(in.Name, "blk/"):
			st.ContentObjects++
			st.ContentBytes += in.Size
		case strings.HasPrefix(in.Name, "vol/") && strings.Contains(in.Name, "/d/"):
			st.PrivateObjects++
			st.PrivateBytes += in.Size
		default:
			st.MetadataObjects++
			st.MetadataBytes += in.Size
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	st.StoredBytes = st.ContentBytes + st.PrivateBytes
	if st.StoredBytes > 0 {
		st.DedupRatio = float64(st.LogicalBytes) / float64(st.StoredBytes)
	}
	return st, nil
}
