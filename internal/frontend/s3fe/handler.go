package s3fe

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
)

// maxXMLBody bounds the XML bodies read (complete, delete): 10,000 parts
// or 1,000 keys fit well within it.
const maxXMLBody = 4 << 20

// maxObjectSize bounds one PUT or part, as S3 does.
const maxObjectSize = 5 << 30

// maxStoring bounds the uploads (PUT, UploadPart) storing data at once:
// each holds about 24 MiB of block buffers (package bucket), so uploads
// take at most about 400 MiB; more wait their turn.
const maxStoring = 16

// bodyIdle bounds the wait for each read of a request body and each
// write of an object's data: a client that stops sending (a slowloris)
// frees its upload slot, and the hold on collections an upload takes,
// after it; one that stops reading frees its handler and block buffer.
var bodyIdle = time.Minute

// idleWriter fails a write that waits longer than idle.
type idleWriter struct {
	w    io.Writer
	rc   *http.ResponseController
	idle time.Duration
}

func (w *idleWriter) Write(p []byte) (int, error) {
	w.rc.SetWriteDeadline(time.Now().Add(w.idle)) // not supported (a recorder): no timeout
	return w.w.Write(p)
}

// idleBody fails a read that waits longer than idle with RequestTimeout.
type idleBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
	// timedOut: a read timed out (the request's context is then
	// canceled too, which may be the error that surfaces).
	timedOut bool
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.idle)) // not supported (a recorder): no timeout
	n, err := b.ReadCloser.Read(p)
	var ne net.Error
	switch {
	case err == io.EOF:
		// The server reads on past the body to notice a client going
		// away: without a deadline. (After an error, the deadline stays:
		// the server would otherwise wait for the rest of the body.)
		b.rc.SetReadDeadline(time.Time{})
	case errors.As(err, &ne) && ne.Timeout():
		b.timedOut = true
		err = errf(400, "RequestTimeout", "your socket connection to the server was not read from or written to within the timeout period (%v)", b.idle)
	}
	return n, err
}

// xmlSlots bounds the XML bodies read at once: at most 64 MiB.
var xmlSlots = 16

type handler struct {
	storing chan struct{}
	xml     chan struct{}
	b       *bucket.Store
	keys    map[string]string
	region  string
	logf    func(format string, args ...any)
	now     func() time.Time
}

// NewHandler returns the S3 API over b for the given access keys and
// secrets (copied). logf may be nil.
func NewHandler(b *bucket.Store, keys map[string]string, region string, logf func(format string, args ...any)) http.Handler {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	return &handler{storing: make(chan struct{}, maxStoring), xml: make(chan struct{}, xmlSlots), b: b, keys: maps.Clone(keys), region: region, logf: logf, now: now}
}

// s3Error is an error response.
type s3Error struct {
	status int
	code   string
	msg    string
}

func (e *s3Error) Error() string { return e.code + ": " + e.msg }

