package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// trailerLen is the size of the trailer every object carries after its
// data: 8 random bytes (the write's nonce), the version the write
// replaced by a conditional PUT (8 bytes, little endian; 0 for none) and
// the 8-byte magic.
const trailerLen = 24

var magic = [8]byte{'a', 'r', 'c', 'h', 'i', 'p', 0, 1}

// A tombstone (see Conditional.DeleteGone) is an empty object with this
// metadata; every read takes it for absent.
const metaKey, metaDeleted = "archip", "deleted"

func deleted(meta map[string]string) bool { return meta[metaKey] == metaDeleted }

// unsupported is the refusal of a conditional write on a server without
// them.
const unsupported = "this S3 server does not support conditional writes; put metadata on a file:// or rados:// store and keep only blocks here (a split configuration: --store pools:///FILE, see docs/pools.md)"

// Conditional says which conditional requests the server honours (found
// by a probe when the store is opened).
type Conditional struct {
	Create bool // PUT with If-None-Match: * (Create, Swap from 0)
	Swap   bool // PUT with If-Match: ETAG (Swap)
	Delete bool // DELETE with If-Match: ETAG refuses a changed object
	// DeleteGone: DELETE with If-Match refuses an absent object too.
	// Without it (versitygw 1.8) two DeleteVersions of one version
	// could both succeed, so DeleteVersion claims the object by
	// replacing it with a tombstone (a conditional PUT, which only one
	// claimant wins), and the tombstone stays: 24 bytes per name deleted
	// so, until the name is written again. It is not deleted with
	// If-Match: versitygw 1.8 checks a DELETE's If-Match outside the
	// lock of its conditional PUTs, so that DELETE could remove the
	// object a Create just put over the tombstone (and radosgw 16
	// ignores If-Match on DELETE).
	DeleteGone bool
	// Unquoted: If-Match takes the ETag without its quotes (radosgw 16
	// refuses a quoted one, as RFC 9110 writes it, even when it matches).
	Unquoted bool
	// Why says what the probe saw when one is missing.
	Why string
}

// Store is an objstore.Store on an S3 bucket.
type Store struct {
	cfg    Config
	client *s3.Client
	kp     string // key prefix: cfg.Prefix + "/", or ""
	sem    chan struct{}
	cond   Conditional
	closed atomic.Bool

	mu    sync.Mutex
	etags map[objstore.Version]string // quoted ETags of versions seen; bounded

	// stripes serialize this process's conditional writes of one name:
	// radosgw 16 answers the loser of a race of conditional PUTs with a
	// 500 (ECANCELED), which the store must take for "may have
	// happened"; between processes (hosts) that remains so. Each is a
	// lock held by a value in it (cap 1), so that a wait ends with its
	// context.
	stripes [256]chan struct{}
}

func (s *Store) stripe(name string) chan struct{} {
	h := fnv.New32a()
	h.Write([]byte(name))
	return s.stripes[h.Sum32()%uint32(len(s.stripes))]
}

var _ objstore.Store = (*Store)(nil)

// maxETags bounds the version → ETag cache (Swap skips a HEAD on a hit).
const maxETags = 1 << 14

// Open opens the store an s3:// URL names.
func Open(ctx context.Context, u *url.URL) (*Store, error) {
	c, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	return OpenConfig(ctx, c)
}

