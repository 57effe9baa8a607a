package s3

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

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

// TestTombstones: where DeleteVersion leaves a tombstone, no read, stat or
// listing shows it, and the name can be created again.
func TestTombstones(t *testing.T) {
	for _, srv := range TestServerNames {
		t.Run(srv, func(t *testing.T) {
			s := OpenTestStore(t, TestServer(t, srv))
			if !s.tombstones() {
				t.Skip("this server deletes conditionally")
			}
			v, err := s.Put(ctx, "x", nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteVersion(ctx, "x", v); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Get(ctx, "x"); !objstore.IsNotExist(err) {
				t.Fatalf("Get of a deleted object: %v", err)
			}
			if err := s.ReadAt(ctx, "x", make([]byte, 100), 50); !objstore.IsNotExist(err) {
				t.Fatalf("ReadAt of a deleted object: %v", err)
			}
			if err := s.Delete(ctx, "x"); !objstore.IsNotExist(err) {
				t.Fatalf("Delete of a deleted object: %v", err)
			}
			n := 0
			s.List(ctx, "", func(objstore.Info) error { n++; return nil })
			if n != 0 {
				t.Fatalf("List shows %d objects after the delete", n)
			}
			if _, err := s.Create(ctx, "x", []byte("again")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestProbe(t *testing.T) {
	want := map[string]Conditional{
		"versitygw": {Create: true, Swap: true, Delete: true},
		"radosgw":   {Create: true, Swap: true, Unquoted: true},
	}
	for _, srv := range TestServerNames {
		t.Run(srv, func(t *testing.T) {
			c := OpenTestStore(t, TestServer(t, srv)).Conditional()
			c.Why = ""
			if c != want[srv] {
				t.Fatalf("probe found %+v, want %+v", c, want[srv])
			}
		})
	}
}

// TestOpenErrors: a missing bucket and wrong keys say what to do.
func TestOpenErrors(t *testing.T) {
	c := TestServer(t, "versitygw")
	c.Attempts = 1
	nb := c
	nb.Bucket = "no-such-bucket"
	if _, err := OpenConfig(ctx, nb); err == nil || !strings.Contains(err.Error(), "does not exist: create it") {
		t.Fatalf("open of a missing bucket: %v", err)
	}
	wk := c
	wk.Credentials = credentials.NewStaticCredentialsProvider("wrong", "keys", "")
	s, err := OpenConfig(ctx, wk)
	if err == nil {
		_, _, err = s.Get(ctx, "x")
	}
	if err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("wrong keys: %v", err)
	}
}
