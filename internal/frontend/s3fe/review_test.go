package s3fe_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/frontend/s3fe"
	"github.com/archipelago-go/archip/internal/objstore"
)

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
	if body, status := do(t, signedRequest(t, e, "PUT", "/bkt/dst", "", "X-Amz-Copy-Source", "/bkt/secret")); status != 200 {
		t.Errorf("signed copy: %d %s", status, body)
	}
}

// TestSignedForOtherService: a signature made for another service than
// s3 (its scope names it) is refused.
func TestSignedForOtherService(t *testing.T) {
	e := start(t)
	req := signedRequest(t, e, "GET", "/", "")
	signAs(t, req, access, secret, "iam", time.Now())
	if body, status := do(t, req); status/100 != 4 || !strings.Contains(body, "<Code>AuthorizationHeaderMalformed</Code>") {
		t.Fatalf("signed for iam: %d %s", status, body)
	}
}

// TestPresignedBounds: X-Amz-Expires above 7 days or negative, and a
// presigned URL dated in the future, are refused.
func TestPresignedBounds(t *testing.T) {
	e := start(t)
	c := client(e, secret)
	c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("pre")})
	c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("pre"), Key: aws.String("k"), Body: strings.NewReader("hello")})
	ps := s3.NewPresignClient(c)
	req, err := ps.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("pre"), Key: aws.String("k")}, s3.WithPresignExpires(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, exp := range []string{"604801", "-1", "99999999999999999999", ""} {
		u, _ := url.Parse(req.URL)
		q := u.Query()
		q.Set("X-Amz-Expires", exp)
		u.RawQuery = q.Encode()
		if body, status := fetch(t, "GET", u.String(), nil); status != 400 || !strings.Contains(body, "AuthorizationQueryParametersError") {
			t.Errorf("X-Amz-Expires=%s: %d %s", exp, status, body)
		}
	}
	future, err := ps.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("pre"), Key: aws.String("k")}, s3.WithPresignExpires(time.Hour),
		func(o *s3.PresignOptions) { o.Presigner = pastSigner{v4.NewSigner(), time.Now().Add(time.Hour)} })
	if err != nil {
		t.Fatal(err)
	}
	if body, status := fetch(t, "GET", future.URL, nil); status != 403 || !strings.Contains(body, "AccessDenied") {
		t.Errorf("dated in an hour: %d %s", status, body)
	}
	// A presigned GET does not authorize another method or a changed query.
	if body, status := fetch(t, "DELETE", req.URL, nil); status != 403 || !strings.Contains(body, "SignatureDoesNotMatch") {
		t.Errorf("presigned GET used to DELETE: %d %s", status, body)
	}
	if body, status := fetch(t, "GET", req.URL+"&response-content-type=text/html", nil); status != 403 || !strings.Contains(body, "SignatureDoesNotMatch") {
		t.Errorf("presigned GET with a query added: %d %s", status, body)
	}
}

// TestAnonymousEveryRoute: no route answers an unsigned request but with
// AccessDenied, and nothing changes.
func TestAnonymousEveryRoute(t *testing.T) {
	e := start(t)
	c := client(e, secret)
	c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("anon")})
	c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("anon"), Key: aws.String("k"), Body: strings.NewReader("x")})
	cr, _ := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("anon"), Key: aws.String("k")})
	id := *cr.UploadId
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/", ""}, {"PUT", "/newb", ""}, {"DELETE", "/anon", ""}, {"HEAD", "/anon", ""}, {"GET", "/anon", ""},
		{"GET", "/anon?list-type=2", ""}, {"GET", "/anon?uploads", ""}, {"GET", "/anon?location", ""}, {"GET", "/anon?versioning", ""},
		{"POST", "/anon?delete", "<Delete><Object><Key>k</Key></Object></Delete>"},
		{"PUT", "/anon/k", "y"}, {"GET", "/anon/k", ""}, {"HEAD", "/anon/k", ""}, {"DELETE", "/anon/k", ""},
		{"GET", "/anon/k?tagging", ""}, {"POST", "/anon/k?uploads", ""}, {"PUT", "/anon/k?uploadId=" + id + "&partNumber=1", "p"},
		{"GET", "/anon/k?uploadId=" + id, ""}, {"DELETE", "/anon/k?uploadId=" + id, ""},
		{"POST", "/anon/k?uploadId=" + id, "<CompleteMultipartUpload/>"},
	} {
		body, status := fetch(t, r.method, e.url+r.path, strings.NewReader(r.body))
		if status != 403 || r.method != "HEAD" && !strings.Contains(body, "<Code>AccessDenied</Code>") {
			t.Errorf("anonymous %s %s: %d %s", r.method, r.path, status, body)
		}
	}
	if string(get(t, c, "anon", "k", "")) != "x" {
		t.Error("the object changed")
	}
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("newb")}); err == nil {
		t.Error("an anonymous create made a bucket")
	}
}

