package s3fe_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/frontend/s3fe"
	"github.com/archipelago-go/archip/internal/objstore"
)

var ctx = context.Background()

const (
	access = "AKIATESTKEY"
	secret = "test-secret-key"
)

type env struct {
	url  string
	done chan string // the path of each request the server finished
	b    *bucket.Store
	s    *objstore.Mem
	h    http.Handler
}

func start(t *testing.T) *env {
	s := objstore.NewMem()
	b := &bucket.Store{S: s, BlockShift: 16}
	h := s3fe.NewHandler(b, map[string]string{access: secret}, "", t.Logf)
	done := make(chan string, 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- r.Method + " " + r.URL.Path }() // also when the handler aborts (panics)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return &env{url: srv.URL, done: done, b: b, s: s, h: h}
}

func client(e *env, sec string) *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(e.url),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(access, sec, ""),
	})
}

func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return fmt.Sprint(err)
}

func randData(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 9))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

func get(t *testing.T, c *s3.Client, bkt, key, rng string) []byte {
	t.Helper()
	in := &s3.GetObjectInput{Bucket: &bkt, Key: &key}
	if rng != "" {
		in.Range = &rng
	}
	out, err := c.GetObject(ctx, in)
	if err != nil {
		t.Fatalf("get %s %s: %v", key, rng, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSDK(t *testing.T) {
	e := start(t)
	c := client(e, secret)
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("bkt")}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("bkt")})
	if code(err) != "BucketAlreadyOwnedByYou" {
		t.Fatalf("second create: %v", err)
	}
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("Bad_Name")}); code(err) != "InvalidBucketName" {
		t.Fatalf("bad bucket name: %v", err)
	}
	p := randData(1, 300_000)
	put, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/a b+c.bin"),
		Body: bytes.NewReader(p), ContentType: aws.String("application/x-test"), Metadata: map[string]string{"origin": "test"}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(get(t, c, "bkt", "dir/a b+c.bin", ""), p) {
		t.Fatal("get differs")
	}
	if !bytes.Equal(get(t, c, "bkt", "dir/a b+c.bin", "bytes=70000-200000"), p[70000:200001]) {
		t.Fatal("range differs")
	}
	if !bytes.Equal(get(t, c, "bkt", "dir/a b+c.bin", "bytes=-10"), p[len(p)-10:]) {
		t.Fatal("suffix range differs")
	}
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/a b+c.bin")})
	if err != nil {
		t.Fatal(err)
	}
	if *head.ContentLength != int64(len(p)) || *head.ETag != *put.ETag || *head.ContentType != "application/x-test" || head.Metadata["origin"] != "test" {
		t.Fatalf("head %+v", head)
	}
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/a b+c.bin"), IfNoneMatch: put.ETag})
	var re interface{ HTTPStatusCode() int }
	if !errors.As(err, &re) || re.HTTPStatusCode() != 304 {
		t.Fatalf("If-None-Match: %v", err)
	}
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/a b+c.bin"), IfMatch: aws.String(`"nope"`)})
	if code(err) != "PreconditionFailed" {
		t.Fatalf("If-Match: %v", err)
	}
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/a b+c.bin"), Body: bytes.NewReader(nil), IfNoneMatch: aws.String("*")})
	if code(err) != "PreconditionFailed" {
		t.Fatalf("conditional put: %v", err)
	}
	if _, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("nope")}); code(err) != "NoSuchKey" {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("nobkt"), Key: aws.String("k")}); code(err) != "NoSuchBucket" {
		t.Fatalf("missing bucket: %v", err)
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("empty"), Body: bytes.NewReader(nil)}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, "bkt", "empty", ""); len(got) != 0 {
		t.Fatal("empty object")
	}

	// Copy: the same maps, no new blocks.
	before := count(e.s, "blk/")
	if _, err := c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String("bkt"), Key: aws.String("copy"), CopySource: aws.String("bkt/dir/a%20b%2Bc.bin")}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(get(t, c, "bkt", "copy", ""), p) || count(e.s, "blk/") != before {
		t.Fatal("copy")
	}

	// Listing.
	for i := range 5 {
		c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String(fmt.Sprintf("list/%d", i)), Body: strings.NewReader("x")})
	}
	l, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("bkt"), Delimiter: aws.String("/")})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keysOf(l.Contents), prefixesOf(l.CommonPrefixes)) != "[copy empty] [dir/ list/]" {
		t.Fatalf("list: %v %v", keysOf(l.Contents), prefixesOf(l.CommonPrefixes))
	}
	var paged []string
	pager := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String("bkt"), Prefix: aws.String("list/"), MaxKeys: aws.Int32(2)})
	for pager.HasMorePages() {
		pg, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, keysOf(pg.Contents)...)
	}
	if fmt.Sprint(paged) != "[list/0 list/1 list/2 list/3 list/4]" {
		t.Fatalf("paged: %v", paged)
	}
	v1, err := c.ListObjects(ctx, &s3.ListObjectsInput{Bucket: aws.String("bkt"), Prefix: aws.String("list/"), MaxKeys: aws.Int32(3)})
	if err != nil || len(v1.Contents) != 3 || !*v1.IsTruncated {
		t.Fatalf("v1: %v %+v", err, v1)
	}
	vs, err := c.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String("bkt")})
	if err != nil || vs.Status != "" {
		t.Fatalf("versioning: %v %+v", err, vs)
	}
	bl, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
	if err != nil || len(bl.Buckets) != 1 || *bl.Buckets[0].Name != "bkt" {
		t.Fatalf("list buckets: %v %+v", err, bl)
	}

	// DeleteObjects, DeleteObject, DeleteBucket.
	var ids []types.ObjectIdentifier
	for i := range 5 {
		ids = append(ids, types.ObjectIdentifier{Key: aws.String(fmt.Sprintf("list/%d", i))})
	}
	do, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String("bkt"), Delete: &types.Delete{Objects: ids}})
	if err != nil || len(do.Deleted) != 5 {
		t.Fatalf("delete objects: %v %+v", err, do)
	}
	if _, err := c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String("bkt")}); code(err) != "BucketNotEmpty" {
		t.Fatalf("delete non-empty bucket: %v", err)
	}
	for _, k := range []string{"dir/a b+c.bin", "copy", "empty"} {
		if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("bkt"), Key: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String("bkt")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("bkt")}); err == nil {
		t.Fatal("head of a deleted bucket")
	}
}

