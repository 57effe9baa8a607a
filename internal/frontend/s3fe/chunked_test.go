package s3fe_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/frontend/s3fe"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestSignedStreaming replays the example of AWS's documentation of
// STREAMING-AWS4-HMAC-SHA256-PAYLOAD ("Signature Calculations for the
// Authorization Header: Transferring Payload in Multiple Chunks"): 65536
// and 1024 bytes of 'a', each chunk signed, chained from the seed.
func TestSignedStreaming(t *testing.T) {
	now := time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC)
	s := objstore.NewMem()
	b := &bucket.Store{S: s, BlockShift: 16, Now: func() time.Time { return now }}
	if err := b.CreateBucket(ctx, "examplebucket"); err != nil {
		t.Fatal(err)
	}
	h := s3fe.NewHandler(b, map[string]string{"AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}, "", t.Logf)
	body := func(sig1, sig2, sig3 string) string {
		var w strings.Builder
		fmt.Fprintf(&w, "10000;chunk-signature=%s\r\n%s\r\n", sig1, strings.Repeat("a", 65536))
		fmt.Fprintf(&w, "400;chunk-signature=%s\r\n%s\r\n", sig2, strings.Repeat("a", 1024))
		fmt.Fprintf(&w, "0;chunk-signature=%s\r\n\r\n", sig3)
		return w.String()
	}
	const (
		s1 = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
		s2 = "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
		s3 = "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
	)
	send := func(payload string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("PUT", "http://s3.amazonaws.com/examplebucket/chunkObject.txt", strings.NewReader(payload))
		r.Host = "s3.amazonaws.com"
		r.Header.Set("X-Amz-Date", "20130524T000000Z")
		r.Header.Set("X-Amz-Storage-Class", "REDUCED_REDUNDANCY")
		r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")
		r.Header.Set("X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
		r.Header.Set("Content-Encoding", "aws-chunked")
		r.Header.Set("X-Amz-Decoded-Content-Length", "66560")
		r.Header.Set("Content-Length", "66824")
		r.ContentLength = 66824
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if len(body(s1, s2, s3)) != 66824 {
		t.Fatalf("body of %d bytes", len(body(s1, s2, s3)))
	}
	// A tampered chunk signature: refused, nothing stored.
	if w := send(body(s1, strings.Replace(s2, "0", "1", 1), s3)); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "SignatureDoesNotMatch") {
		t.Fatalf("tampered chunk: %d %s", w.Code, w.Body)
	}
	if _, err := b.GetObject(ctx, "examplebucket", "chunkObject.txt"); err == nil {
		t.Fatal("an upload with a bad chunk is visible")
	}
	if w := send(body(s1, s2, s3)); w.Code != 200 {
		t.Fatalf("signed streaming upload: %d %s", w.Code, w.Body)
	}
	o, err := b.GetObject(ctx, "examplebucket", "chunkObject.txt")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	b.Read(ctx, o, 0, o.Size, &got)
	if got.String() != strings.Repeat("a", 66560) {
		t.Fatalf("stored %d bytes", got.Len())
	}
}

// TestUnsignedTrailer: STREAMING-UNSIGNED-PAYLOAD-TRAILER, as the SDKs
// send with a checksum over TLS.
func TestUnsignedTrailer(t *testing.T) {
	e := start(t)
	c := client(e, secret)
	c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("trl")})
	payload := "5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n"
	if body, status := chunkedPut(t, e, "/trl/k", payload, "11", "X-Amz-Trailer", "x-amz-checksum-crc32"); status != 200 {
		t.Fatalf("status %d %s", status, body)
	}
	if got := string(get(t, c, "trl", "k", "")); got != "hello world" {
		t.Fatalf("stored %q", got)
	}
	// A wrong trailing checksum: BadDigest, nothing stored.
	bad := strings.Replace(payload, "DUoRhQ==", "AAAAAA==", 1)
	if body, status := chunkedPut(t, e, "/trl/bad", bad, "11", "X-Amz-Trailer", "x-amz-checksum-crc32"); status != 400 || !strings.Contains(body, "BadDigest") {
		t.Fatalf("wrong checksum: %d %s", status, body)
	}
	if _, err := e.b.GetObject(ctx, "trl", "bad"); err == nil {
		t.Fatal("an upload with a wrong checksum is visible")
	}
}

// TestSDKTrailerOverTLS: over HTTPS, aws-sdk-go-v2 sends a body it cannot
// seek as aws-chunked with a trailing CRC-32 (STREAMING-UNSIGNED-PAYLOAD-
// TRAILER).
func TestSDKTrailerOverTLS(t *testing.T) {
	s := objstore.NewMem()
	b := &bucket.Store{S: s, BlockShift: 16}
	var modes []string
	h := s3fe.NewHandler(b, map[string]string{access: secret}, "", t.Logf)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "PUT" {
			modes = append(modes, r.Header.Get("X-Amz-Content-Sha256"))
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true, HTTPClient: srv.Client(),
		Credentials: credentials.NewStaticCredentialsProvider(access, secret, "")})
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("tls")}); err != nil {
		t.Fatal(err)
	}
	p := randData(4, 200_000)
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("tls"), Key: aws.String("k"),
		Body: io.MultiReader(bytes.NewReader(p)), ContentLength: aws.Int64(int64(len(p))), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(get(t, c, "tls", "k", ""), p) {
		t.Fatal("differs")
	}
	if len(modes) != 2 || modes[1] != "STREAMING-UNSIGNED-PAYLOAD-TRAILER" {
		t.Fatalf("payload modes: %v, want the PUT's STREAMING-UNSIGNED-PAYLOAD-TRAILER", modes)
	}
}