// OpenConfig opens a store and probes the server's conditional writes
// with an object of its own under the prefix.
func OpenConfig(ctx context.Context, c Config) (*Store, error) {
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Attempts <= 0 {
		c.Attempts = DefaultAttempts
	}
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConnsPerHost = c.Concurrency
	})
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("s3: reading the CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: s3: ca file %s holds no PEM certificate", objstore.ErrBadURL, c.CA)
		}
		hc = hc.WithTransportOptions(func(tr *http.Transport) {
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			tr.TLSClientConfig.RootCAs = pool
		})
	}
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(hc),
		// Servers older than the SDK's 2025 default checksums reject them.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		// Retries are ours: only we know which writes may be repeated.
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	}
	if c.Region != "" {
		opts = append(opts, config.WithRegion(c.Region))
	}
	if c.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(c.Profile))
	}
	if c.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(c.Credentials))
	}
	ac, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3: loading the AWS configuration: %w", err)
	}
	if ac.Region == "" {
		ac.Region = "us-east-1"
	}
	s := &Store{
		cfg: c,
		client: s3.NewFromConfig(ac, func(o *s3.Options) {
			if c.Endpoint != "" {
				o.BaseEndpoint = aws.String(c.Endpoint)
			}
			o.UsePathStyle = c.PathStyle
		}),
		sem:   make(chan struct{}, c.Concurrency),
		etags: map[objstore.Version]string{},
	}
	for i := range s.stripes {
		s.stripes[i] = make(chan struct{}, 1)
	}
	if c.Prefix != "" {
		s.kp = c.Prefix + "/"
	}
	if c.NoConditional {
		s.cond.Why = "conditional writes switched off by configuration"
		return s, nil
	}
	if s.cond, err = s.probe(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Conditional returns which conditional requests the server honours.
// Without Create and Swap, Create and Swap refuse with ErrUnsupport;
// without those and Delete, DeleteVersion does.
func (s *Store) Conditional() Conditional { return s.cond }

var _ objstore.CASChecker = (*Store)(nil)

// CheckCAS returns nil if the server honours the conditional PUTs that
// Create and Swap need (DeleteVersion then works too, by tombstone where
// DELETE lacks If-Match), else the refusal Create gives
// (objstore.ErrUnsupport, saying to put metadata elsewhere).
func (s *Store) CheckCAS() error {
	if s.cond.Create && s.cond.Swap {
		return nil
	}
	return fmt.Errorf("%w: s3: %s: %s (the probe found: %s)", objstore.ErrUnsupport, s.cfg.Bucket+"/"+s.kp, unsupported, s.cond.Why)
}

// probe finds which conditional requests the server honours, on an
// object of its own whose name is no valid object name (so listings skip
// it).
func (s *Store) probe(ctx context.Context) (Conditional, error) {
	var c Conditional
	key := s.kp + "~probe/" + hex.EncodeToString(nonce())
	body := seal(nil, nonce(), 0)
	var etag string // the probe object's, after each successful put
	put := func(ifMatch, ifNoneMatch *string) error {
		return s.idem(ctx, func(ctx context.Context) error {
			out, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.cfg.Bucket, Key: &key,
				Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))), IfMatch: ifMatch, IfNoneMatch: ifNoneMatch})
			if err == nil {
				etag = aws.ToString(out.ETag)
			}
			return err
		})
	}
	del := func(ifMatch *string) error {
		return s.idem(ctx, func(ctx context.Context) error {
			_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: &key, IfMatch: ifMatch})
			return err
		})
	}
	refused := func(err error) bool { st := status(err); return st == 412 || st == 409 }
	probeErr := func(what string, err error) error {
		return fmt.Errorf("s3: probing the server's conditional writes (%s): %w", what, s.mapErr(ctx, "PUT", key, err))
	}
	wrong := aws.String(`"00000000000000000000000000000000"`)
	defer del(nil) // whatever the steps left
	if err := put(nil, aws.String("*")); err != nil {
		if code(err) == "AccessDenied" { // read-only keys
			c.Why = fmt.Sprintf("the probe could not write (%v)", err)
			return c, nil
		}
		if status(err) != 501 && status(err) != 400 {
			return c, probeErr("first create", err)
		}
		if err := put(nil, nil); err != nil {
			return c, probeErr("plain put", err)
		}
	}
	var whys []string
	switch err := put(nil, aws.String("*")); {
	case refused(err):
		c.Create = true
	case err == nil:
		whys = append(whys, "a PUT with If-None-Match: * replaced an existing object")
	default:
		whys = append(whys, fmt.Sprintf("a PUT with If-None-Match: * failed: %v", err))
	}
	switch err := put(wrong, nil); {
	case refused(err):
		c.Swap = true
	case err == nil:
		whys = append(whys, "a PUT with a wrong If-Match replaced the object")
	default:
		whys = append(whys, fmt.Sprintf("a PUT with If-Match failed: %v", err))
	}
	if c.Swap {
		// The right ETag must be taken, quoted or not.
		e := etag
		err := put(&e, nil)
		if refused(err) {
			u := strings.Trim(e, `"`)
			if err = put(&u, nil); err == nil {
				c.Unquoted = true
			}
		}
		if err != nil {
			c.Swap = false
			whys = append(whys, fmt.Sprintf("a PUT with the object's own ETag in If-Match failed: %v", err))
		}
	}
	switch err := del(wrong); {
	case refused(err):
		c.Delete = true
	case err == nil:
		whys = append(whys, "a DELETE with a wrong If-Match deleted the object")
	default:
		whys = append(whys, fmt.Sprintf("a DELETE with If-Match failed: %v", err))
	}
	if err := del(nil); err != nil {
		return c, probeErr("delete", err)
	}
	// On an absent object, If-Match must fail too (else two
	// DeleteVersions of one version could both succeed).
	if c.Swap {
		switch err := put(wrong, nil); {
		case refused(err) || status(err) == 404:
		case err == nil:
			c.Swap = false
			whys = append(whys, "a PUT with If-Match created an absent object")
		default:
			return c, probeErr("PUT with If-Match of an absent object", err)
		}
	}
	if c.Delete {
		switch err := del(wrong); {
		case refused(err) || status(err) == 404:
			c.DeleteGone = true
		case err == nil: // DeleteVersion claims with a tombstone first
		default:
			return c, probeErr("DELETE with If-Match of an absent object", err)
		}
	}
	c.Why = strings.Join(whys, "; ")
	return c, nil
}

