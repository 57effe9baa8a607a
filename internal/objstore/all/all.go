// Package all wires every backend this build links into one
// objstore.Registry. It is the only place that knows the list.
package all

import (
	"context"
	"net/url"
	"sync"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/pools"
	"github.com/archipelago-go/archip/internal/objstore/s3"
)

// Registry returns a registry with every backend of this build.
//
// mem://NAME stores live as long as the returned registry: opening the
// same name twice gives the same store, so a test can reopen it.
func Registry() *objstore.Registry {
	r := objstore.NewRegistry()
	r.Register("file", "file:///PATH", func(ctx context.Context, u *url.URL, o objstore.OpenOptions) (objstore.Store, error) {
		p, err := objstore.FilePath(u)
		if err != nil {
			return nil, err
		}
		return objstore.OpenFile(p, o.Create)
	})
	var mu sync.Mutex
	mems := map[string]*objstore.Mem{}
	r.Register("mem", "mem://NAME", func(ctx context.Context, u *url.URL, o objstore.OpenOptions) (objstore.Store, error) {
		mu.Lock()
		defer mu.Unlock()
		m := mems[u.Host]
		if m == nil {
			m = objstore.NewMem()
			mems[u.Host] = m
		}
		return unclosable{m}, nil
	})
	r.Register("s3", s3.Usage, func(ctx context.Context, u *url.URL, o objstore.OpenOptions) (objstore.Store, error) {
		return s3.Open(ctx, u)
	})
	registerExtra(r)
	r.Register("pools", pools.Usage, func(ctx context.Context, u *url.URL, o objstore.OpenOptions) (objstore.Store, error) {
		return pools.OpenURL(ctx, u, r.Open, o)
	})
	return r
}

// unclosable keeps a shared mem store open when one user closes it.
type unclosable struct{ *objstore.Mem }

func (unclosable) Close() error { return nil }
