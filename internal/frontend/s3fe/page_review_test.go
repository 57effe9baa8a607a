package s3fe_test

import (
	"fmt"
	"strings"
	"testing"
)

// TestListPartsPageEdges: ListParts and ListMultipartUploads pages at
// the edges of max-parts / max-uploads and the markers. A page that says
// it is truncated must let the client go on (a marker past what it
// listed): a max of 0 lists nothing and is not truncated (as
// ListObjects here), else a paginator asks again for the same page
// forever.
func TestListPartsPageEdges(t *testing.T) {
	e := start(t)
	req(t, e, "PUT", "/pgs", "")
	b, _, _ := req(t, e, "POST", "/pgs/k?uploads", "")
	id := between(b, "<UploadId>", "</UploadId>")
	for n := 1; n <= 3; n++ {
		if _, s, _ := req(t, e, "PUT", fmt.Sprintf("/pgs/k?uploadId=%s&partNumber=%d", id, n), "part"); s != 200 {
			t.Fatalf("part %d: %d", n, s)
		}
	}
	parts := func(q string) (nums []string, truncated bool, body string) {
		t.Helper()
		b, s, _ := req(t, e, "GET", "/pgs/k?uploadId="+id+q, "")
		if s != 200 {
			t.Fatalf("list parts %s: %d %s", q, s, b)
		}
		for _, p := range strings.Split(b, "<Part>")[1:] {
			nums = append(nums, between(p, "<PartNumber>", "</PartNumber>"))
		}
		return nums, strings.Contains(b, "<IsTruncated>true</IsTruncated>"), b
	}
	for _, c := range []struct {
		q     string
		want  string
		trunc bool
	}{
		{"&max-parts=0", "", false},
		{"&max-parts=1", "1", true},
		{"&max-parts=3", "1 2 3", false},
		{"&max-parts=2000", "1 2 3", false},
		{"&part-number-marker=1&max-parts=1", "2", true},
		{"&part-number-marker=2&max-parts=1", "3", false},
		{"&part-number-marker=3", "", false},
	} {
		nums, trunc, body := parts(c.q)
		if strings.Join(nums, " ") != c.want || trunc != c.trunc {
			t.Errorf("%s: parts %v truncated %v, want %q %v\n%s", c.q, nums, trunc, c.want, c.trunc, body)
		}
	}
	if _, _, body := parts("&max-parts=2000"); !strings.Contains(body, "<MaxParts>1000</MaxParts>") {
		t.Errorf("max-parts=2000 echoes %s", between(body, "<MaxParts>", "</MaxParts>"))
	}
	for _, q := range []string{"&max-parts=-1", "&max-parts=x"} {
		if b, s, _ := req(t, e, "GET", "/pgs/k?uploadId="+id+q, ""); s != 400 {
			t.Errorf("%s: %d %s", q, s, b)
		}
	}
	b, s, _ := req(t, e, "GET", "/pgs?uploads&max-uploads=0", "")
	if s != 200 || strings.Contains(b, "<Upload>") || strings.Contains(b, "<IsTruncated>true</IsTruncated>") {
		t.Errorf("max-uploads=0: %d %s", s, b)
	}
	b, s, _ = req(t, e, "GET", "/pgs?uploads&max-uploads=1", "")
	if s != 200 || between(b, "<UploadId>", "</UploadId>") != id || strings.Contains(b, "<IsTruncated>true</IsTruncated>") {
		t.Errorf("max-uploads=1 of one upload: %d %s", s, b)
	}
	b, s, _ = req(t, e, "GET", "/pgs?uploads&key-marker=k", "")
	if s != 200 || strings.Contains(b, "<Upload>") {
		t.Errorf("key-marker=k without an upload-id-marker lists uploads of k: %d %s", s, b)
	}
}
