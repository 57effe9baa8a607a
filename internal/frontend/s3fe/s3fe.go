// Package s3fe is the S3 frontend of the node daemon: an S3-compatible
// HTTP API over the buckets and objects of package bucket, whose objects
// share their blocks with volumes and images.
//
// # Why an in-house subset on net/http, not an embedded gateway
//
// github.com/versity/versitygw (Apache-2.0) embeds as a gateway with a
// custom backend and verifies SigV4 in every form. It was weighed and not
// taken, because:
//   - it runs its own listener (fiber on fasthttp) and only one gateway
//     per process, while a daemon frontend serves the listeners the core
//     opens (daemon.Frontend) and tests run many servers in one process;
//   - it pulls in about 290 packages (LDAP, Vault, Kafka, NATS clients),
//     a large surface to build, audit and keep current for a store that
//     needs one access-key file;
//   - its quirks need workarounds in every backend (GetBucketAcl as the
//     existence check, object-lock errors, strings whose memory it reuses
//     after a request), and its metrics are statsd only, where the daemon
//     has its own.
//
// The cost is SigV4, written here (sigv4.go) from the specification, not
// by re-signing with an SDK signer: the canonical request is rebuilt from
// the request as received (path re-encoded as S3 does, query sorted,
// signed headers as sent), in the header form, the presigned query form,
// signed streaming chunks (STREAMING-AWS4-HMAC-SHA256-PAYLOAD, each
// chunk's signature checked) and unsigned streaming with trailers
// (STREAMING-UNSIGNED-PAYLOAD-TRAILER, and the signed
// ...-PAYLOAD-TRAILER: the trailing checksum x-amz-trailer announces is
// verified, the trailer's own signature is not; the data's MD5 is the
// ETag). An aws-chunked body must give x-amz-decoded-content-length. A signed payload hash is
// checked as the body streams: a mismatch fails the upload before
// anything becomes visible. Every x-amz-* header sent must be signed (as
// S3 requires: a copy source or metadata added to a captured request
// would change what it does); other headers (Range, the conditional
// ones) need not be.
//
// # Surface
//
// Path-style requests only (http://HOST:PORT/BUCKET/KEY; clients set
// path style or use an IP endpoint). ListBuckets, Create/Delete/Head
// Bucket, GetBucketLocation, GetBucketVersioning (never enabled),
// Put/Get/Head/DeleteObject with ranges and conditional headers
// (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since; on
// PUT If-None-Match: * and If-Match), CopyObject (copies the record: the
// same maps), DeleteObjects, ListObjects v1 and v2 (prefix, delimiter,
// pagination), multipart (create, upload part, complete, abort, list
// parts, list uploads). User metadata up to 2 KB, as S3. Anything else
// is NotImplemented. Every request
// must be signed with a configured access key: there is no anonymous
// access and no ACL (every key may do everything).
//
// Memory: at most 16 uploads store data at once, each with about 24 MiB
// of block buffers (package bucket); more wait their turn. Downloads read
// one block at a time. At most 16 XML bodies (complete, delete; 4 MiB
// each at most) are read at once. A request body that sends nothing for a minute
// fails with RequestTimeout, freeing its slot (and the hold on
// collections an upload takes); a download whose client reads nothing
// for a minute is cut off.
package s3fe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/daemon"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/manage"
	"golang.org/x/net/netutil"
)

// holdLinger is how long the frontend keeps its hold on collections
// once no operation uses it.
const holdLinger = 2 * time.Second

// Config configures the S3 frontend.
type Config struct {
	// Listen lists the addresses to serve on: HOST:PORT or unix:PATH.
	Listen []string
	// Keys maps each access key to its secret; at least one.
	Keys map[string]string
	// TLSCert and TLSKey are PEM files: with them, the API is HTTPS.
	TLSCert, TLSKey string
	// Region is what GetBucketLocation answers ("" for us-east-1).
	// Requests signed for any region are accepted.
	Region string
	// Logf, if set, hears about every failed request.
	Logf func(format string, args ...any)
	// MaxConns is how many connections are served at once (0:
	// DefaultMaxConns); more wait in the listen queue until one closes.
	// Each request holds a block buffer or a few (4 MiB each by default)
	// while it moves data, so this bounds what clients make the daemon
	// hold.
	MaxConns int
}

// DefaultMaxConns is Config.MaxConns's default: 10 clients with the AWS
// CLI's 10 transfers at once, and room.
const DefaultMaxConns = 128

// Frontend returns c as a frontend of daemon.Run. Errors in how c was
// given are a *daemon.ConfigError.
func (c Config) Frontend() (daemon.FrontendConfig, error) {
	if len(c.Keys) == 0 {
		return daemon.FrontendConfig{}, &daemon.ConfigError{Err: errors.New("s3fe: no access keys: give a keys file or ARCHIP_S3_ACCESS_KEY and ARCHIP_S3_SECRET_KEY")}
	}
	var tc *tls.Config
	if c.TLSCert != "" || c.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return daemon.FrontendConfig{}, &daemon.ConfigError{Err: fmt.Errorf("s3fe: TLS certificate: %w", err)}
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if c.MaxConns < 0 {
		return daemon.FrontendConfig{}, &daemon.ConfigError{Err: fmt.Errorf("s3fe: %d connections at most: must be at least 1", c.MaxConns)}
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	return daemon.FrontendConfig{Name: "S3", Listen: c.Listen, New: func(d *daemon.Daemon) daemon.Frontend {
		b, hold := buckets(d.Manager(), holdLinger)
		return &Server{hold: hold, maxConns: c.MaxConns, srv: &http.Server{Handler: NewHandler(b, c.Keys, c.Region, c.Logf), TLSConfig: tc,
			ReadHeaderTimeout: 30 * time.Second, MaxHeaderBytes: 64 << 10, IdleTimeout: 2 * time.Minute}}
	}}, nil
}

// Server is the S3 frontend on a daemon.
type Server struct {
	srv      *http.Server
	hold     *gc.SharedHold
	maxConns int
	once     sync.Once
}

// Serve implements daemon.Frontend.
func (s *Server) Serve(l net.Listener) error {
	l = netutil.LimitListener(l, s.maxConns)
	var err error
	if s.srv.TLSConfig != nil {
		err = s.srv.ServeTLS(l, "", "")
	} else {
		err = s.srv.Serve(l)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown implements daemon.Frontend: in-flight requests finish, or are
// cut off when ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	s.hold.Close()
	return err
}

// buckets returns the buckets of m's store, as the frontend serves them:
// its operations share a hold on collections (gc.SharedHold), kept for
// linger once idle, so that an upload's parts in flight, and the
// uploads that follow, do not each create and delete one.
func buckets(m *manage.Manager, linger time.Duration) (*bucket.Store, *gc.SharedHold) {
	b := m.Buckets()
	sh := &gc.SharedHold{S: m.Store, Now: m.Now, Linger: linger}
	b.Hold = sh.Acquire
	return b, sh
}