func count(s objstore.Store, prefix string) int {
	n := 0
	s.List(ctx, prefix, func(objstore.Info) error { n++; return nil })
	return n
}

func keysOf(cs []types.Object) []string {
	var k []string
	for _, c := range cs {
		k = append(k, *c.Key)
	}
	return k
}

func prefixesOf(ps []types.CommonPrefix) []string {
	var k []string
	for _, p := range ps {
		k = append(k, *p.Prefix)
	}
	return k
}

// Multipart with parts that are not block-aligned (5 MiB + 1000 bytes
// at 64 KiB blocks): completes without storing a block, reads back.
func TestSDKMultipart(t *testing.T) {
	e := start(t)
	c := client(e, secret)
	c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("mpu")})
	cr, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("big")})
	if err != nil {
		t.Fatal(err)
	}
	var whole []byte
	var done []types.CompletedPart
	for i, n := range []int{5<<20 + 1000, 5 << 20, 12345} {
		p := randData(uint64(i), n)
		whole = append(whole, p...)
		up, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("mpu"), Key: aws.String("big"), UploadId: cr.UploadId,
			PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(p)})
		if err != nil {
			t.Fatal(err)
		}
		done = append(done, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: up.ETag})
	}
	lp, err := c.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String("mpu"), Key: aws.String("big"), UploadId: cr.UploadId})
	if err != nil || len(lp.Parts) != 3 {
		t.Fatalf("list parts: %v %+v", err, lp)
	}
	lu, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String("mpu")})
	if err != nil || len(lu.Uploads) != 1 || *lu.Uploads[0].UploadId != *cr.UploadId {
		t.Fatalf("list uploads: %v %+v", err, lu)
	}
	blocks := count(e.s, "blk/")
	out, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("big"),
		UploadId: cr.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: done}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(*out.ETag, `-3"`) || count(e.s, "blk/") != blocks {
		t.Fatalf("complete: etag %s, blocks %d then %d", *out.ETag, blocks, count(e.s, "blk/"))
	}
	if !bytes.Equal(get(t, c, "mpu", "big", ""), whole) {
		t.Fatal("multipart object differs")
	}
	if !bytes.Equal(get(t, c, "mpu", "big", "bytes=5243000-5243999"), whole[5243000:5244000]) {
		t.Fatal("range across parts differs")
	}
	p2, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("mpu"), Key: aws.String("big"), PartNumber: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(p2.Body)
	p2.Body.Close()
	if !bytes.Equal(got, whole[5<<20+1000:10<<20+1000]) || p2.PartsCount == nil || *p2.PartsCount != 3 {
		t.Fatalf("part 2: %d bytes, parts count %v", len(got), p2.PartsCount)
	}
	// Abort.
	cr2, _ := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("ab")})
	c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("mpu"), Key: aws.String("ab"), UploadId: cr2.UploadId, PartNumber: aws.Int32(1), Body: strings.NewReader("x")})
	if _, err := c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("ab"), UploadId: cr2.UploadId}); err != nil {
		t.Fatal(err)
	}
	_, err = c.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String("mpu"), Key: aws.String("ab"), UploadId: cr2.UploadId})
	if code(err) != "NoSuchUpload" {
		t.Fatalf("parts of an aborted upload: %v", err)
	}
	if count(e.s, "s3/p/") != 0 || count(e.s, "s3/u/") != 0 {
		t.Fatal("upload records left")
	}
}

func TestWrongSecret(t *testing.T) {
	e := start(t)
	_, err := client(e, "wrong").ListBuckets(ctx, &s3.ListBucketsInput{})
	if code(err) != "SignatureDoesNotMatch" {
		t.Fatalf("wrong secret: %v", err)
	}
	c := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(e.url), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("NOSUCHKEY", secret, "")})
	if _, err := c.ListBuckets(ctx, &s3.ListBucketsInput{}); code(err) != "InvalidAccessKeyId" {
		t.Fatalf("unknown key: %v", err)
	}
	resp, err := http.Get(e.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("anonymous: %d", resp.StatusCode)
	}
}

