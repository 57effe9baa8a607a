package s3fe

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The x-amz-content-sha256 values that are not a hash.
const (
	unsignedPayload      = "UNSIGNED-PAYLOAD"
	streamingSigned      = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	streamingSignedTrail = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	streamingUnsigned    = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
	emptySHA256          = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	algorithm            = "AWS4-HMAC-SHA256"
	timeFormat           = "20060102T150405Z"
	maxSkew              = 15 * time.Minute
	maxPresignExpiry     = 7 * 24 * time.Hour
)

// auth is a verified request's signature: what a signed streaming body
// needs to check its chunks.
type auth struct {
	access  string
	key     []byte // signing key
	scope   string
	date    string // X-Amz-Date
	seed    string // the request's signature
	payload string // x-amz-content-sha256
}

// sigError is a SigV4 failure with its S3 error code.
type sigError struct {
	code string
	msg  string
}

func (e *sigError) Error() string { return e.msg }

func errSig(code, format string, args ...any) error {
	return &sigError{code: code, msg: fmt.Sprintf(format, args...)}
}

// uriEncode encodes s as SigV4 does: every byte but A-Za-z0-9-_.~ as
// %XX, and '/' too unless path.
func uriEncode(s string, path bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' || path && c == '/' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}

// canonicalQuery is the sorted, encoded query, without skip.
func canonicalQuery(rawQuery, skip string) string {
	var pairs []string
	for _, kv := range strings.Split(rawQuery, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil || k == skip {
			continue
		}
		pairs = append(pairs, uriEncode(k, false)+"="+uriEncode(v, false))
	}
	slices.Sort(pairs)
	return strings.Join(pairs, "&")
}

// canonicalHeaders returns the canonical headers of the signed names.
func canonicalHeaders(r *http.Request, signed []string) (string, error) {
	var b strings.Builder
	for _, h := range signed {
		var vals []string
		switch h {
		case "host":
			vals = []string{r.Host}
		case "content-length":
			vals = []string{strconv.FormatInt(r.ContentLength, 10)}
			if v := r.Header.Get("Content-Length"); v != "" {
				vals = []string{v}
			}
		case "transfer-encoding":
			vals = []string{strings.Join(r.TransferEncoding, ",")}
		default:
			vals = r.Header.Values(h)
			if vals == nil {
				return "", errSig("AccessDenied", "signed header %q is missing", h)
			}
		}
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ")
		}
		b.WriteString(h + ":" + strings.Join(vals, ",") + "\n")
	}
	return b.String(), nil
}