// TestChunkedBounds: an aws-chunked body must say its decoded length (it
// alone bounds what is stored: the chunk sizes are the client's), and
// its trailer is bounded.
func TestChunkedBounds(t *testing.T) {
	e := start(t)
	client(e, secret).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("chk")})
	body, status := chunkedPut(t, e, "/chk/nolen", "5\r\nhello\r\n0\r\n\r\n", "")
	if status != 411 || !strings.Contains(body, "MissingContentLength") {
		t.Errorf("aws-chunked without x-amz-decoded-content-length: %d %s", status, body)
	}
	// A chunk claiming terabytes: refused as longer than announced.
	body, status = chunkedPut(t, e, "/chk/huge", "fffffffffff\r\nhello world", "5")
	if status != 400 {
		t.Errorf("a chunk of terabytes: %d %s", status, body)
	}
	trailer := strings.Repeat("x-amz-foo: bar\r\n", 10000)
	body, status = chunkedPut(t, e, "/chk/trailer", "5\r\nhello\r\n0\r\n"+trailer+"\r\n", "5")
	if status != 400 {
		t.Errorf("a trailer of 10000 lines: %d %s", status, body)
	}
	if _, err := e.b.GetObject(ctx, "chk", "trailer"); err == nil {
		t.Error("stored")
	}
}

// TestChunkSignatureReplay: the signed chunks of one request (AWS's
// example) do not verify under another request's signature, even one
// made with the same key at the same time.
func TestChunkSignatureReplay(t *testing.T) {
	now := time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC)
	b := &bucket.Store{S: objstore.NewMem(), BlockShift: 16, Now: func() time.Time { return now }}
	b.CreateBucket(ctx, "examplebucket")
	h := s3fe.NewHandler(b, map[string]string{"AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}, "", t.Logf)
	var w strings.Builder
	fmt.Fprintf(&w, "10000;chunk-signature=%s\r\n%s\r\n", "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648", strings.Repeat("a", 65536))
	fmt.Fprintf(&w, "400;chunk-signature=%s\r\n%s\r\n", "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497", strings.Repeat("a", 1024))
	fmt.Fprintf(&w, "0;chunk-signature=%s\r\n\r\n", "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9")
	r := httptest.NewRequest("PUT", "http://s3.amazonaws.com/examplebucket/other.txt", strings.NewReader(w.String()))
	r.Host = "s3.amazonaws.com"
	r.Header.Set("X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
	r.Header.Set("Content-Encoding", "aws-chunked")
	r.Header.Set("X-Amz-Decoded-Content-Length", "66560")
	signAs(t, r, "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "s3", now)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != 403 || !strings.Contains(rec.Body.String(), "SignatureDoesNotMatch") {
		t.Fatalf("replayed chunks: %d %s", rec.Code, rec.Body)
	}
	if _, err := b.GetObject(ctx, "examplebucket", "other.txt"); err == nil {
		t.Fatal("replayed chunks stored")
	}
}

// TestStalledBodyTimesOut: a client that sends part of a body and then
// nothing (a slowloris) is cut off after the idle timeout, freeing its
// upload slot, with RequestTimeout; nothing is stored.
func TestStalledBodyTimesOut(t *testing.T) {
	defer s3fe.SetBodyIdle(300 * time.Millisecond)()
	e := start(t)
	client(e, secret).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("slow")})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := sendHead(t, e, conn, "PUT", "/slow/k", 1000)
	fmt.Fprintf(conn, "0123456789")
	for p := ""; p != "PUT /slow/k"; {
		select {
		case p = <-e.done:
		case <-time.After(60 * time.Second):
			t.Fatal("a stalled body still holds its request after a minute (idle timeout 300ms)")
		}
	}
	conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(b), "RequestTimeout") {
		t.Errorf("stalled body: %d %s", resp.StatusCode, b)
	}
	if _, err := e.b.GetObject(ctx, "slow", "k"); err == nil {
		t.Error("stored")
	}
}