func TestPresigned(t *testing.T) {
	e := start(t)
	c := client(e, secret)
	c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("pre")})
	c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("pre"), Key: aws.String("k"), Body: strings.NewReader("hello")})
	ps := s3.NewPresignClient(c)
	req, err := ps.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("pre"), Key: aws.String("k")}, s3.WithPresignExpires(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	body, status := fetch(t, "GET", req.URL, nil)
	if status != 200 || body != "hello" {
		t.Fatalf("presigned get: %d %q", status, body)
	}
	tampered := strings.Replace(req.URL, "/pre/k", "/pre/K", 1)
	if body, status := fetch(t, "GET", tampered, nil); status != 403 || !strings.Contains(body, "SignatureDoesNotMatch") {
		t.Fatalf("tampered: %d %s", status, body)
	}
	// Expired: signed two hours ago for one hour.
	old, err := ps.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("pre"), Key: aws.String("k")}, s3.WithPresignExpires(time.Hour),
		func(o *s3.PresignOptions) {
			o.ClientOptions = append(o.ClientOptions, func(o *s3.Options) {})
			o.Presigner = pastSigner{v4.NewSigner(), time.Now().Add(-2 * time.Hour)}
		})
	if err != nil {
		t.Fatal(err)
	}
	if body, status := fetch(t, "GET", old.URL, nil); status != 403 || !strings.Contains(body, "AccessDenied") || !strings.Contains(body, "expired") {
		t.Fatalf("expired: %d %s", status, body)
	}
	// A presigned PUT.
	put, err := ps.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("pre"), Key: aws.String("up")})
	if err != nil {
		t.Fatal(err)
	}
	if _, status := fetch(t, "PUT", put.URL, strings.NewReader("uploaded")); status != 200 {
		t.Fatalf("presigned put: %d", status)
	}
	if string(get(t, c, "pre", "up", "")) != "uploaded" {
		t.Fatal("presigned put content")
	}
}

// pastSigner presigns as if at another time.
type pastSigner struct {
	s *v4.Signer
	t time.Time
}

func (p pastSigner) PresignHTTP(ctx context.Context, creds aws.Credentials, r *http.Request, payloadHash, service, region string, _ time.Time, optFns ...func(*v4.SignerOptions)) (string, http.Header, error) {
	return p.s.PresignHTTP(ctx, creds, r, payloadHash, service, region, p.t, optFns...)
}

// Bad input: malformed XML on complete, a client that disconnects mid-
// body: S3 errors, and nothing visible.
func TestBadInput(t *testing.T) {
	e := start(t)
	c := client(e, secret)
	c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("bad")})
	cr, _ := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("bad"), Key: aws.String("k")})
	up, _ := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("bad"), Key: aws.String("k"), UploadId: cr.UploadId, PartNumber: aws.Int32(1), Body: strings.NewReader("x")})
	_, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("bad"), Key: aws.String("k"), UploadId: cr.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{PartNumber: aws.Int32(2), ETag: up.ETag}}}})
	if code(err) != "InvalidPart" {
		t.Fatalf("unknown part: %v", err)
	}
	// Raw signed requests for what the SDK will not send.
	body, status := signed(t, e, "POST", "/bad/k?uploadId="+*cr.UploadId, "<CompleteMultipartUpload><Part>")
	if status != 400 || !strings.Contains(body, "MalformedXML") {
		t.Fatalf("malformed XML: %d %s", status, body)
	}
	if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bad"), Key: aws.String("k")}); err == nil {
		t.Fatal("a failed complete made the object")
	}

	// A client that sends half its body and hangs up.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	sendHead(t, e, conn, "PUT", "/bad/half", 1000000)
	conn.Write(randData(5, 300000))
	conn.Close()
	for p := range e.done {
		if p == "PUT /bad/half" {
			break
		}
	}
	if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bad"), Key: aws.String("half")}); err == nil {
		t.Fatal("a truncated upload is visible")
	}
	if count(e.s, "s3/o/") != 0 {
		t.Fatal("object record of a truncated upload")
	}
}

// TestPayloadHashMismatch: a body whose SHA-256 is not the signed
// x-amz-content-sha256 is refused, and nothing is stored.
func TestPayloadHashMismatch(t *testing.T) {
	e := start(t)
	client(e, secret).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("hash")})
	b, status := do(t, signedRequest(t, e, "PUT", "/hash/k", "the body sent", "X-Amz-Content-Sha256", sha256Hex("the body signed")))
	if status != 400 || !strings.Contains(b, "XAmzContentSHA256Mismatch") {
		t.Fatalf("mismatched payload hash: %d %s", status, b)
	}
	if _, err := e.b.GetObject(ctx, "hash", "k"); err == nil {
		t.Fatal("an upload whose hash differs is visible")
	}
}