// verify checks the request's SigV4 signature, in the header or the
// query (presigned), against the secret of its access key.
func verify(r *http.Request, secrets map[string]string, now time.Time) (*auth, error) {
	q := r.URL.Query()
	var cred, signedHeaders, sig, amzDate, payload string
	presigned := q.Get("X-Amz-Algorithm") != ""
	if presigned {
		if q.Get("X-Amz-Algorithm") != algorithm {
			return nil, errSig("AuthorizationQueryParametersError", "X-Amz-Algorithm must be %s", algorithm)
		}
		cred, signedHeaders, sig, amzDate = q.Get("X-Amz-Credential"), q.Get("X-Amz-SignedHeaders"), q.Get("X-Amz-Signature"), q.Get("X-Amz-Date")
		payload = unsignedPayload
		if p := q.Get("X-Amz-Content-Sha256"); p != "" {
			payload = p
		}
	} else {
		h := r.Header.Get("Authorization")
		if h == "" {
			if q.Get("AWSAccessKeyId") != "" {
				return nil, errSig("AccessDenied", "signature version 2 is not supported: use SigV4")
			}
			return nil, errSig("AccessDenied", "anonymous access is not allowed: sign the request")
		}
		rest, ok := strings.CutPrefix(h, algorithm+" ")
		if !ok {
			if strings.HasPrefix(h, "AWS ") {
				return nil, errSig("AccessDenied", "signature version 2 is not supported: use SigV4")
			}
			return nil, errSig("AuthorizationHeaderMalformed", "the Authorization header is not %s", algorithm)
		}
		for _, f := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
			switch k {
			case "Credential":
				cred = v
			case "SignedHeaders":
				signedHeaders = v
			case "Signature":
				sig = v
			}
		}
		amzDate = r.Header.Get("X-Amz-Date")
		if amzDate == "" {
			if d, err := http.ParseTime(r.Header.Get("Date")); err == nil {
				amzDate = d.UTC().Format(timeFormat)
			}
		}
		payload = r.Header.Get("X-Amz-Content-Sha256")
		if payload == "" {
			return nil, errSig("InvalidRequest", "x-amz-content-sha256 is missing")
		}
	}
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" || sig == "" || signedHeaders == "" {
		return nil, errSig("AuthorizationHeaderMalformed", "malformed credential or signature")
	}
	access, day, region, service := parts[0], parts[1], parts[2], parts[3]
	if service != "s3" {
		return nil, errSig("AuthorizationHeaderMalformed", "the credential scope names service %q: this endpoint is s3", service)
	}
	secret, ok := secrets[access]
	if !ok {
		return nil, errSig("InvalidAccessKeyId", "the access key %q does not exist", access)
	}
	t, err := time.Parse(timeFormat, amzDate)
	if err != nil || !strings.HasPrefix(amzDate, day) {
		return nil, errSig("AccessDenied", "missing or malformed X-Amz-Date")
	}
	if presigned {
		exp, err := strconv.Atoi(q.Get("X-Amz-Expires"))
		if err != nil || exp < 0 || time.Duration(exp)*time.Second > maxPresignExpiry {
			return nil, errSig("AuthorizationQueryParametersError", "X-Amz-Expires must be 0 to 604800 seconds")
		}
		if now.Before(t.Add(-maxSkew)) {
			return nil, errSig("AccessDenied", "request is not valid yet")
		}
		if now.After(t.Add(time.Duration(exp) * time.Second)) {
			return nil, errSig("AccessDenied", "Request has expired")
		}
	} else if d := now.Sub(t); d > maxSkew || d < -maxSkew {
		return nil, errSig("RequestTimeTooSkewed", "the difference between the request time and the server's time is too large")
	}
	signed := strings.Split(signedHeaders, ";")
	if !slices.Contains(signed, "host") {
		return nil, errSig("AccessDenied", "the host header must be signed")
	}
	// What an x-amz-* header means (a copy source, metadata, a decoded
	// length) must be signed, as S3 requires: else one added to a
	// captured request would change what it does.
	for h := range r.Header {
		if l := strings.ToLower(h); strings.HasPrefix(l, "x-amz-") && !slices.Contains(signed, l) {
			return nil, errSig("AccessDenied", "there were headers present in the request which were not signed: %s", l)
		}
	}
	ch, err := canonicalHeaders(r, signed)
	if err != nil {
		return nil, err
	}
	skip := ""
	if presigned {
		skip = "X-Amz-Signature"
	}
	creq := strings.Join([]string{r.Method, uriEncode(r.URL.Path, true), canonicalQuery(r.URL.RawQuery, skip),
		ch, signedHeaders, payload}, "\n")
	scope := strings.Join(parts[1:], "/")
	sts := strings.Join([]string{algorithm, amzDate, scope, sha256Hex([]byte(creq))}, "\n")
	key := signingKey(secret, day, region, service)
	want := hex.EncodeToString(hmacSHA256(key, sts))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return nil, errSig("SignatureDoesNotMatch", "the request signature we calculated does not match the signature you provided: check your key and signing method")
	}
	return &auth{access: access, key: key, scope: scope, date: amzDate, seed: sig, payload: payload}, nil
}

