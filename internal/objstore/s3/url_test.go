package s3

import (
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want Config
	}{
		{"s3://bkt", Config{Bucket: "bkt"}},
		{"s3://bkt/", Config{Bucket: "bkt"}},
		{"s3://bkt/a/b/", Config{Bucket: "bkt", Prefix: "a/b"}},
		{"s3://bkt/p?endpoint=http://127.0.0.1:7070", Config{Bucket: "bkt", Prefix: "p", Endpoint: "http://127.0.0.1:7070", PathStyle: true}},
		{"s3://bkt?endpoint=https://s3.example.com&path_style=false&region=eu-1", Config{Bucket: "bkt", Endpoint: "https://s3.example.com", Region: "eu-1"}},
		{"s3://bkt?path_style=true&ca=/etc/ca.pem&profile=p&concurrency=4&timeout=5s&attempts=2", Config{Bucket: "bkt", PathStyle: true, CA: "/etc/ca.pem", Profile: "p", Concurrency: 4, Timeout: 5 * time.Second, Attempts: 2}},
	} {
		u, _ := url.Parse(tc.raw)
		got, err := ParseURL(u)
		want := tc.want
		if want.Concurrency == 0 {
			want.Concurrency = DefaultConcurrency
		}
		if want.Timeout == 0 {
			want.Timeout = DefaultTimeout
		}
		if want.Attempts == 0 {
			want.Attempts = DefaultAttempts
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.raw, got, err, want)
		}
	}
	for _, raw := range []string{
		"s3://", "s3://ab", "s3://b:1/", "s3://AK:SK@bkt/p", "s3://bkt/a//b", "s3://bkt/a b", "s3://bkt/..",
		"s3://bkt?bogus=1", "s3://bkt?endpoint=ftp://x", "s3://bkt?endpoint=http://", "s3://bkt?path_style=yes",
		"s3://bkt?concurrency=0", "s3://bkt?timeout=-1s", "s3://bkt?attempts=x", "s3://bkt?region=a&region=b",
		"s3://bkt#frag", "file:///x", "s3://bkt?ca=", "s3://bkt?endpoint=http://u:p@h",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		if c, err := ParseURL(u); !errors.Is(err, objstore.ErrBadURL) {
			t.Errorf("ParseURL(%q) = %+v, %v; want ErrBadURL", raw, c, err)
		} else if strings.Contains(err.Error(), ":SK@") || strings.Contains(err.Error(), "u:p@") {
			t.Errorf("ParseURL(%q): the error shows the keys: %v", raw, err)
		}
	}
}

// FuzzParseURL: ParseURL never panics, accepts only what it documents,
// never echoes a URL's password, and what it accepts renders back (String)
// to a URL that parses to the same configuration.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"s3://bkt/p?endpoint=http://127.0.0.1:7070&region=r&path_style=false", "s3://a.b-c_d/x/y?ca=/c.pem&profile=p&concurrency=3&timeout=1m&attempts=9", "s3://u:secret@bkt", "s3://bkt/%2e%2e?endpoint=http://h:1/path"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		c, err := ParseURL(u)
		if err != nil {
			if !errors.Is(err, objstore.ErrBadURL) {
				t.Fatalf("ParseURL(%q): %v is no ErrBadURL", raw, err)
			}
			// The error is the same whatever the password: it shows
			// none of it. (Looking for the password in the error's text
			// would take a password that is also text around another
			// part, such as "000:" after the host "000", for a leak.)
			if _, ok := u.User.Password(); ok {
				other := *u
				other.User = url.UserPassword(u.User.Username(), "another-password")
				if _, err2 := ParseURL(&other); err2 == nil || err2.Error() != err.Error() {
					t.Fatalf("ParseURL(%q): the error depends on the password: %v, and with another: %v", raw, err, err2)
				}
			}
			return
		}
		if validBucket(c.Bucket) != nil || c.Prefix != "" && objstore.ValidName(c.Prefix) != nil || c.Concurrency < 1 || c.Timeout <= 0 || c.Attempts < 1 {
			t.Fatalf("ParseURL(%q) accepted %+v", raw, c)
		}
		u2, err := url.Parse(c.String())
		if err != nil {
			t.Fatalf("%+v renders to %q: %v", c, c.String(), err)
		}
		c2, err := ParseURL(u2)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("%q → %+v → %q → %+v, %v", raw, c, c.String(), c2, err)
		}
	})
}

// TestParseURLHidesEndpointSecrets: a bad endpoint is not echoed with the
// keys or query it may hold, also when it does not parse.
func TestParseURLHidesEndpointSecrets(t *testing.T) {
	for _, raw := range []string{
		"s3://bkt?endpoint=http://AKID:SECRETKEY@host:x",
		"s3://bkt?endpoint=http://host/?X-Amz-Credential=SECRETKEY",
		"s3://bkt?endpoint=http://host%23SECRETKEY",
		"s3://bkt?endpoint=http%3A%2F%2FAKID%3ASECRETKEY%40h%25zz",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseURL(u)
		if !errors.Is(err, objstore.ErrBadURL) {
			t.Fatalf("ParseURL(%q) = %v; want ErrBadURL", raw, err)
		}
		if strings.Contains(err.Error(), "SECRETKEY") {
			t.Errorf("ParseURL(%q): the error shows the secret: %v", raw, err)
		}
	}
}

func TestContentRange(t *testing.T) {
	for _, tc := range []struct {
		h            string
		start, total int64
		ok           bool
	}{
		{"bytes 0-9/100", 0, 100, true},
		{"bytes 90-99/100", 90, 100, true},
		{"bytes */100", 0, 0, false},
		{"", 0, 0, false},
		{"bytes 5-1/3", 0, 0, false},
		{"items 0-1/2", 0, 0, false},
	} {
		s, n, ok := contentRange(tc.h)
		if s != tc.start || n != tc.total || ok != tc.ok {
			t.Errorf("contentRange(%q) = %d, %d, %v", tc.h, s, n, ok)
		}
	}
}

func FuzzContentRange(f *testing.F) {
	f.Add("bytes 0-9/100")
	f.Add("bytes 1-/2")
	f.Fuzz(func(t *testing.T, h string) {
		if s, n, ok := contentRange(h); ok && (s < 0 || n < s) {
			t.Fatalf("contentRange(%q) = %d, %d", h, s, n)
		}
	})
}

func TestVersionOf(t *testing.T) {
	if versionOf(`"abc"`) != versionOf("abc") || versionOf(`W/"abc"`) != versionOf("abc") || versionOf("abc") == versionOf("abd") || versionOf("") == 0 {
		t.Fatal("versionOf")
	}
}
