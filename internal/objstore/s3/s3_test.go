package s3

import (
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/storetest"
)

func TestConformance(t *testing.T) {
	for _, srv := range TestServerNames {
		t.Run(srv, func(t *testing.T) {
			c := TestServer(t, srv)
			storetest.Run(t, func(t *testing.T) objstore.Store { return OpenTestStore(t, c) })
		})
	}
}
