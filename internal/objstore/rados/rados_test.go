//go:build ceph

package rados

import (
	"context"
	"net/url"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return OpenTestStore(t) })
}

func TestBadURL(t *testing.T) {
	for _, raw := range []string{"rados://", "rados://p?bogus=1"} {
		u, _ := url.Parse(raw)
		if _, err := Open(context.Background(), u); err == nil {
			t.Errorf("Open(%q) succeeded", raw)
		}
	}
}
