//go:build !ceph

package all

import (
	"context"
	"fmt"
	"net/url"

	"github.com/archipelago-go/archip/internal/objstore"
)

// registerExtra makes rados:// URLs explain how to get a build that has
// the backend.
func registerExtra(r *objstore.Registry) {
	r.Register("rados", "rados://POOL (needs a build with -tags ceph,pacific)", func(ctx context.Context, u *url.URL, o objstore.OpenOptions) (objstore.Store, error) {
		return nil, fmt.Errorf("%w: this archip was built without Ceph support; install librados-dev, libradospp-dev and g++ and build with: go build -tags ceph,pacific ./cmd/archip", objstore.ErrUnsupport)
	})
}
