package s3

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/aws/aws-sdk-go-v2/aws"
)

// Defaults of the URL's tuning parameters.
const (
	DefaultConcurrency = 32
	DefaultTimeout     = 60 * time.Second
	DefaultAttempts    = 6
)

// Config is a parsed s3:// URL.
type Config struct {
	Bucket string
	// Prefix is prepended, with a slash, to every object name ("" for
	// none). It is a valid object name itself.
	Prefix string
	// Endpoint is the server's base URL (http:// or https://); "" for AWS.
	Endpoint string
	// Region; "" takes the SDK's (AWS_REGION, shared config), else
	// us-east-1.
	Region string
	// PathStyle addresses the bucket in the path (http://host/bucket/key)
	// rather than in the host name. Default: on with an endpoint, off
	// without (AWS).
	PathStyle bool
	// CA is a PEM file of the certificate authorities to trust for TLS
	// (added to the system's).
	CA string
	// Profile names the shared-config profile ("" for AWS_PROFILE or
	// default).
	Profile string
	// Concurrency bounds the requests in flight.
	Concurrency int
	// Timeout bounds each request attempt.
	Timeout time.Duration
	// Attempts bounds the tries of one operation (retries + 1).
	Attempts int

	// Credentials, if set, replaces the SDK's credential chain (tests,
	// embedding). Never taken from a URL.
	Credentials aws.CredentialsProvider
	// NoConditional makes the store act as if the server lacked
	// conditional writes, whatever the probe finds (tests of the refusal
	// and of the split configuration). Never taken from a URL.
	NoConditional bool
}

// Usage is the URL form, as shown in errors.
const Usage = "s3://BUCKET/PREFIX?endpoint=URL&region=R&path_style=true|false&ca=FILE&profile=P&concurrency=N&timeout=DURATION&attempts=N"

// ParseURL parses an s3:// URL. Keys are never accepted in the URL: they
// come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY),
// the shared config and credentials files, or a profile.
func ParseURL(u *url.URL) (Config, error) {
	bad := func(format string, a ...any) (Config, error) {
		return Config{}, fmt.Errorf("%w: %s: %s (form: %s)", objstore.ErrBadURL, redact(u), fmt.Sprintf(format, a...), Usage)
	}
	if u.Scheme != "s3" {
		return bad("scheme is not s3")
	}
	if u.User != nil {
		return bad("keys do not belong in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use a profile of the shared credentials file")
	}
	if u.Opaque != "" {
		return bad("write s3://BUCKET/PREFIX")
	}
	if u.Fragment != "" {
		return bad("unexpected #fragment")
	}
	c := Config{Bucket: u.Host, Concurrency: DefaultConcurrency, Timeout: DefaultTimeout, Attempts: DefaultAttempts}
	if err := validBucket(c.Bucket); err != nil {
		return bad("%v", err)
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if err := objstore.ValidName(p); err != nil {
			return bad("prefix %q: components of [A-Za-z0-9._-] separated by single slashes", p)
		}
		c.Prefix = p
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("query: %v", err)
	}
	pathStyle := ""
	for k, vs := range q {
		if len(vs) != 1 {
			return bad("parameter %q given %d times", k, len(vs))
		}
		v := vs[0]
		switch k {
		case "endpoint":
			e, err := url.Parse(v)
			if err == nil && e.User != nil {
				return bad("the endpoint holds keys: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use a profile")
			}
			if err != nil || e.Scheme != "http" && e.Scheme != "https" || e.Host == "" || e.RawQuery != "" || e.Fragment != "" {
				// Not echoed: a bad endpoint may hold keys or a
				// signed query.
				return bad("endpoint: want http://HOST[:PORT] or https://HOST[:PORT]")
			}
			c.Endpoint = v
		case "region":
			if v == "" || strings.ContainsAny(v, " /?#") {
				return bad("region %q", v)
			}
			c.Region = v
		case "path_style":
			if v != "true" && v != "false" {
				return bad("path_style=%q: true or false", v)
			}
			pathStyle = v
		case "ca":
			if v == "" {
				return bad("ca is empty: name a PEM file")
			}
			c.CA = v
		case "profile":
			if v == "" {
				return bad("profile is empty")
			}
			c.Profile = v
		case "concurrency":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 4096 {
				return bad("concurrency=%q: 1..4096", v)
			}
			c.Concurrency = n
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 || d > time.Hour {
				return bad("timeout=%q: a duration such as 30s, at most 1h", v)
			}
			c.Timeout = d
		case "attempts":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100 {
				return bad("attempts=%q: 1..100", v)
			}
			c.Attempts = n
		default:
			return bad("unknown parameter %q", k)
		}
	}
	c.PathStyle = pathStyle == "true" || pathStyle == "" && c.Endpoint != ""
	return c, nil
}

// validBucket accepts the bucket names S3 servers take (AWS's rules are
// stricter: lowercase; the server has the last word).
func validBucket(b string) error {
	if len(b) < 3 || len(b) > 255 {
		return fmt.Errorf("bucket %q: 3 to 255 characters", b)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("bucket %q: byte %q not allowed", b, c)
		}
	}
	return nil
}

// redact returns the URL for messages: without user info or query
// (either may hold keys).
func redact(u *url.URL) string {
	c := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return c.String()
}

// String returns the URL c was parsed from, in canonical form (tuning
// parameters at their defaults omitted).
func (c Config) String() string {
	u := url.URL{Scheme: "s3", Host: c.Bucket, Path: "/" + c.Prefix}
	q := url.Values{}
	if c.Endpoint != "" {
		q.Set("endpoint", c.Endpoint)
	}
	if c.Region != "" {
		q.Set("region", c.Region)
	}
	if c.PathStyle != (c.Endpoint != "") {
		q.Set("path_style", strconv.FormatBool(c.PathStyle))
	}
	if c.CA != "" {
		q.Set("ca", c.CA)
	}
	if c.Profile != "" {
		q.Set("profile", c.Profile)
	}
	if c.Concurrency != DefaultConcurrency {
		q.Set("concurrency", strconv.Itoa(c.Concurrency))
	}
	if c.Timeout != DefaultTimeout {
		q.Set("timeout", c.Timeout.String())
	}
	if c.Attempts != DefaultAttempts {
		q.Set("attempts", strconv.Itoa(c.Attempts))
	}
	u.RawQuery = q.Encode()
	return u.String()
}
