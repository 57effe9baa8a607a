package blockmap

import (
	"errors"
	"strings"
	"testing"
)

func TestBucketNames(t *testing.T) {
	for _, key := range []string{"a", "dir/file.txt", "ünï cödé/..", strings.Repeat("k", 300)} {
		name, err := ObjectName("bkt", key)
		if err != nil {
			t.Fatal(err)
		}
		n := ParseName(name)
		if n.Kind != ObjectRecord || n.Bucket != "bkt" || n.Key != key {
			t.Errorf("ParseName(%q) = %+v, want object %q", name, n, key)
		}
		for _, c := range strings.Split(name, "/") {
			if len(c) > 255 || c == "." || c == ".." {
				t.Errorf("component %q of %q", c, name)
			}
		}
	}
	if _, err := ObjectName("bkt", strings.Repeat("k", 400)); !errors.Is(err, ErrKeyTooLong) {
		t.Errorf("a 400-byte key: %v, want ErrKeyTooLong", err)
	}
	if n := ParseName(BucketName("bkt")); n.Kind != BucketRecord || n.Bucket != "bkt" {
		t.Errorf("bucket: %+v", n)
	}
	if n := ParseName(UploadName("bkt", "u1")); n.Kind != UploadRecord || n.Upload != "u1" {
		t.Errorf("upload: %+v", n)
	}
	if n := ParseName(PartName("bkt", "u1", 7)); n.Kind != PartRecord || n.Upload != "u1" || n.Part != 7 {
		t.Errorf("part: %+v", n)
	}
	for _, bad := range []string{"s3/", "s3/b/", "s3/b/x/y", "s3/o/b/!!", "s3/p/b/u/7", "s3/x/b/y", "s3/u/b/"} {
		if n := ParseName(bad); n.Kind != NotBlockmap {
			t.Errorf("ParseName(%q) = %+v, want NotBlockmap", bad, n)
		}
	}
}