// body returns the request's payload as the handler must read it:
// verified against its signed SHA-256 (an error at its end if it
// differs), or decoded from aws-chunked with each chunk's signature
// checked, and its decoded length (-1 if unknown).
func (a *auth) body(r *http.Request) (io.Reader, int64, error) {
	switch a.payload {
	case unsignedPayload:
		return r.Body, r.ContentLength, nil
	case streamingSigned, streamingSignedTrail, streamingUnsigned:
		// The decoded length is required, as S3 does: it alone bounds
		// what is stored, the chunk sizes being the client's.
		v := r.Header.Get("X-Amz-Decoded-Content-Length")
		if v == "" {
			return nil, 0, errf(http.StatusLengthRequired, "MissingContentLength", "an aws-chunked body needs x-amz-decoded-content-length")
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, 0, errSig("InvalidArgument", "malformed x-amz-decoded-content-length")
		}
		c := &chunkReader{r: bufio.NewReaderSize(r.Body, 64<<10), a: a, signed: a.payload != streamingUnsigned,
			trailer: a.payload != streamingSigned, prev: a.seed}
		if c.trailer {
			name := strings.ToLower(strings.TrimSpace(r.Header.Get("X-Amz-Trailer")))
			if alg, ok := strings.CutPrefix(name, "x-amz-checksum-"); ok {
				if c.sum = newChecksum(alg); c.sum == nil {
					return nil, 0, errSig("InvalidRequest", "unknown checksum algorithm %q", alg)
				}
				c.sumName = name
			}
		}
		return c, n, nil
	}
	if len(a.payload) != 64 {
		return nil, 0, errSig("InvalidArgument", "x-amz-content-sha256 is not a SHA-256 nor a known payload mode")
	}
	return &hashReader{r: r.Body, h: sha256.New(), want: a.payload}, r.ContentLength, nil
}

// hashReader fails at its end if what it read does not hash to want.
type hashReader struct {
	r    io.Reader
	h    hash.Hash
	want string
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	if err == io.EOF && hex.EncodeToString(h.h.Sum(nil)) != h.want {
		return n, errSig("XAmzContentSHA256Mismatch", "the provided x-amz-content-sha256 does not match what was computed")
	}
	return n, err
}

// maxChunkLine bounds a chunk header or trailer line, maxTrailerLines
// the trailer's lines (clients send a checksum and a signature).
const (
	maxChunkLine    = 4096
	maxTrailerLines = 16
)

// chunkReader decodes an aws-chunked body: chunks of "SIZE-HEX[;chunk-
// signature=SIG]\r\nDATA\r\n", a last chunk of size 0, then (with
// trailer) header lines and an empty line.
type chunkReader struct {
	r       *bufio.Reader
	a       *auth
	signed  bool
	trailer bool
	prev    string
	left    int64 // of the current chunk
	h       hash.Hash
	sig     string
	done    bool
	err     error
	// With a trailing checksum: its header name and the data's hash.
	sumName string
	sum     hash.Hash
}

// newChecksum returns the hash of an x-amz-checksum-ALG, or nil.
func newChecksum(alg string) hash.Hash {
	switch alg {
	case "crc32":
		return crc32.NewIEEE()
	case "crc32c":
		return crc32.New(crc32.MakeTable(crc32.Castagnoli))
	case "crc64nvme":
		return crc64.New(crc64.MakeTable(0x9a6c9329ac4bc9b5)) // the reversed NVMe polynomial
	case "sha1":
		return sha1.New()
	case "sha256":
		return sha256.New()
	}
	return nil
}