// TestErrorsAndEdges: S3's error codes and statuses, ranges,
// conditionals and copies at their edges.
func TestErrorsAndEdges(t *testing.T) {
	e := start(t)
	want := func(what string, body string, status int, wantStatus int, code string) {
		t.Helper()
		if status != wantStatus || code != "" && !strings.Contains(body, "<Code>"+code+"</Code>") {
			t.Errorf("%s: %d %s, want %d %s", what, status, body, wantStatus, code)
		}
	}
	b, s, _ := req(t, e, "PUT", "/Bad_Name", "")
	want("bad bucket name", b, s, 400, "InvalidBucketName")
	req(t, e, "PUT", "/edge", "")
	b, s, _ = req(t, e, "PUT", "/edge", "")
	want("second create", b, s, 409, "BucketAlreadyOwnedByYou")
	b, s, _ = req(t, e, "GET", "/nobucket/k", "")
	want("no bucket", b, s, 404, "NoSuchBucket")
	b, s, _ = req(t, e, "GET", "/edge/nokey", "")
	want("no key", b, s, 404, "NoSuchKey")
	b, s, _ = req(t, e, "PUT", "/edge/"+strings.Repeat("k", 1025), "x")
	want("key of 1025 bytes", b, s, 400, "KeyTooLongError")
	b, s, _ = req(t, e, "GET", "/edge/"+strings.Repeat("k", 1025), "")
	want("get of a key of 1025 bytes", b, s, 404, "NoSuchKey")

	_, _, h := req(t, e, "PUT", "/edge/ten", "0123456789", "Content-Type", "text/plain", "X-Amz-Meta-A", "1")
	etag := h.Get("ETag")
	for _, c := range []struct {
		rng    string
		status int
		body   string
	}{
		{"bytes=2-4", 206, "234"}, {"bytes=-3", 206, "789"}, {"bytes=-100", 206, "0123456789"}, {"bytes=8-100", 206, "89"},
		{"bytes=5-2", 200, "0123456789"}, {"bytes=-0", 416, ""}, {"bytes=10-", 416, ""}, {"bytes=0-0", 206, "0"},
		{"bytes=1-2,4-5", 200, "0123456789"}, {"bytes=x-y", 200, "0123456789"},
	} {
		b, s, _ := req(t, e, "GET", "/edge/ten", "", "Range", c.rng)
		if s != c.status || c.status != 416 && b != c.body || c.status == 416 && !strings.Contains(b, "InvalidRange") {
			t.Errorf("range %s: %d %q, want %d %q", c.rng, s, b, c.status, c.body)
		}
	}
	req(t, e, "PUT", "/edge/empty", "")
	b, s, _ = req(t, e, "GET", "/edge/empty", "")
	want("0-byte get", b, s, 200, "")
	b, s, _ = req(t, e, "GET", "/edge/empty", "", "Range", "bytes=0-")
	want("range of a 0-byte object", b, s, 416, "InvalidRange")

	for _, m := range []string{"GET", "HEAD"} {
		b, s, _ = req(t, e, m, "/edge/ten", "", "If-Match", `"nope"`)
		want(m+" If-Match", b, s, 412, map[bool]string{true: "PreconditionFailed"}[m == "GET"])
		b, s, _ = req(t, e, m, "/edge/ten", "", "If-None-Match", etag)
		want(m+" If-None-Match", b, s, 304, "")
		b, s, _ = req(t, e, m, "/edge/ten", "", "If-Modified-Since", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
		want(m+" If-Modified-Since", b, s, 304, "")
		b, s, _ = req(t, e, m, "/edge/ten", "", "If-Unmodified-Since", time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat))
		want(m+" If-Unmodified-Since", b, s, 412, map[bool]string{true: "PreconditionFailed"}[m == "GET"])
	}
	b, s, _ = req(t, e, "PUT", "/edge/ten", "new", "If-None-Match", "*")
	want("PUT If-None-Match *", b, s, 412, "PreconditionFailed")
	b, s, _ = req(t, e, "PUT", "/edge/ten", "new", "If-Match", `"nope"`)
	want("PUT If-Match", b, s, 412, "PreconditionFailed")

	// Copy onto itself: refused without new metadata, done with it.
	b, s, _ = req(t, e, "PUT", "/edge/ten", "", "X-Amz-Copy-Source", "/edge/ten")
	want("copy onto itself", b, s, 400, "InvalidRequest")
	b, s, _ = req(t, e, "PUT", "/edge/ten", "", "X-Amz-Copy-Source", "/edge/ten", "X-Amz-Metadata-Directive", "REPLACE",
		"Content-Type", "text/x-new", "X-Amz-Meta-B", "2")
	want("copy onto itself with REPLACE", b, s, 200, "")
	b, s, h = req(t, e, "GET", "/edge/ten", "")
	if b != "0123456789" || h.Get("Content-Type") != "text/x-new" || h.Get("X-Amz-Meta-B") != "2" || h.Get("X-Amz-Meta-A") != "" || h.Get("ETag") != etag {
		t.Errorf("after copy onto itself: %q %v", b, h)
	}

	// Multipart errors.
	b, _, _ = req(t, e, "POST", "/edge/mp?uploads", "")
	id := between(b, "<UploadId>", "</UploadId>")
	b, s, _ = req(t, e, "PUT", "/edge/mp?uploadId="+id+"&partNumber=0", "x")
	want("part 0", b, s, 400, "InvalidArgument")
	b, s, _ = req(t, e, "PUT", "/edge/mp?uploadId="+id+"&partNumber=10001", "x")
	want("part 10001", b, s, 400, "InvalidArgument")
	b, s, _ = req(t, e, "PUT", "/edge/mp?uploadId=00000000000000000000000000000000&partNumber=1", "x")
	want("part of no upload", b, s, 404, "NoSuchUpload")
	_, _, h1 := req(t, e, "PUT", "/edge/mp?uploadId="+id+"&partNumber=1", "small")
	_, _, h2 := req(t, e, "PUT", "/edge/mp?uploadId="+id+"&partNumber=2", "small")
	part := func(n int, etag string) string {
		return fmt.Sprintf("<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>", n, etag)
	}
	b, s, _ = req(t, e, "POST", "/edge/mp?uploadId="+id, "<CompleteMultipartUpload>"+part(2, h2.Get("ETag"))+part(1, h1.Get("ETag"))+"</CompleteMultipartUpload>")
	want("parts out of order", b, s, 400, "InvalidPartOrder")
	b, s, _ = req(t, e, "POST", "/edge/mp?uploadId="+id, "<CompleteMultipartUpload>"+part(1, h1.Get("ETag"))+part(2, h2.Get("ETag"))+"</CompleteMultipartUpload>")
	want("a small part", b, s, 400, "EntityTooSmall")
	b, s, _ = req(t, e, "POST", "/edge/mp?uploadId="+id, "<CompleteMultipartUpload>"+part(1, `"0000"`)+"</CompleteMultipartUpload>")
	want("a wrong ETag", b, s, 400, "InvalidPart")
	var many strings.Builder
	many.WriteString("<CompleteMultipartUpload>")
	for i := 1; i <= 10001; i++ {
		many.WriteString(part(i, h1.Get("ETag")))
	}
	many.WriteString("</CompleteMultipartUpload>")
	b, s, _ = req(t, e, "POST", "/edge/mp?uploadId="+id, many.String())
	if s != 400 {
		t.Errorf("10001 parts listed: %d %s", s, b)
	}
	b, s, _ = req(t, e, "POST", "/edge/mp?uploadId="+id, "<CompleteMultipartUpload>"+part(1, h1.Get("ETag"))+"</CompleteMultipartUpload>")
	want("complete", b, s, 200, "")
	if got := between(b, "<ETag>", "</ETag>"); !strings.HasSuffix(got, `-1&#34;`) || len(got) != len(`&#34;`)*2+32+2 {
		t.Errorf("multipart ETag %s, want \"MD5-1\"", got)
	}
	b, s, _ = req(t, e, "POST", "/edge/mp?uploadId="+id, "<CompleteMultipartUpload>"+part(1, h1.Get("ETag"))+"</CompleteMultipartUpload>")
	want("complete again", b, s, 404, "NoSuchUpload")
	b, s, _ = req(t, e, "DELETE", "/edge/mp?uploadId="+id, "")
	want("abort after complete", b, s, 404, "NoSuchUpload")

	b, s, _ = req(t, e, "POST", "/edge?delete", "<Delete><Object><Key>")
	want("malformed delete", b, s, 400, "MalformedXML")
	var del strings.Builder
	del.WriteString("<Delete>")
	for i := 0; i < 1001; i++ {
		fmt.Fprintf(&del, "<Object><Key>k%d</Key></Object>", i)
	}
	del.WriteString("</Delete>")
	b, s, _ = req(t, e, "POST", "/edge?delete", del.String())
	want("1001 keys to delete", b, s, 400, "MalformedXML")
	b, s, _ = req(t, e, "DELETE", "/edge", "")
	want("delete a bucket with objects", b, s, 409, "BucketNotEmpty")
	b, s, _ = req(t, e, "GET", "/edge?list-type=2&continuation-token=%21%21", "")
	want("a tampered continuation token", b, s, 400, "InvalidArgument")
	b, s, _ = req(t, e, "GET", "/edge?list-type=2&max-keys=99999999999", "")
	if s != 200 || !strings.Contains(b, "<MaxKeys>1000</MaxKeys>") {
		t.Errorf("max-keys huge: %d %s", s, b)
	}

	// Skewed time.
	r := signedRequest(t, e, "GET", "/", "")
	signAs(t, r, access, secret, "s3", time.Now().Add(-time.Hour))
	b, s = do(t, r)
	want("an hour old", b, s, 403, "RequestTimeTooSkewed")
}