// nonce returns 8 random bytes.
func nonce() []byte {
	b := make([]byte, 8)
	rand.Read(b)
	return b
}

// seal returns data followed by the trailer with nonce n and the
// replaced version prev. The nonce makes every write's body, hence its
// ETag, unique: a version never comes back when the same bytes are
// written again.
func seal(data, n []byte, prev objstore.Version) []byte {
	b := make([]byte, len(data)+trailerLen)
	copy(b, data)
	copy(b[len(data):], n)
	binary.LittleEndian.PutUint64(b[len(data)+8:], uint64(prev))
	copy(b[len(data)+16:], magic[:])
	return b
}

// unseal checks and strips the trailer.
func unseal(key string, b []byte) ([]byte, error) {
	if len(b) < trailerLen || !bytes.Equal(b[len(b)-8:], magic[:]) {
		return nil, fmt.Errorf("%w: s3: %s was not written by archip (no trailer): remove it or use another prefix", objstore.ErrCorrupt, key)
	}
	return b[:len(b)-trailerLen], nil
}

// versionOf maps an ETag to a Version: FNV-1a 64 of the ETag without its
// quotes, 0 taken to 1. Each write has its own ETag (see seal), so two
// writes of one object share a version only if their ETags collide in 64
// bits: about 2^-64 for a given pair.
func versionOf(etag string) objstore.Version {
	e := strings.TrimPrefix(etag, "W/")
	e = strings.Trim(e, `"`)
	h := fnv.New64a()
	h.Write([]byte(e))
	v := objstore.Version(h.Sum64())
	if v == 0 {
		v = 1
	}
	return v
}

// seen records etag and returns its version.
func (s *Store) seen(etag string) objstore.Version {
	v := versionOf(etag)
	s.mu.Lock()
	if len(s.etags) >= maxETags {
		clear(s.etags)
	}
	s.etags[v] = etag
	s.mu.Unlock()
	return v
}

func (s *Store) key(name string) string { return s.kp + name }

// tombstones reports whether DeleteVersion writes tombstones here.
func (s *Store) tombstones() bool { return !(s.cond.Delete && s.cond.DeleteGone) }

// matchForm returns etag as If-Match takes it on this server.
func (s *Store) matchForm(etag string) string {
	if s.cond.Unquoted {
		return strings.Trim(etag, `"`)
	}
	return etag
}

func (s *Store) check(name string) error {
	if s.closed.Load() {
		return objstore.ErrClosed
	}
	return objstore.ValidName(name)
}

// try runs one attempt of a request, within the concurrency limit and
// the attempt timeout.
func (s *Store) try(ctx context.Context, fn func(ctx context.Context) error) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.sem }()
	actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	return fn(actx)
}

// idem runs a request whose repetition is harmless, retrying transient
// failures. It returns the last attempt's unmapped error.
func (s *Store) idem(ctx context.Context, fn func(ctx context.Context) error) error {
	for n := 1; ; n++ {
		err := s.try(ctx, fn)
		if err == nil || classify(ctx, err) == final || n >= s.cfg.Attempts {
			return err
		}
		if sleep(ctx, backoff(n)) != nil {
			return err
		}
	}
}

// noKey reports whether err says the object does not exist (a 404 of a
// HEAD has no body, hence no code; other 404s say what is missing: a
// bucket, versitygw's user of an unknown key).
func noKey(err error) bool {
	c := code(err)
	return c == "NoSuchKey" || status(err) == 404 && (c == "NotFound" || c == "")
}

// nameClash reports whether err says the name cannot be an object on
// this server because it is a directory of other objects, or one of its
// directories is an object (versitygw keeps objects as files: 409
// ExistingObjectIsDirectory, ObjectParentIsFile). No condition failed.
func nameClash(err error) bool {
	c := code(err)
	return c == "ExistingObjectIsDirectory" || c == "ObjectParentIsFile"
}

