package s3fe_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// The helpers that build, sign and send raw requests: only to drive the
// server with bytes the SDK would not send.

// send sends req and returns its body, status and headers.
func send(t *testing.T, req *http.Request) (string, int, http.Header) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode, resp.Header
}

// do sends req and returns its body and status.
func do(t *testing.T, req *http.Request) (string, int) {
	t.Helper()
	b, status, _ := send(t, req)
	return b, status
}

// fetch sends an unsigned request.
func fetch(t *testing.T, method, url string, body io.Reader) (string, int) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	return do(t, req)
}

// signAs signs req (its payload hash is its X-Amz-Content-Sha256) with
// keys ak and sk for service in us-east-1 at time at, as S3 clients sign:
// the path encoded once.
func signAs(t *testing.T, req *http.Request, ak, sk, service string, at time.Time) {
	t.Helper()
	req.Header.Del("Authorization")
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	err := signer.SignHTTP(ctx, aws.Credentials{AccessKeyID: ak, SecretAccessKey: sk}, req,
		req.Header.Get("X-Amz-Content-Sha256"), service, "us-east-1", at)
	if err != nil {
		t.Fatal(err)
	}
}

// resign signs req with the test's keys, for s3, now.
func resign(t *testing.T, req *http.Request) {
	t.Helper()
	signAs(t, req, access, secret, "s3", time.Now())
}

// signedRequest builds a request signed over the body, with extra headers
// (name, value, ...; signed too).
func signedRequest(t *testing.T, e *env, method, path, body string, hdr ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Content-Sha256", sha256Hex(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resign(t, req)
	return req
}

// signed sends a signed request and returns its body and status.
func signed(t *testing.T, e *env, method, path, body string) (string, int) {
	t.Helper()
	return do(t, signedRequest(t, e, method, path, body))
}

// req sends a signed request with extra headers (signed too) and
// returns the response's body, status and headers.
func req(t *testing.T, e *env, method, path, body string, hdr ...string) (string, int, http.Header) {
	t.Helper()
	return send(t, signedRequest(t, e, method, path, body, hdr...))
}

// chunkedPut sends an aws-chunked PUT of payload, unsigned with trailers,
// with X-Amz-Decoded-Content-Length decoded (none if "") and extra
// headers.
func chunkedPut(t *testing.T, e *env, path, payload, decoded string, hdr ...string) (string, int) {
	t.Helper()
	h := append([]string{"X-Amz-Content-Sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "Content-Encoding", "aws-chunked"}, hdr...)
	if decoded != "" {
		h = append(h, "X-Amz-Decoded-Content-Length", decoded)
	}
	return do(t, signedRequest(t, e, "PUT", path, payload, h...))
}

// sendHead writes on conn the head of a signed request with an unsigned
// payload of length bytes, and returns the request (to read the
// response with).
func sendHead(t *testing.T, e *env, conn net.Conn, method, path string, length int) *http.Request {
	t.Helper()
	req := signedRequest(t, e, method, path, "", "X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", method, path, req.Host, length)
	for k, v := range req.Header {
		fmt.Fprintf(conn, "%s: %s\r\n", k, v[0])
	}
	fmt.Fprintf(conn, "\r\n")
	return req
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