func between(s, a, b string) string {
	_, s, _ = strings.Cut(s, a)
	s, _, _ = strings.Cut(s, b)
	return s
}

// TestDelimiterPagination: a listing with a delimiter, one entry a page,
// walks keys and common prefixes once each, in order.
func TestDelimiterPagination(t *testing.T) {
	e := start(t)
	req(t, e, "PUT", "/pgn", "")
	for _, k := range []string{"a/1", "a/2", "a/", "b", "c/x/1", "c/y", "d/", "e"} {
		req(t, e, "PUT", "/pgn/"+k, "x")
	}
	var got []string
	tok := ""
	for i := 0; i < 20; i++ {
		q := "/pgn?list-type=2&delimiter=/&max-keys=1"
		if tok != "" {
			q += "&continuation-token=" + url.QueryEscape(tok)
		}
		b, s, _ := req(t, e, "GET", q, "")
		if s != 200 {
			t.Fatalf("%d %s", s, b)
		}
		got = append(got, between(b, "<Key>", "</Key>")+between(b, "<CommonPrefixes><Prefix>", "</Prefix>"))
		tok = between(b, "<NextContinuationToken>", "</NextContinuationToken>")
		if !strings.Contains(b, "<IsTruncated>true</IsTruncated>") {
			break
		}
	}
	if strings.Join(got, " ") != "a/ b c/ d/ e" {
		t.Fatalf("pages: %q", got)
	}
}