// condFailed reports whether err says a conditional request's condition
// failed (412, or a 409 other than a name clash or AWS's
// ConditionalRequestConflict, which decides nothing: see classify).
func condFailed(err error) bool {
	st := status(err)
	return st == 412 || st == 409 && !nameClash(err) && code(err) != "ConditionalRequestConflict"
}

// mapErr maps an SDK error to the objstore sentinels.
func (s *Store) mapErr(ctx context.Context, op, key string, err error) error {
	st, c := status(err), code(err)
	switch {
	case c == "NoSuchBucket":
		return fmt.Errorf("s3: %s %s: bucket %q does not exist: create it first", op, key, s.cfg.Bucket)
	case noKey(err):
		return fmt.Errorf("%w: s3: %s", objstore.ErrNotFound, key)
	case nameClash(err):
		return fmt.Errorf("%w: s3: %s %s: on this server a name cannot be both an object and a directory of others (%s)", objstore.ErrBadName, op, key, c)
	case st == 412 || st == 409 && c == "ConditionalRequestConflict" || c == "PreconditionFailed":
		return fmt.Errorf("%w: s3: %s %s", objstore.ErrConflict, op, key)
	case st == 507 || c == "QuotaExceeded" || c == "InsufficientStorage":
		return fmt.Errorf("%w: s3: %s %s: %v", objstore.ErrNoSpace, op, key, err)
	case st == 501 || c == "NotImplemented":
		return fmt.Errorf("%w: s3: %s %s: %v", objstore.ErrUnsupport, op, key, err)
	case st == 403 || c == "AccessDenied" || c == "InvalidAccessKeyId" || c == "SignatureDoesNotMatch" || c == "XAdminUserNotFound":
		return fmt.Errorf("s3: %s %s: access denied: check the keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or the profile) and the bucket's policy: %v", op, key, err)
	}
	return transient(ctx, op, key, err)
}

func (s *Store) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := s.check(name); err != nil {
		return err
	}
	if off < 0 || off+int64(len(p)) < off {
		return fmt.Errorf("s3: bad range offset %d length %d", off, len(p))
	}
	if len(p) == 0 {
		_, err := s.Stat(ctx, name)
		return err
	}
	key := s.key(name)
	var gone, past bool
	err := s.idem(ctx, func(ctx context.Context) error {
		out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: &key,
			Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+int64(len(p))-1))})
		if status(err) == 416 { // the object exists and ends before off
			past = true
			return nil
		}
		if err != nil {
			return err
		}
		defer out.Body.Close()
		if gone = deleted(out.Metadata); gone {
			return nil
		}
		start, total, ok := contentRange(aws.ToString(out.ContentRange))
		if !ok { // the whole object (a server that ignored Range)
			b, err := io.ReadAll(out.Body)
			if err != nil {
				return err
			}
			d, err := unseal(key, b)
			if err != nil {
				return err
			}
			n := 0
			if off < int64(len(d)) {
				n = copy(p, d[off:])
			}
			clear(p[n:])
			return nil
		}
		if start != off {
			return fmt.Errorf("s3: %s: asked for bytes from %d, got from %d", key, off, start)
		}
		// From Content-Range, not Content-Length: a chunked answer has
		// none, and a short body must fail, not read as zeros.
		n := min(int64(len(p)), total-off)
		if _, err := io.ReadFull(out.Body, p[:n]); err != nil {
			return err
		}
		valid := max(0, min(n, total-trailerLen-off))
		clear(p[valid:])
		return nil
	})
	if err != nil {
		return s.mapErr(ctx, "GET", key, err)
	}
	if gone {
		return fmt.Errorf("%w: s3: %s (deleted)", objstore.ErrNotFound, key)
	}
	if past {
		if _, err := s.head(ctx, name); err != nil { // a tombstone?
			return err
		}
		clear(p)
	}
	return nil
}

// contentRange parses "bytes START-END/TOTAL".
func contentRange(h string) (start, total int64, ok bool) {
	r, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, 0, false
	}
	rng, tot, ok := strings.Cut(r, "/")
	if !ok {
		return 0, 0, false
	}
	a, _, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	total, err2 := strconv.ParseInt(tot, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || total < start {
		return 0, 0, false
	}
	return start, total, true
}