func (c *chunkReader) line() (string, error) {
	var b []byte
	for {
		frag, err := c.r.ReadSlice('\n')
		b = append(b, frag...)
		if len(b) > maxChunkLine {
			return "", errSig("IncompleteBody", "aws-chunked line too long")
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return "", errSig("IncompleteBody", "the body ended inside an aws-chunked header")
		}
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
}

func (c *chunkReader) chunkSig(dataHash string) string {
	sts := strings.Join([]string{"AWS4-HMAC-SHA256-PAYLOAD", c.a.date, c.a.scope, c.prev, emptySHA256, dataHash}, "\n")
	return hex.EncodeToString(hmacSHA256(c.a.key, sts))
}

// startChunk reads a chunk header.
func (c *chunkReader) startChunk() error {
	l, err := c.line()
	if err != nil {
		return err
	}
	sizeStr, ext, _ := strings.Cut(l, ";")
	size, err := strconv.ParseInt(strings.TrimSpace(sizeStr), 16, 64)
	if err != nil || size < 0 {
		return errSig("InvalidRequest", "malformed aws-chunked chunk size")
	}
	if c.signed {
		sig, ok := strings.CutPrefix(ext, "chunk-signature=")
		if !ok {
			return errSig("SignatureDoesNotMatch", "a chunk has no chunk-signature")
		}
		c.sig, c.h = sig, sha256.New()
	}
	c.left = size
	if size == 0 {
		if err := c.endChunk(); err != nil {
			return err
		}
		c.done = true
		return c.readTrailer()
	}
	return nil
}

// endChunk checks the chunk's signature.
func (c *chunkReader) endChunk() error {
	if !c.signed {
		return nil
	}
	h := emptySHA256
	if c.h != nil {
		h = hex.EncodeToString(c.h.Sum(nil))
	}
	want := c.chunkSig(h)
	if !hmac.Equal([]byte(want), []byte(c.sig)) {
		return errSig("SignatureDoesNotMatch", "a chunk's signature does not match")
	}
	c.prev = want
	return nil
}

// readTrailer reads the trailing headers, if any, to the empty line, and
// checks the trailing checksum that x-amz-trailer announced. The
// trailer's own signature (x-amz-trailer-signature) is not checked: the
// data it covers is, by the chunks' signatures and the checksum.
func (c *chunkReader) readTrailer() error {
	found := false
	for i := 0; ; i++ {
		if i > maxTrailerLines {
			return errSig("InvalidRequest", "the aws-chunked trailer has more than %d lines", maxTrailerLines)
		}
		l, err := c.line()
		if err != nil && !c.trailer {
			return nil // no trailer: the body may end right after the last chunk
		}
		if err != nil {
			return err
		}
		if l == "" {
			break
		}
		k, v, _ := strings.Cut(l, ":")
		if c.sum != nil && strings.EqualFold(strings.TrimSpace(k), c.sumName) {
			found = true
			if base64.StdEncoding.EncodeToString(c.sum.Sum(nil)) != strings.TrimSpace(v) {
				return errSig("BadDigest", "the %s you specified did not match the calculated checksum", c.sumName)
			}
		}
	}
	if c.sum != nil && !found {
		return errSig("InvalidRequest", "the trailer announced by x-amz-trailer (%s) is missing", c.sumName)
	}
	return nil
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	for c.left == 0 && !c.done {
		if c.err = c.startChunk(); c.err != nil {
			return 0, c.err
		}
	}
	if c.done {
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	if c.h != nil {
		c.h.Write(p[:n])
	}
	if c.sum != nil {
		c.sum.Write(p[:n])
	}
	c.left -= int64(n)
	if err == io.EOF && c.left > 0 {
		c.err = errSig("IncompleteBody", "the body ended inside a chunk")
		return n, c.err
	}
	if err != nil && err != io.EOF {
		c.err = err
		return n, err
	}
	if c.left == 0 {
		var crlf [2]byte
		if _, err := io.ReadFull(c.r, crlf[:]); err != nil || !bytes.Equal(crlf[:], []byte("\r\n")) {
			c.err = errSig("IncompleteBody", "a chunk does not end with CRLF")
			return n, c.err
		}
		if c.err = c.endChunk(); c.err != nil {
			return n, c.err
		}
	}
	return n, nil
}
