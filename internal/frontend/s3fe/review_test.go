package s3fe_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// do sends req and returns its body and status.
func do(t *testing.T, req *http.Request) (string, int) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

// TestUnsignedAmzHeaderRefused: an x-amz-* header added to a signed
// request after signing (x-amz-copy-source turning a PUT into a copy of
// another object, user metadata) makes the request fail: what such
// headers mean must be signed.
func TestUnsignedAmzHeaderRefused(t *testing.T) {
	e := start(t)
	c := client(e, secret)
	c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("bkt")})
	c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("secret"), Body: strings.NewReader("the secret")})

	req := signedRequest(t, e, "PUT", "/bkt/dst", "")
	req.Header.Set("X-Amz-Copy-Source", "/bkt/secret")
	body, status := do(t, req)
	if status != 403 || !strings.Contains(body, "<Code>AccessDenied</Code>") {
		t.Errorf("unsigned x-amz-copy-source: %d %s", status, body)
	}
	if _, err := e.b.GetObject(ctx, "bkt", "dst"); err == nil {
		t.Error("an unsigned x-amz-copy-source copied the object")
	}

	req = signedRequest(t, e, "PUT", "/bkt/meta", "data")
	req.Header.Set("X-Amz-Meta-Evil", "1")
	if body, status := do(t, req); status != 403 || !strings.Contains(body, "<Code>AccessDenied</Code>") {
		t.Errorf("unsigned x-amz-meta-: %d %s", status, body)
	}

	// Signed, the same headers work.
	req, _ = http.NewRequest("PUT", e.url+"/bkt/dst", nil)
	req.Header.Set("X-Amz-Content-Sha256", sha256Hex(""))
	req.Header.Set("X-Amz-Copy-Source", "/bkt/secret")
	resign(t, req)
	if body, status := do(t, req); status != 200 {
		t.Errorf("signed copy: %d %s", status, body)
	}
}