func (s *Store) Get(ctx context.Context, name string) ([]byte, objstore.Version, error) {
	if err := s.check(name); err != nil {
		return nil, 0, err
	}
	key := s.key(name)
	var b []byte
	var etag string
	var gone bool
	err := s.idem(ctx, func(ctx context.Context) error {
		out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: &key})
		if err != nil {
			return err
		}
		defer out.Body.Close()
		etag = aws.ToString(out.ETag)
		gone = deleted(out.Metadata)
		b, err = io.ReadAll(out.Body)
		return err
	})
	if err != nil {
		return nil, 0, s.mapErr(ctx, "GET", key, err)
	}
	if gone {
		return nil, 0, fmt.Errorf("%w: s3: %s (deleted)", objstore.ErrNotFound, key)
	}
	d, err := unseal(key, b)
	if err != nil {
		return nil, 0, err
	}
	return d, s.seen(etag), nil
}

func (s *Store) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if err := s.check(name); err != nil {
		return 0, err
	}
	key := s.key(name)
	var etag string
	err := s.idem(ctx, func(ctx context.Context) error {
		// A nonce per attempt: an attempt given up on may still land
		// later, and must then be a version of its own.
		body := seal(data, nonce(), 0)
		out, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.cfg.Bucket, Key: &key,
			Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body)))})
		if err == nil {
			etag = aws.ToString(out.ETag)
		}
		return err
	})
	if err != nil {
		return 0, s.mapErr(ctx, "PUT", key, err)
	}
	if etag == "" {
		return 0, fmt.Errorf("s3: PUT %s: the server returned no ETag", key)
	}
	return s.seen(etag), nil
}

// errRefused: a conditional request's condition failed.
var errRefused = errors.New("s3: condition failed")

// condPut PUTs data if the object's ETag is ifMatch (""): if it is
// absent). It returns errRefused when the condition failed and this
// write certainly did not land.
//
// An attempt that failed without an answer (a timeout, a reset) may
// have landed: the retry's 412 may then be our own write's doing. The
// body's nonce tells: if the object holds this write, the write
// succeeded; if not, the outcome is unknown (it may have landed and been
// replaced) and the error is no refusal. Each attempt has a nonce of its
// own: one given up on may land after the write returned (and after
// later writes, if its condition holds again, as If-None-Match does
// after a delete), and must then be a version never seen before.
func (s *Store) condPut(ctx context.Context, op, name string, data []byte, ifMatch string, meta map[string]string) (objstore.Version, error) {
	key := s.key(name)
	lock := s.stripe(name)
	select {
	case lock <- struct{}{}:
	case <-ctx.Done():
		return 0, fmt.Errorf("s3: %s %s: %w", op, key, ctx.Err())
	}
	defer func() { <-lock }()
	var prev objstore.Version
	if ifMatch != "" {
		prev = versionOf(ifMatch)
	}
	var nonces [][]byte // of the attempts sent
	var uncertain error
	unknown := func(err error) error {
		return fmt.Errorf("%w (after an earlier attempt whose outcome is unknown; the write may have happened: read the object to know)", transient(ctx, op, key, uncertain))
	}
	for n := 1; ; n++ {
		var etag string
		n8 := nonce()
		nonces = append(nonces, n8)
		body := seal(data, n8, prev)
		err := s.try(ctx, func(ctx context.Context) error {
			in := &s3.PutObjectInput{Bucket: &s.cfg.Bucket, Key: &key,
				Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))), Metadata: meta}
			if ifMatch == "" {
				in.IfNoneMatch = aws.String("*")
			} else {
				in.IfMatch = aws.String(s.matchForm(ifMatch))
			}
			out, err := s.client.PutObject(ctx, in)
			if err == nil {
				etag = aws.ToString(out.ETag)
			}
			return err
		})
		if err == nil {
			if etag == "" {
				return 0, fmt.Errorf("s3: %s %s: the server returned no ETag", op, key)
			}
			return s.seen(etag), nil
		}
		if condFailed(err) || ifMatch != "" && noKey(err) {
			if uncertain == nil {
				return 0, errRefused
			}
			v, ours, theirPrev, lerr := s.holds(ctx, key, nonces)
			if lerr == nil && ours {
				return v, nil
			}
			if lerr == nil && prev != 0 && theirPrev == prev {
				// Another write replaced prev directly: ours
				// never landed (it would have changed prev
				// first), and never will (prev is gone for good).
				// radosgw answers the loser of a race of
				// If-Match PUTs with a 500 (ECANCELED).
				return 0, errRefused
			}
			return 0, unknown(err)
		}
		switch classify(ctx, err) {
		case final:
			if uncertain != nil {
				return 0, unknown(err)
			}
			return 0, s.mapErr(ctx, op, key, err)
		case maybeApplied:
			if uncertain == nil {
				uncertain = err
			}
		}
		if n >= s.cfg.Attempts || sleep(ctx, backoff(n)) != nil {
			if uncertain != nil {
				return 0, unknown(err)
			}
			return 0, s.mapErr(ctx, op, key, err)
		}
	}
}

