//go:build !ceph

package all

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

func TestRadosWithoutCeph(t *testing.T) {
	_, err := Registry().Open(context.Background(), "rados://pool?conf=/etc/ceph/ceph.conf", objstore.OpenOptions{})
	if !errors.Is(err, objstore.ErrUnsupport) || !strings.Contains(err.Error(), "-tags ceph") {
		t.Fatalf("rados:// in a build without Ceph: %v", err)
	}
}

func TestS3BadURL(t *testing.T) {
	_, err := Registry().Open(context.Background(), "s3://AK:SK@bucket/p", objstore.OpenOptions{})
	if !errors.Is(err, objstore.ErrBadURL) || !strings.Contains(err.Error(), "keys do not belong") || strings.Contains(err.Error(), "SK@") {
		t.Fatalf("s3:// with keys in the URL: %v", err)
	}
}
