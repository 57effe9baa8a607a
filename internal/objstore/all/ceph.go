//go:build ceph

package all

import (
	"context"
	"net/url"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/rados"
)

// registerExtra registers the Ceph RADOS backend.
func registerExtra(r *objstore.Registry) {
	r.Register("rados", "rados://POOL?conf=PATH&id=CLIENT&namespace=NS", func(ctx context.Context, u *url.URL, o objstore.OpenOptions) (objstore.Store, error) {
		return rados.Open(ctx, u)
	})
}