// holds reports whether the object holds a write whose nonce is one of
// nonces, and its version; else the version the write it holds replaced
// (0 if unknown or absent).
func (s *Store) holds(ctx context.Context, key string, nonces [][]byte) (objstore.Version, bool, objstore.Version, error) {
	var tail []byte
	var etag string
	err := s.idem(ctx, func(ctx context.Context) error {
		out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: &key, Range: aws.String(fmt.Sprintf("bytes=-%d", trailerLen))})
		if err != nil {
			return err
		}
		defer out.Body.Close()
		etag = aws.ToString(out.ETag)
		tail, err = io.ReadAll(out.Body)
		return err
	})
	if err != nil {
		if objstore.IsNotExist(s.mapErr(ctx, "GET", key, err)) {
			return 0, false, 0, nil
		}
		return 0, false, 0, err
	}
	if len(tail) != trailerLen || !bytes.Equal(tail[16:], magic[:]) {
		return 0, false, 0, nil
	}
	for _, n8 := range nonces {
		if bytes.Equal(tail[:8], n8) {
			return s.seen(etag), true, 0, nil
		}
	}
	return 0, false, objstore.Version(binary.LittleEndian.Uint64(tail[8:16])), nil
}

func (s *Store) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if err := s.check(name); err != nil {
		return 0, err
	}
	if !s.cond.Create {
		return 0, s.refuse("Create", name)
	}
	v, err := s.create(ctx, name, data)
	if errors.Is(err, errRefused) {
		return 0, fmt.Errorf("%w: s3: %s", objstore.ErrExists, s.key(name))
	}
	return v, err
}

// create PUTs data if the object is absent or a tombstone; errRefused if
// it exists.
func (s *Store) create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	for tries := 0; ; tries++ {
		v, err := s.condPut(ctx, "PUT If-None-Match", name, data, "", nil)
		if !errors.Is(err, errRefused) || !s.tombstones() || tries == 8 {
			return v, err
		}
		h, err := s.headRaw(ctx, name)
		if objstore.IsNotExist(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return 0, err
		}
		if !h.deleted {
			return 0, errRefused
		}
		v, err = s.condPut(ctx, "PUT If-Match (over a tombstone)", name, data, h.etag, nil)
		if !errors.Is(err, errRefused) {
			return v, err
		}
	}
}

func (s *Store) refuse(op, name string) error {
	return fmt.Errorf("%w: s3: %s of %s: %s (the probe found: %s)", objstore.ErrUnsupport, op, s.key(name), unsupported, s.cond.Why)
}

// etagOf returns the ETag of the object's version old, or ErrConflict
// (or ErrNotFound) if the object is not at old now.
func (s *Store) etagOf(ctx context.Context, name string, old objstore.Version, useCache bool) (string, error) {
	if useCache {
		s.mu.Lock()
		e, ok := s.etags[old]
		s.mu.Unlock()
		if ok {
			return e, nil
		}
	}
	e, err := s.head(ctx, name)
	if err != nil {
		return "", err
	}
	if versionOf(e.etag) != old {
		return "", fmt.Errorf("%w: s3: %s is not at version %x", objstore.ErrConflict, s.key(name), old)
	}
	return e.etag, nil
}

func (s *Store) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	if err := s.check(name); err != nil {
		return 0, err
	}
	if !s.cond.Create || !s.cond.Swap {
		return 0, s.refuse("Swap", name)
	}
	conflict := fmt.Errorf("%w: s3: %s is not at version %x", objstore.ErrConflict, s.key(name), old)
	etag := ""
	if old != 0 {
		// A stale cached ETag only makes the server refuse: the
		// condition is still the version's.
		e, err := s.etagOf(ctx, name, old, true)
		if objstore.IsNotExist(err) || errors.Is(err, objstore.ErrConflict) {
			return 0, conflict
		}
		if err != nil {
			return 0, err
		}
		etag = e
	}
	var v objstore.Version
	var err error
	if old == 0 {
		v, err = s.create(ctx, name, data)
	} else {
		v, err = s.condPut(ctx, "PUT If-Match", name, data, etag, nil)
	}
	if errors.Is(err, errRefused) {
		return 0, conflict
	}
	return v, err
}