// TestListUploadsPagination: uploads of one key, one a page, are each
// listed once.
func TestListUploadsPagination(t *testing.T) {
	e := start(t)
	req(t, e, "PUT", "/ups", "")
	want := map[string]bool{}
	for i := 0; i < 8; i++ {
		b, _, _ := req(t, e, "POST", "/ups/same?uploads", "")
		want[between(b, "<UploadId>", "</UploadId>")] = true
	}
	got := map[string]int{}
	km, um := "", ""
	for i := 0; i < 20; i++ {
		q := "/ups?uploads&max-uploads=1"
		if km != "" {
			q += "&key-marker=" + url.QueryEscape(km) + "&upload-id-marker=" + um
		}
		b, s, _ := req(t, e, "GET", q, "")
		if s != 200 {
			t.Fatalf("%d %s", s, b)
		}
		if id := between(b, "<Upload><Key>same</Key><UploadId>", "</UploadId>"); id != "" {
			got[id]++
		}
		if !strings.Contains(b, "<IsTruncated>true</IsTruncated>") {
			break
		}
		km, um = between(b, "<NextKeyMarker>", "</NextKeyMarker>"), between(b, "<NextUploadIdMarker>", "</NextUploadIdMarker>")
	}
	for id := range want {
		if got[id] != 1 {
			t.Errorf("upload %s listed %d times (all: %v)", id, got[id], got)
		}
	}
}