func errf(status int, code, format string, args ...any) *s3Error {
	return &s3Error{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// toS3 maps an error to its S3 response.
func toS3(err error) *s3Error {
	var se *s3Error
	if errors.As(err, &se) {
		return se
	}
	var sig *sigError
	if errors.As(err, &sig) {
		st := http.StatusForbidden
		switch sig.code {
		case "BadDigest", "AuthorizationHeaderMalformed", "AuthorizationQueryParametersError", "InvalidRequest", "InvalidArgument", "IncompleteBody", "XAmzContentSHA256Mismatch":
			st = http.StatusBadRequest
		}
		return &s3Error{status: st, code: sig.code, msg: sig.msg}
	}
	table := []struct {
		err    error
		status int
		code   string
	}{
		{bucket.ErrNoBucket, 404, "NoSuchBucket"},
		{bucket.ErrBucketExists, 409, "BucketAlreadyOwnedByYou"},
		{bucket.ErrBucketNotEmpty, 409, "BucketNotEmpty"},
		{bucket.ErrBadBucketName, 400, "InvalidBucketName"},
		{bucket.ErrNoKey, 404, "NoSuchKey"},
		{bucket.ErrNoUpload, 404, "NoSuchUpload"},
		{bucket.ErrBadPart, 400, "InvalidPart"},
		{bucket.ErrPartOrder, 400, "InvalidPartOrder"},
		{bucket.ErrPartTooSmall, 400, "EntityTooSmall"},
		{bucket.ErrBadDigest, 400, "BadDigest"},
		{bucket.ErrPrecondition, 412, "PreconditionFailed"},
		{bucket.ErrIncomplete, 400, "IncompleteBody"},
		{bucket.ErrTooLong, 400, "InvalidRequest"},
		{blockmap.ErrKeyTooLong, 400, "KeyTooLongError"},
		{bucket.ErrBadRange, 416, "InvalidRange"},
	}
	for _, t := range table {
		if errors.Is(err, t.err) {
			return &s3Error{status: t.status, code: t.code, msg: err.Error()}
		}
	}
	return &s3Error{status: 500, code: "InternalError", msg: err.Error()}
}

func requestID() string {
	var b [8]byte
	rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	if b, ok := r.Body.(*idleBody); ok && b.timedOut {
		err = errf(400, "RequestTimeout", "your socket connection to the server was not read from or written to within the timeout period (%v)", b.idle)
	}
	e := toS3(err)
	h.logf("s3: %s %s: %s", r.Method, r.URL.Path, e.Error())
	if r.Method == http.MethodHead {
		w.WriteHeader(e.status)
		return
	}
	writeXML(w, e.status, errorResponse{Code: e.code, Message: e.msg, Resource: r.URL.Path, RequestID: w.Header().Get("X-Amz-Request-Id")})
}

func writeXML(w http.ResponseWriter, status int, v any) {
	b, err := xml.Marshal(v)
	if err != nil {
		status, b = 500, []byte("<Error><Code>InternalError</Code></Error>")
	}
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Content-Length", strconv.Itoa(len(xml.Header)+len(b)))
	w.WriteHeader(status)
	io.WriteString(w, xml.Header)
	w.Write(b)
}

var notImplemented = errf(501, "NotImplemented", "this S3 operation is not implemented by archip")

// bucketSubresources are the queries that make a bucket request another
// operation than the plain one; those not served are NotImplemented.
var bucketSubresources = []string{"acl", "cors", "encryption", "lifecycle", "logging", "notification", "object-lock",
	"policy", "replication", "tagging", "website", "accelerate", "requestPayment", "ownershipControls",
	"publicAccessBlock", "intelligent-tiering", "inventory", "metrics", "analytics", "versions"}

var objectSubresources = []string{"acl", "retention", "legal-hold", "torrent", "restore", "select", "attributes"}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Amz-Request-Id", requestID())
	w.Header().Set("Server", "archip")
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &idleBody{ReadCloser: r.Body, rc: http.NewResponseController(w), idle: bodyIdle}
	}
	a, err := verify(r, h.keys, h.now())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	body, size, err := a.body(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/")
	bkt, key, _ := strings.Cut(path, "/")
	q := r.URL.Query()
	if bkt == "" {
		if r.Method != http.MethodGet {
			h.fail(w, r, errf(405, "MethodNotAllowed", "only GET (ListBuckets) on /"))
			return
		}
		h.listBuckets(w, r)
		return
	}
	if err := bucket.ValidBucketName(bkt); err != nil {
		h.fail(w, r, err)
		return
	}
	if key == "" {
		for _, s := range bucketSubresources {
			if q.Has(s) {
				h.fail(w, r, notImplemented)
				return
			}
		}
		h.bucketOp(w, r, bkt, q, body)
		return
	}
	for _, s := range objectSubresources {
		if q.Has(s) {
			h.fail(w, r, notImplemented)
			return
		}
	}
	if q.Has("tagging") {
		h.tagging(w, r, bkt, key)
		return
	}
	h.objectOp(w, r, bkt, key, q, body, size)
}

// tagging answers GetObjectTagging with no tags (clients that copy
// objects ask); setting tags is not implemented.
func (h *handler) tagging(w http.ResponseWriter, r *http.Request, bkt, key string) {
	if r.Method != http.MethodGet {
		h.fail(w, r, notImplemented)
		return
	}
	if _, err := h.b.GetObject(r.Context(), bkt, key); err != nil {
		h.fail(w, r, err)
		return
	}
	writeXML(w, 200, tagging{Xmlns: xmlns})
}

func (h *handler) bucketOp(w http.ResponseWriter, r *http.Request, bkt string, q url.Values, body io.Reader) {
	ctx := r.Context()
	switch r.Method {
	case http.MethodPut:
		if q.Has("versioning") {
			h.fail(w, r, errf(501, "NotImplemented", "object versioning is not supported"))
			return
		}
		io.Copy(io.Discard, io.LimitReader(body, maxXMLBody)) // a CreateBucketConfiguration: any region is ours
		if err := h.b.CreateBucket(ctx, bkt); err != nil {
			h.fail(w, r, err)
			return
		}
		w.Header().Set("Location", "/"+bkt)
		w.WriteHeader(200)
	case http.MethodDelete:
		if err := h.b.DeleteBucket(ctx, bkt); err != nil {
			h.fail(w, r, err)
			return
		}
		w.WriteHeader(204)
	case http.MethodHead:
		if err := h.b.HeadBucket(ctx, bkt); err != nil {
			h.fail(w, r, err)
			return
		}
		w.WriteHeader(200)
	case http.MethodGet:
		if err := h.b.HeadBucket(ctx, bkt); err != nil {
			h.fail(w, r, err)
			return
		}
		switch {
		case q.Has("versioning"):
			writeXML(w, 200, versioningConfiguration{Xmlns: xmlns})
		case q.Has("location"):
			writeXML(w, 200, locationConstraint{Xmlns: xmlns, Region: h.region})
		case q.Has("uploads"):
			h.listUploads(w, r, bkt, q)
		case q.Get("list-type") == "2":
			h.listV2(w, r, bkt, q)
		default:
			h.listV1(w, r, bkt, q)
		}
	case http.MethodPost:
		if !q.Has("delete") {
			h.fail(w, r, notImplemented)
			return
		}
		h.deleteObjects(w, r, bkt, body)
	default:
		h.fail(w, r, errf(405, "MethodNotAllowed", "method not allowed on a bucket"))
	}
}

func (h *handler) objectOp(w http.ResponseWriter, r *http.Request, bkt, key string, q url.Values, body io.Reader, size int64) {
	switch r.Method {
	case http.MethodPut:
		select {
		case h.storing <- struct{}{}:
			defer func() { <-h.storing }()
		case <-r.Context().Done():
			h.fail(w, r, r.Context().Err())
			return
		}
		switch {
		case q.Has("uploadId") && r.Header.Get("X-Amz-Copy-Source") != "":
			h.copyPart(w, r, bkt, key, q)
		case q.Has("uploadId"):
			h.uploadPart(w, r, bkt, key, q, body, size)
		case r.Header.Get("X-Amz-Copy-Source") != "":
			h.copyObject(w, r, bkt, key)
		default:
			h.putObject(w, r, bkt, key, body, size)
		}
	case http.MethodGet, http.MethodHead:
		if q.Has("uploadId") && r.Method == http.MethodGet {
			h.listParts(w, r, bkt, key, q)
			return
		}
		h.getObject(w, r, bkt, key, q)
	case http.MethodDelete:
		if q.Has("uploadId") {
			if err := h.uploadOf(r, bkt, key, q.Get("uploadId")); err != nil {
				h.fail(w, r, err)
				return
			}
			if err := h.b.AbortUpload(r.Context(), bkt, q.Get("uploadId")); err != nil {
				h.fail(w, r, err)
				return
			}
			w.WriteHeader(204)
			return
		}
		if err := h.b.DeleteObject(r.Context(), bkt, key); err != nil {
			h.fail(w, r, err)
			return
		}
		w.WriteHeader(204)
	case http.MethodPost:
		switch {
		case q.Has("uploads"):
			o, err := putOptions(r)
			if err != nil {
				h.fail(w, r, err)
				return
			}
			id, err := h.b.CreateUpload(r.Context(), bkt, key, o)
			if err != nil {
				h.fail(w, r, err)
				return
			}
			writeXML(w, 200, initiateMultipartUploadResult{Xmlns: xmlns, Bucket: bkt, Key: key, UploadID: id})
		case q.Has("uploadId"):
			h.completeUpload(w, r, bkt, key, q, body)
		default:
			h.fail(w, r, notImplemented)
		}
	default:
		h.fail(w, r, errf(405, "MethodNotAllowed", "method not allowed on an object"))
	}
}

// maxMeta bounds the user metadata of an object (names and values), as
// S3 does: each listing page reads the records that hold it.
const maxMeta = 2 << 10

// putOptions takes the content type and user metadata of a request.
func putOptions(r *http.Request) (bucket.PutOptions, error) {
	o := bucket.PutOptions{ContentType: r.Header.Get("Content-Type")}
	n := 0
	for k, v := range r.Header {
		if m, ok := strings.CutPrefix(strings.ToLower(k), "x-amz-meta-"); ok && len(v) > 0 {
			if o.Meta == nil {
				o.Meta = map[string]string{}
			}
			o.Meta[m] = strings.Join(v, ",")
			n += len(m) + len(o.Meta[m])
		}
	}
	if n > maxMeta {
		return o, errf(400, "MetadataTooLarge", "your metadata headers exceed the maximum allowed metadata size (%d bytes)", maxMeta)
	}
	return o, nil
}

// bodySize checks the size of a body to store.
func bodySize(r *http.Request, size int64) error {
	if size > maxObjectSize {
		return errf(400, "EntityTooLarge", "at most %d bytes in one PUT: use a multipart upload", int64(maxObjectSize))
	}
	if size < 0 && r.Header.Get("X-Amz-Decoded-Content-Length") == "" && r.ContentLength < 0 {
		return errf(411, "MissingContentLength", "a PUT needs Content-Length (or x-amz-decoded-content-length)")
	}
	return nil
}

func contentMD5(r *http.Request) ([]byte, error) {
	v := r.Header.Get("Content-Md5")
	if v == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(b) != md5.Size {
		return nil, errf(400, "InvalidDigest", "Content-MD5 is not a base64 MD5")
	}
	return b, nil
}

func (h *handler) putObject(w http.ResponseWriter, r *http.Request, bkt, key string, body io.Reader, size int64) {
	if err := bodySize(r, size); err != nil {
		h.fail(w, r, err)
		return
	}
	o, err := putOptions(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if o.ContentMD5, err = contentMD5(r); err != nil {
		h.fail(w, r, err)
		return
	}
	o.IfNoneMatch = r.Header.Get("If-None-Match") == "*"
	o.IfMatch = r.Header.Get("If-Match")
	obj, err := h.b.PutObject(r.Context(), bkt, key, body, size, o)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", obj.ETag)
	w.WriteHeader(200)
}

// copySource parses x-amz-copy-source: [/]BUCKET/KEY, URL-encoded.
// A "?versionId=" is cut before unescaping: escaped, it is part of the key.
func copySource(v string) (string, string, error) {
	if i := strings.Index(v, "?versionId="); i >= 0 {
		v = v[:i]
	}
	v, err := url.PathUnescape(strings.TrimPrefix(v, "/"))
	if err != nil {
		return "", "", errf(400, "InvalidArgument", "malformed x-amz-copy-source")
	}
	b, k, ok := strings.Cut(v, "/")
	if !ok || k == "" {
		return "", "", errf(400, "InvalidArgument", "x-amz-copy-source must be BUCKET/KEY")
	}
	return b, k, nil
}

// copySourceObject returns the object x-amz-copy-source names, if it
// meets the request's x-amz-copy-source-if-* conditions.
func (h *handler) copySourceObject(r *http.Request) (sb, sk string, src *bucket.Object, err error) {
	if sb, sk, err = copySource(r.Header.Get("X-Amz-Copy-Source")); err != nil {
		return "", "", nil, err
	}
	if src, err = h.b.GetObject(r.Context(), sb, sk); err != nil {
		return "", "", nil, err
	}
	if err := copyPreconditions(r, src); err != nil {
		return "", "", nil, err
	}
	return sb, sk, src, nil
}

func (h *handler) copyObject(w http.ResponseWriter, r *http.Request, bkt, key string) {
	sb, sk, _, err := h.copySourceObject(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var meta *bucket.PutOptions
	dir := r.Header.Get("X-Amz-Metadata-Directive")
	if dir != "" && dir != "COPY" && dir != "REPLACE" {
		h.fail(w, r, errf(400, "InvalidArgument", "x-amz-metadata-directive must be COPY or REPLACE"))
		return
	}
	if dir == "REPLACE" {
		o, err := putOptions(r)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		meta = &o
	} else if sb == bkt && sk == key {
		h.fail(w, r, errf(400, "InvalidRequest", "copying an object to itself without changing its metadata is not allowed"))
		return
	}
	obj, err := h.b.CopyObject(r.Context(), sb, sk, bkt, key, meta)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeXML(w, 200, copyObjectResult{Xmlns: xmlns, LastModified: isoTime(obj.ModTime), ETag: obj.ETag})
}

func copyPreconditions(r *http.Request, o *bucket.Object) error {
	mod := o.ModTime.Truncate(time.Second)
	if v := r.Header.Get("X-Amz-Copy-Source-If-Match"); v != "" && !bucket.ETagMatch(v, o.ETag) {
		return bucket.ErrPrecondition
	}
	if v := r.Header.Get("X-Amz-Copy-Source-If-None-Match"); v != "" && bucket.ETagMatch(v, o.ETag) {
		return bucket.ErrPrecondition
	}
	if t, err := http.ParseTime(r.Header.Get("X-Amz-Copy-Source-If-Unmodified-Since")); err == nil && mod.After(t) {
		return bucket.ErrPrecondition
	}
	if t, err := http.ParseTime(r.Header.Get("X-Amz-Copy-Source-If-Modified-Since")); err == nil && !mod.After(t) {
		return bucket.ErrPrecondition
	}
	return nil
}

// parseRange parses a single "bytes=" range of an object of size bytes.
// ok false: no range (or one to ignore); an error: unsatisfiable.
func parseRange(v string, size int64) (off, n int64, ok bool, err error) {
	spec, found := strings.CutPrefix(v, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, nil
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, nil
	}
	bad := errf(416, "InvalidRange", "the requested range is not satisfiable")
	if first == "" {
		k, err := strconv.ParseInt(last, 10, 64)
		if err != nil {
			return 0, 0, false, nil
		}
		if k == 0 || size == 0 {
			return 0, 0, false, bad
		}
		k = min(k, size)
		return size - k, k, true, nil
	}
	f, err := strconv.ParseInt(first, 10, 64)
	if err != nil || f < 0 {
		return 0, 0, false, nil
	}
	if f >= size {
		return 0, 0, false, bad
	}
	l := size - 1
	if last != "" {
		if l, err = strconv.ParseInt(last, 10, 64); err != nil || l < f {
			return 0, 0, false, nil
		}
		l = min(l, size-1)
	}
	return f, l - f + 1, true, nil
}

func (h *handler) getObject(w http.ResponseWriter, r *http.Request, bkt, key string, q url.Values) {
	obj, err := h.b.GetObject(r.Context(), bkt, key)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	hd := w.Header()
	hd.Set("ETag", obj.ETag)
	hd.Set("Last-Modified", obj.ModTime.UTC().Format(http.TimeFormat))
	hd.Set("Accept-Ranges", "bytes")
	ct := obj.ContentType
	if ct == "" {
		ct = "binary/octet-stream"
	}
	if v := q.Get("response-content-type"); v != "" {
		ct = v
	}
	hd.Set("Content-Type", ct)
	for _, p := range []string{"content-disposition", "content-encoding", "content-language", "cache-control", "expires"} {
		if v := q.Get("response-" + p); v != "" {
			hd.Set(p, v)
		}
	}
	for k, v := range obj.Meta {
		hd["X-Amz-Meta-"+k] = []string{v}
	}
	if len(obj.Parts) > 0 && q.Has("partNumber") {
		hd.Set("X-Amz-Mp-Parts-Count", strconv.Itoa(len(obj.Parts)))
	}
	mod := obj.ModTime.Truncate(time.Second)
	// Preconditions, in the order of RFC 9110 section 13.2.2.
	if v := r.Header.Get("If-Match"); v != "" {
		if !bucket.ETagMatch(v, obj.ETag) {
			h.fail(w, r, bucket.ErrPrecondition)
			return
		}
	} else if t, err := http.ParseTime(r.Header.Get("If-Unmodified-Since")); err == nil && mod.After(t) {
		h.fail(w, r, bucket.ErrPrecondition)
		return
	}
	if v := r.Header.Get("If-None-Match"); v != "" {
		if bucket.ETagMatch(v, obj.ETag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	} else if t, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && !mod.After(t) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	off, n, ranged, err := parseRange(r.Header.Get("Range"), obj.Size)
	if v := q.Get("partNumber"); v != "" && err == nil {
		pn, perr := strconv.Atoi(v)
		if ranged || perr != nil {
			h.fail(w, r, errf(400, "InvalidArgument", "partNumber must be an integer, without Range"))
			return
		}
		var ok bool
		if off, n, ok = obj.PartRange(pn); !ok {
			err = errf(416, "InvalidPartNumber", "the object has no part %d", pn)
		}
		ranged = err == nil && (len(obj.Parts) > 0 || obj.Size > 0)
	}
	if err != nil {
		hd.Set("Content-Range", fmt.Sprintf("bytes */%d", obj.Size))
		h.fail(w, r, err)
		return
	}
	status := 200
	if ranged {
		status = http.StatusPartialContent
		hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, obj.Size))
	} else {
		n = obj.Size
	}
	hd.Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	err = h.b.Read(r.Context(), obj, off, n, &idleWriter{w: w, rc: rc, idle: bodyIdle})
	if err == nil {
		// The end of the body too, under the deadline of the last write.
		if err = rc.Flush(); errors.Is(err, http.ErrNotSupported) {
			err = nil
		}
	}
	rc.SetWriteDeadline(time.Time{})
	if err != nil {
		// Too late for an error response: cut the body short.
		h.logf("s3: GET %s/%s: %v", bkt, key, err)
		panic(http.ErrAbortHandler)
	}
}

func (h *handler) deleteObjects(w http.ResponseWriter, r *http.Request, bkt string, body io.Reader) {
	var req deleteRequest
	if err := h.readXML(r, body, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if len(req.Objects) > 1000 {
		h.fail(w, r, errf(400, "MalformedXML", "at most 1000 keys per request"))
		return
	}
	if err := h.b.HeadBucket(r.Context(), bkt); err != nil {
		h.fail(w, r, err)
		return
	}
	res := deleteResult{Xmlns: xmlns}
	for _, o := range req.Objects {
		if err := h.b.DeleteObject(r.Context(), bkt, o.Key); err != nil {
			e := toS3(err)
			res.Errors = append(res.Errors, struct {
				Key     string `xml:"Key"`
				Code    string `xml:"Code"`
				Message string `xml:"Message"`
			}{o.Key, e.code, e.msg})
			continue
		}
		if !req.Quiet {
			res.Deleted = append(res.Deleted, struct {
				Key string `xml:"Key"`
			}{o.Key})
		}
	}
	writeXML(w, 200, res)
}

// readXML decodes a bounded XML body, in one of the XML slots.
func (h *handler) readXML(r *http.Request, body io.Reader, v any) error {
	select {
	case h.xml <- struct{}{}:
		defer func() { <-h.xml }()
	case <-r.Context().Done():
		return r.Context().Err()
	}
	b, err := io.ReadAll(io.LimitReader(body, maxXMLBody+1))
	if err != nil {
		return err
	}
	if len(b) > maxXMLBody {
		return errf(400, "MalformedXML", "the XML body is too large")
	}
	if err := xml.Unmarshal(b, v); err != nil {
		return errf(400, "MalformedXML", "the XML you provided was not well-formed or did not validate against our published schema")
	}
	return nil
}

func (h *handler) listBuckets(w http.ResponseWriter, r *http.Request) {
	bs, err := h.b.ListBuckets(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res := listBucketsResult{Xmlns: xmlns, Owner: owner{ID: "archip", DisplayName: "archip"}}
	for _, b := range bs {
		res.Buckets = append(res.Buckets, struct {
			Name         string `xml:"Name"`
			CreationDate string `xml:"CreationDate"`
		}{b.Name, isoTime(b.Created)})
	}
	writeXML(w, 200, res)
}

func maxKeys(q url.Values, name string) (int, error) {
	v := q.Get(name)
	if v == "" {
		return 1000, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errf(400, "InvalidArgument", "%s must be a non-negative integer", name)
	}
	return min(n, 1000), nil
}

// encodeKey applies encoding-type=url.
func encodeKey(s string, url bool) string {
	if !url {
		return s
	}
	return uriEncode(s, true)
}

func (h *handler) listPage(r *http.Request, bkt string, q url.Values, after string, max int) (*bucket.ListPage, error) {
	if max == 0 {
		return &bucket.ListPage{}, nil
	}
	return h.b.List(r.Context(), bkt, bucket.ListOptions{Prefix: q.Get("prefix"), Delimiter: q.Get("delimiter"), After: after, Max: max})
}

func toContents(objs []bucket.Object, enc, withOwner bool) []contents {
	var out []contents
	for _, o := range objs {
		c := contents{Key: encodeKey(o.Key, enc), LastModified: isoTime(o.ModTime), ETag: o.ETag, Size: o.Size, StorageClass: "STANDARD"}
		if withOwner {
			c.Owner = &owner{ID: "archip", DisplayName: "archip"}
		}
		out = append(out, c)
	}
	return out
}

func toPrefixes(ps []string, enc bool) []commonPrefix {
	var out []commonPrefix
	for _, p := range ps {
		out = append(out, commonPrefix{encodeKey(p, enc)})
	}
	return out
}

func (h *handler) listV2(w http.ResponseWriter, r *http.Request, bkt string, q url.Values) {
	max, err := maxKeys(q, "max-keys")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	after := q.Get("start-after")
	if tok := q.Get("continuation-token"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			h.fail(w, r, errf(400, "InvalidArgument", "the continuation token is not valid"))
			return
		}
		after = string(b)
	}
	pg, err := h.listPage(r, bkt, q, after, max)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	enc := q.Get("encoding-type") == "url"
	res := listObjectsV2Result{Xmlns: xmlns, Name: bkt, Prefix: encodeKey(q.Get("prefix"), enc), Delimiter: encodeKey(q.Get("delimiter"), enc),
		MaxKeys: max, KeyCount: len(pg.Objects) + len(pg.Prefixes), IsTruncated: pg.Truncated,
		ContinuationToken: q.Get("continuation-token"), StartAfter: encodeKey(q.Get("start-after"), enc),
		Contents: toContents(pg.Objects, enc, q.Get("fetch-owner") == "true"), CommonPrefixes: toPrefixes(pg.Prefixes, enc)}
	if enc {
		res.EncodingType = "url"
	}
	if pg.Truncated {
		res.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(pg.Next))
	}
	writeXML(w, 200, res)
}

func (h *handler) listV1(w http.ResponseWriter, r *http.Request, bkt string, q url.Values) {
	max, err := maxKeys(q, "max-keys")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	pg, err := h.listPage(r, bkt, q, q.Get("marker"), max)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	enc := q.Get("encoding-type") == "url"
	res := listObjectsV1Result{Xmlns: xmlns, Name: bkt, Prefix: encodeKey(q.Get("prefix"), enc), Marker: encodeKey(q.Get("marker"), enc),
		Delimiter: encodeKey(q.Get("delimiter"), enc), MaxKeys: max, IsTruncated: pg.Truncated,
		Contents: toContents(pg.Objects, enc, true), CommonPrefixes: toPrefixes(pg.Prefixes, enc)}
	if enc {
		res.EncodingType = "url"
	}
	if pg.Truncated {
		res.NextMarker = encodeKey(pg.Next, enc)
	}
	writeXML(w, 200, res)
}

func (h *handler) uploadPart(w http.ResponseWriter, r *http.Request, bkt, key string, q url.Values, body io.Reader, size int64) {
	n, err := strconv.Atoi(q.Get("partNumber"))
	if err != nil || n < 1 || n > bucket.MaxParts {
		h.fail(w, r, errf(400, "InvalidArgument", "partNumber must be an integer from 1 to %d", bucket.MaxParts))
		return
	}
	if err := bodySize(r, size); err != nil {
		h.fail(w, r, err)
		return
	}
	md, err := contentMD5(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.uploadOf(r, bkt, key, q.Get("uploadId")); err != nil {
		h.fail(w, r, err)
		return
	}
	p, err := h.b.UploadPart(r.Context(), bkt, q.Get("uploadId"), n, body, size, md)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", p.ETag)
	w.WriteHeader(200)
}

func (h *handler) copyPart(w http.ResponseWriter, r *http.Request, bkt, key string, q url.Values) {
	n, err := strconv.Atoi(q.Get("partNumber"))
	if err != nil || n < 1 || n > bucket.MaxParts {
		h.fail(w, r, errf(400, "InvalidArgument", "partNumber must be an integer from 1 to %d", bucket.MaxParts))
		return
	}
	sb, sk, src, err := h.copySourceObject(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	off, length := int64(0), int64(-1)
	if v := r.Header.Get("X-Amz-Copy-Source-Range"); v != "" {
		var ok bool
		off, length, ok, err = parseRange(v, src.Size)
		if err != nil || !ok {
			h.fail(w, r, errf(400, "InvalidArgument", "x-amz-copy-source-range must be bytes=FIRST-LAST within the object"))
			return
		}
	}
	if err := h.uploadOf(r, bkt, key, q.Get("uploadId")); err != nil {
		h.fail(w, r, err)
		return
	}
	p, err := h.b.CopyPart(r.Context(), bkt, q.Get("uploadId"), n, sb, sk, off, length)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeXML(w, 200, copyPartResult{Xmlns: xmlns, LastModified: isoTime(p.ModTime), ETag: p.ETag})
}

func (h *handler) completeUpload(w http.ResponseWriter, r *http.Request, bkt, key string, q url.Values, body io.Reader) {
	id := q.Get("uploadId")
	if err := h.uploadOf(r, bkt, key, id); err != nil {
		h.fail(w, r, err)
		return
	}
	var req completeMultipartUpload
	if err := h.readXML(r, body, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if len(req.Parts) == 0 {
		h.fail(w, r, errf(400, "MalformedXML", "the XML lists no part"))
		return
	}
	var list []bucket.CompletePart
	for _, p := range req.Parts {
		list = append(list, bucket.CompletePart{Number: p.PartNumber, ETag: p.ETag})
	}
	obj, err := h.b.CompleteUpload(r.Context(), bkt, id, list)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeXML(w, 200, completeMultipartUploadResult{Xmlns: xmlns, Location: "/" + bkt + "/" + key, Bucket: bkt, Key: key, ETag: obj.ETag})
}

// uploadOf checks that upload id of bkt exists and is of key.
func (h *handler) uploadOf(r *http.Request, bkt, key, id string) error {
	u, err := h.b.GetUpload(r.Context(), bkt, id)
	if err == nil && u.Key != key {
		err = bucket.ErrNoUpload
	}
	return err
}

func (h *handler) listParts(w http.ResponseWriter, r *http.Request, bkt, key string, q url.Values) {
	id := q.Get("uploadId")
	if err := h.uploadOf(r, bkt, key, id); err != nil {
		h.fail(w, r, err)
		return
	}
	parts, err := h.b.ListParts(r.Context(), bkt, id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	max, err := maxKeys(q, "max-parts")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	marker, _ := strconv.Atoi(q.Get("part-number-marker"))
	res := listPartsResult{Xmlns: xmlns, Bucket: bkt, Key: key, UploadID: id, PartNumberMarker: marker, MaxParts: max, StorageClass: "STANDARD"}
	pg, more := page(parts, max, func(p bucket.Part) bool { return p.Number > marker })
	for _, p := range pg {
		res.Parts = append(res.Parts, partXML{PartNumber: p.Number, LastModified: isoTime(p.ModTime), ETag: p.ETag, Size: p.Size})
		res.NextPartNumberMarker = p.Number
	}
	res.IsTruncated = more
	writeXML(w, 200, res)
}

func (h *handler) listUploads(w http.ResponseWriter, r *http.Request, bkt string, q url.Values) {
	ups, err := h.b.ListUploads(r.Context(), bkt)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	max, err := maxKeys(q, "max-uploads")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	prefix, km, um := q.Get("prefix"), q.Get("key-marker"), q.Get("upload-id-marker")
	res := listMultipartUploadsResult{Xmlns: xmlns, Bucket: bkt, KeyMarker: km, UploadIDMarker: um, Prefix: prefix, MaxUploads: max}
	pg, more := page(ups, max, func(u bucket.Upload) bool {
		return strings.HasPrefix(u.Key, prefix) && (u.Key > km || u.Key == km && um != "" && u.ID > um)
	})
	for _, u := range pg {
		res.Uploads = append(res.Uploads, uploadXML{Key: u.Key, UploadID: u.ID, Initiated: isoTime(u.Created), StorageClass: "STANDARD"})
		res.NextKeyMarker, res.NextUploadIDMarker = u.Key, u.ID
	}
	res.IsTruncated = more
	writeXML(w, 200, res)
}

// page returns the first max items (in order) that keep accepts, and
// whether more follow them. A max of 0 is an empty page that is not
// truncated (as ListObjects' here): one that is gives the client no
// marker past it, and a paginator would ask for it again forever.
func page[T any](items []T, max int, keep func(T) bool) (out []T, more bool) {
	if max == 0 {
		return nil, false
	}
	for _, it := range items {
		if !keep(it) {
			continue
		}
		if len(out) == max {
			return out, true
		}
		out = append(out, it)
	}
	return out, false
}