func (s *Store) Delete(ctx context.Context, name string) error {
	if err := s.check(name); err != nil {
		return err
	}
	key := s.key(name)
	if !s.cond.Delete {
		// S3 answers a DELETE of an absent key with success.
		if _, err := s.head(ctx, name); err != nil {
			return err
		}
		err := s.idem(ctx, func(ctx context.Context) error {
			_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: &key})
			return err
		})
		if err != nil {
			return s.mapErr(ctx, "DELETE", key, err)
		}
		return nil
	}
	// Each DELETE names the ETag a HEAD found, so that an attempt given
	// up on that lands late cannot delete a later write of the name.
	for tries := 0; ; tries++ {
		h, err := s.head(ctx, name)
		if err != nil {
			return err
		}
		err = s.deleteIfMatch(ctx, name, h.etag, true)
		if !errors.Is(err, errRefused) {
			return err
		}
		if tries == 8 {
			return fmt.Errorf("s3: DELETE %s: the object changed at each of %d tries; nothing was deleted", key, tries+1)
		}
	}
}

// deleteIfMatch DELETEs the object if its ETag is etag. It returns
// errRefused when the condition failed (or the object is gone) and this
// request certainly deleted nothing. After an attempt whose outcome is
// unknown, a gone object is success if goneOK, else an unknown outcome.
func (s *Store) deleteIfMatch(ctx context.Context, name, etag string, goneOK bool) error {
	key := s.key(name)
	var uncertain error
	for n := 1; ; n++ {
		err := s.try(ctx, func(ctx context.Context) error {
			_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: &key, IfMatch: aws.String(s.matchForm(etag))})
			return err
		})
		if err == nil {
			return nil
		}
		if condFailed(err) || noKey(err) {
			if uncertain == nil {
				return errRefused
			}
			if goneOK && noKey(err) {
				return nil
			}
			// Gone or changed: by our earlier attempt, or by
			// another client.
			return fmt.Errorf("%w (after an earlier attempt whose outcome is unknown: the delete may have happened)", transient(ctx, "DELETE If-Match", key, uncertain))
		}
		switch classify(ctx, err) {
		case final:
			if uncertain != nil {
				return fmt.Errorf("%w (after an earlier attempt whose outcome is unknown)", transient(ctx, "DELETE If-Match", key, uncertain))
			}
			return s.mapErr(ctx, "DELETE If-Match", key, err)
		case maybeApplied:
			if uncertain == nil {
				uncertain = err
			}
		}
		if n >= s.cfg.Attempts || sleep(ctx, backoff(n)) != nil {
			if uncertain != nil {
				return transient(ctx, "DELETE If-Match", key, uncertain)
			}
			return s.mapErr(ctx, "DELETE If-Match", key, err)
		}
	}
}

func (s *Store) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	if err := s.check(name); err != nil {
		return err
	}
	if s.tombstones() && !(s.cond.Create && s.cond.Swap) {
		return s.refuse("DeleteVersion", name)
	}
	key := s.key(name)
	if old == 0 {
		if _, err := s.head(ctx, name); err != nil {
			return err
		}
		return fmt.Errorf("%w: s3: %s exists (DeleteVersion from version 0)", objstore.ErrConflict, key)
	}
	// Not from the cache: an absent object must say ErrNotFound.
	etag, err := s.etagOf(ctx, name, old, false)
	if err != nil {
		return err
	}
	if s.tombstones() {
		return s.deleteClaimed(ctx, name, old, etag)
	}
	err = s.deleteIfMatch(ctx, name, etag, false)
	if errors.Is(err, errRefused) {
		if _, err := s.head(ctx, name); err != nil {
			return err // ErrNotFound: someone deleted it meanwhile
		}
		return fmt.Errorf("%w: s3: %s is not at version %x", objstore.ErrConflict, key, old)
	}
	return err
}

type headInfo struct {
	etag    string
	size    int64
	mod     time.Time
	deleted bool // a tombstone
}

// head is headRaw with tombstones absent.
func (s *Store) head(ctx context.Context, name string) (headInfo, error) {
	h, err := s.headRaw(ctx, name)
	if err == nil && h.deleted {
		return h, fmt.Errorf("%w: s3: %s (deleted)", objstore.ErrNotFound, s.key(name))
	}
	return h, err
}