// TestXMLBodiesBounded: the XML bodies read at once (each up to 4 MiB)
// are bounded: with one slot, a second DeleteObjects waits while a first
// one's body is still arriving.
func TestXMLBodiesBounded(t *testing.T) {
	defer s3fe.SetXMLSlots(1)()
	e := start(t)
	req(t, e, "PUT", "/xml", "")
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	sendHead(t, e, conn, "POST", "/xml?delete", 1000)
	fmt.Fprintf(conn, "<Delete>")
	for deadline := time.Now().Add(30 * time.Second); s3fe.XMLSlotsInUse(e.h) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first request did not take its slot")
		}
	}
	second := make(chan int, 1)
	go func() {
		_, s, _ := req(t, e, "POST", "/xml?delete", "<Delete><Object><Key>k</Key></Object></Delete>")
		second <- s
	}()
	select {
	case s := <-second:
		conn.Close()
		t.Fatalf("a second XML body was read while the first held the only slot: %d", s)
	case <-time.After(500 * time.Millisecond):
	}
	conn.Close()
	if s := <-second; s != 200 {
		t.Fatalf("second: %d", s)
	}
}

// TestAwkwardKeys: keys with escapes, spaces, '+', unicode, double and
// trailing slashes round-trip through put, get, presigned get, list
// (with encoding-type=url) and delete.
func TestAwkwardKeys(t *testing.T) {
	e := start(t)
	c := client(e, secret)
	c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("keys")})
	keys := []string{"a%2Fb", "a+b c", "ü/é 東京", "//x//y", "dir/", "?#[]&=;", "~!*'()", "a%20b%", "tab\tkey", strings.Repeat("é", 100)}
	ps := s3.NewPresignClient(c)
	for i, k := range keys {
		body := fmt.Sprint("v", i)
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("keys"), Key: aws.String(k), Body: strings.NewReader(body)}); err != nil {
			t.Errorf("put %q: %v", k, err)
			continue
		}
		if got := string(get(t, c, "keys", k, "")); got != body {
			t.Errorf("get %q: %q", k, got)
		}
		pr, err := ps.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("keys"), Key: aws.String(k)})
		if err != nil {
			t.Fatal(err)
		}
		if got, s := fetch(t, "GET", pr.URL, nil); s != 200 || got != body {
			t.Errorf("presigned get %q: %d %q", k, s, got)
		}
	}
	out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("keys"), EncodingType: "url"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, o := range out.Contents {
		k, err := url.QueryUnescape(*o.Key) // as clients decode (never a literal '+')
		if err != nil {
			t.Errorf("listed %q: %v", *o.Key, err)
		}
		got[k] = true
	}
	for _, k := range keys {
		if !got[k] {
			t.Errorf("list lacks %q (has %v)", k, got)
		}
		if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("keys"), Key: aws.String(k)}); err != nil {
			t.Errorf("delete %q: %v", k, err)
		}
	}
	if n := count(e.s, "s3/o/"); n != 0 {
		t.Errorf("%d records left", n)
	}
}

// TestCopySourceEscapedQuery: a copy source key that contains
// "?versionId=" (escaped, as clients send it) names that key, not the
// key before it.
func TestCopySourceEscapedQuery(t *testing.T) {
	e := start(t)
	req(t, e, "PUT", "/cps", "")
	req(t, e, "PUT", "/cps/a", "plain a")
	odd := "a%3FversionId%3Dx" // "a?versionId=x", encoded as clients do
	if b, s, _ := req(t, e, "PUT", "/cps/"+odd, "the odd key"); s != 200 {
		t.Fatalf("put: %d %s", s, b)
	}
	b, s, _ := req(t, e, "PUT", "/cps/dst", "", "X-Amz-Copy-Source", "/cps/"+odd)
	if s != 200 {
		t.Fatalf("copy: %d %s", s, b)
	}
	if b, _, _ := req(t, e, "GET", "/cps/dst", ""); b != "the odd key" {
		t.Fatalf("copied %q", b)
	}
	// An unescaped ?versionId= is the version (only "null" here).
	if b, s, _ := req(t, e, "PUT", "/cps/dst2", "", "X-Amz-Copy-Source", "/cps/a?versionId=null"); s != 200 {
		t.Fatalf("copy with versionId: %d %s", s, b)
	}
}