func (s *Store) headRaw(ctx context.Context, name string) (headInfo, error) {
	key := s.key(name)
	var h headInfo
	err := s.idem(ctx, func(ctx context.Context) error {
		out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: &key})
		if err != nil {
			return err
		}
		h = headInfo{etag: aws.ToString(out.ETag), size: aws.ToInt64(out.ContentLength), mod: aws.ToTime(out.LastModified), deleted: deleted(out.Metadata)}
		return nil
	})
	if err != nil {
		return h, s.mapErr(ctx, "HEAD", key, err)
	}
	if h.size < trailerLen {
		return h, fmt.Errorf("%w: s3: %s was not written by archip (%d bytes, no trailer): remove it or use another prefix", objstore.ErrCorrupt, key, h.size)
	}
	return h, nil
}

// FreshStat reports true: Stat is a HEAD answered by the server, and the
// servers this store targets (AWS S3 since December 2020, radosgw,
// versitygw) are strongly consistent: a HEAD after a PUT's answer, from
// any client, sees it. (A server that is only eventually consistent must
// not be used for volumes' write logs: a flush's head check would not
// see a takeover.)
func (s *Store) FreshStat() bool { return true }

func (s *Store) Stat(ctx context.Context, name string) (objstore.Info, error) {
	if err := s.check(name); err != nil {
		return objstore.Info{}, err
	}
	h, err := s.head(ctx, name)
	if err != nil {
		return objstore.Info{}, err
	}
	return objstore.Info{Name: name, Size: h.size - trailerLen, Version: s.seen(h.etag), ModTime: h.mod}, nil
}

// List lists with ListObjectsV2, which gives each key's size, ETag and
// time: a listing costs no request per object (no NameLister needed).
func (s *Store) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	return s.list(ctx, prefix, "", func(in objstore.Info) error {
		if in.Size == 0 && s.tombstones() {
			// Maybe a tombstone (a listing shows no metadata).
			h, err := s.headRaw(ctx, in.Name)
			if objstore.IsNotExist(err) || err == nil && h.deleted {
				return nil
			}
			if err != nil {
				return err
			}
			in.Version, in.ModTime = versionOf(h.etag), h.mod
		}
		return fn(in)
	})
}

// ListNamesAfter lists in key order from after on (objstore.OrderedLister:
// ListObjectsV2's StartAfter), a page of keys per request. Tombstones may
// come, as absent names.
func (s *Store) ListNamesAfter(ctx context.Context, prefix, after string, fn func(string) error) error {
	return s.list(ctx, prefix, after, func(in objstore.Info) error { return fn(in.Name) })
}

// list calls fn with each object ListObjectsV2 lists under prefix after
// after, in key order, tombstones included.
func (s *Store) list(ctx context.Context, prefix, after string, fn func(objstore.Info) error) error {
	if s.closed.Load() {
		return objstore.ErrClosed
	}
	kp := s.kp + prefix
	var start *string
	if after != "" {
		start = aws.String(s.kp + after)
	}
	var token *string
	for {
		var out *s3.ListObjectsV2Output
		err := s.idem(ctx, func(ctx context.Context) error {
			var err error
			out, err = s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &s.cfg.Bucket, Prefix: &kp, StartAfter: start, ContinuationToken: token})
			return err
		})
		if err != nil {
			return s.mapErr(ctx, "LIST", kp, err)
		}
		for _, o := range out.Contents {
			name, ok := strings.CutPrefix(aws.ToString(o.Key), s.kp)
			if !ok || objstore.ValidName(name) != nil {
				continue // the probe's, or not ours
			}
			in := objstore.Info{Name: name, Size: max(0, aws.ToInt64(o.Size)-trailerLen), Version: versionOf(aws.ToString(o.ETag)), ModTime: aws.ToTime(o.LastModified)}
			if err := fn(in); err != nil {
				return err
			}
		}
		if !aws.ToBool(out.IsTruncated) || out.NextContinuationToken == nil {
			return nil
		}
		token = out.NextContinuationToken
	}
}

func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// deleteClaimed is DeleteVersion on a server whose DELETE with If-Match
// succeeds on an absent object: it claims the object's version old
// (whose ETag is etag) by replacing it with a tombstone, which only one
// claimant can do. The tombstone reads as absent; the next write of the
// name replaces it (see Conditional.DeleteGone for why no DELETE).
func (s *Store) deleteClaimed(ctx context.Context, name string, old objstore.Version, etag string) error {
	key := s.key(name)
	_, err := s.condPut(ctx, "PUT If-Match (tombstone)", name, nil, etag, map[string]string{metaKey: metaDeleted})
	if errors.Is(err, errRefused) {
		if _, err := s.head(ctx, name); err != nil {
			return err // ErrNotFound: someone deleted it meanwhile
		}
		return fmt.Errorf("%w: s3: %s is not at version %x", objstore.ErrConflict, key, old)
	}
	return err
}