// TestStalledReaderTimesOut: a GET whose client stops reading is cut off
// after the idle timeout: its handler (and the block buffer it holds)
// does not wait forever.
func TestStalledReaderTimesOut(t *testing.T) {
	defer s3fe.SetBodyIdle(300 * time.Millisecond)()
	e := start(t)
	c := client(e, secret)
	c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("stall")})
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("stall"), Key: aws.String("big"), Body: bytes.NewReader(randData(3, 48<<20))}); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetReadBuffer(4096)
	}
	r := signedRequest(t, e, "GET", "/stall/big", "")
	fmt.Fprintf(conn, "GET /stall/big HTTP/1.1\r\nHost: %s\r\n", r.Host)
	for k, v := range r.Header {
		fmt.Fprintf(conn, "%s: %s\r\n", k, v[0])
	}
	fmt.Fprintf(conn, "\r\n")
	for p := ""; p != "GET /stall/big"; {
		select {
		case p = <-e.done:
		case <-time.After(30 * time.Second):
			t.Fatal("a GET whose client reads nothing still runs after 30s (idle timeout 300ms)")
		}
	}
}

// TestUploadOfAnotherKey: an upload ID given with another key than its
// own names no upload: no abort, no parts listed.
func TestUploadOfAnotherKey(t *testing.T) {
	e := start(t)
	req(t, e, "PUT", "/other", "")
	b, _, _ := req(t, e, "POST", "/other/k?uploads", "")
	id := between(b, "<UploadId>", "</UploadId>")
	req(t, e, "PUT", "/other/k?uploadId="+id+"&partNumber=1", "part")
	b, s, _ := req(t, e, "GET", "/other/notk?uploadId="+id, "")
	if s != 404 || !strings.Contains(b, "NoSuchUpload") {
		t.Errorf("list parts under another key: %d %s", s, b)
	}
	b, s, _ = req(t, e, "DELETE", "/other/notk?uploadId="+id, "")
	if s != 404 || !strings.Contains(b, "NoSuchUpload") {
		t.Errorf("abort under another key: %d %s", s, b)
	}
	if _, err := e.b.GetUpload(ctx, "other", id); err != nil {
		t.Errorf("the upload is gone: %v", err)
	}
}

// TestMetadataTooLarge: user metadata is bounded (2 KB, as S3) on put,
// multipart create and copy: every listing page reads the records that
// hold it.
func TestMetadataTooLarge(t *testing.T) {
	e := start(t)
	req(t, e, "PUT", "/meta", "")
	req(t, e, "PUT", "/meta/src", "x")
	big := strings.Repeat("m", 3000)
	for _, r := range []struct{ method, path string }{{"PUT", "/meta/k"}, {"POST", "/meta/k?uploads"}} {
		b, s, _ := req(t, e, r.method, r.path, "", "X-Amz-Meta-Big", big)
		if s != 400 || !strings.Contains(b, "MetadataTooLarge") {
			t.Errorf("%s %s with 3000 bytes of metadata: %d %s", r.method, r.path, s, b)
		}
	}
	b, s, _ := req(t, e, "PUT", "/meta/k", "", "X-Amz-Copy-Source", "/meta/src", "X-Amz-Metadata-Directive", "REPLACE", "X-Amz-Meta-Big", big)
	if s != 400 || !strings.Contains(b, "MetadataTooLarge") {
		t.Errorf("copy with 3000 bytes of metadata: %d %s", s, b)
	}
	if b, s, _ := req(t, e, "PUT", "/meta/ok", "", "X-Amz-Meta-Small", strings.Repeat("m", 1000)); s != 200 {
		t.Errorf("1000 bytes of metadata: %d %s", s, b)
	}
}

// TestBadDirective: an x-amz-metadata-directive other than COPY or
// REPLACE is refused, not taken for COPY.
func TestBadDirective(t *testing.T) {
	e := start(t)
	req(t, e, "PUT", "/dir", "")
	req(t, e, "PUT", "/dir/src", "x")
	b, s, _ := req(t, e, "PUT", "/dir/dst", "", "X-Amz-Copy-Source", "/dir/src", "X-Amz-Metadata-Directive", "replace")
	if s != 400 || !strings.Contains(b, "InvalidArgument") {
		t.Errorf("directive \"replace\": %d %s", s, b)
	}
}
