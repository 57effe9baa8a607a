package pools

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/archipelago-go/archip/internal/objstore"
)

// Usage is the URL form, as shown in errors.
const Usage = "pools:///PATH/TO/STORE.toml"

// Config is a parsed configuration file (docs/pools.md):
//
//	metadata = "rados://meta?conf=/etc/ceph/ceph.conf"
//	default  = "fast"
//	[pools]
//	fast = "rados://data?conf=/etc/ceph/ceph.conf"
//	cold = "s3://bucket/prefix?endpoint=https://s3.example.com"
type Config struct {
	// Metadata is the URL of the backend of everything but blocks.
	Metadata string
	// Pools are the data pools, in the order of the file: the lookup
	// order after the default pool.
	Pools []Pool
	// Default names the pool new blocks go to; "" for the first.
	Default string
	// Logs says where a writer's logged writes stay until they are
	// written into blocks, on a store without in-place writes (a pool
	// on s3://): LogsPool ("", the default) writes them into blocks of
	// the volume's pool at each checkpoint of the write log; LogsMetadata
	// keeps them in the metadata backend, in the log's segments and
	// index, until a snapshot, a writer that does not log (an offline
	// move's reopen) or the log's bounds write them into blocks
	// (docs/pools.md, "Write logs in the metadata backend").
	Logs string
}

// The values of Config.Logs.
const (
	LogsPool     = "pool"
	LogsMetadata = "metadata"
)

// Pool is a named data pool.
type Pool struct {
	Name string
	URL  string
}

// maxPoolName bounds pool names.
const maxPoolName = 32

// ParseConfig reads a configuration file: a TOML subset of `key = "value"`
// lines, `#` comments and one [pools] table. It reports every problem at
// once.
func ParseConfig(r io.Reader) (Config, error) {
	var c Config
	var errs []error
	bad := func(line int, format string, a ...any) {
		errs = append(errs, fmt.Errorf("line %d: %s", line, fmt.Sprintf(format, a...)))
	}
	section := ""
	sc := bufio.NewScanner(r)
	seen := map[string]bool{}
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(stripComment(sc.Text()))
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "[") {
			if line != "[pools]" {
				bad(n, "unknown table %s (only [pools])", line)
			}
			section = "pools"
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			bad(n, `want key = "value"`)
			continue
		}
		k = strings.TrimSpace(k)
		val, err := unquote(strings.TrimSpace(v))
		if err != nil {
			bad(n, "%s: %v", k, err)
			continue
		}
		key := section + "." + k
		if seen[key] {
			bad(n, "%s given twice", k)
			continue
		}
		seen[key] = true
		switch {
		case section == "pools" && (k == "default" || k == "logs") && !strings.Contains(val, "://"):
			// A top-level key appended at the end of the file: under
			// [pools] it would name a pool without a URL.
			// (The pool is kept, so that the error on its URL comes too.)
			bad(n, "%s = %q is under [pools], where it names a pool: put it before [pools]", k, val)
			c.Pools = append(c.Pools, Pool{Name: k, URL: val})
		case section == "pools":
			c.Pools = append(c.Pools, Pool{Name: k, URL: val})
		case k == "metadata":
			c.Metadata = val
		case k == "default":
			c.Default = val
		case k == "logs":
			c.Logs = val
		default:
			bad(n, "unknown key %q (metadata, default, logs, or a pool under [pools])", k)
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("%w: pools: bad configuration: %w", objstore.ErrBadURL, errors.Join(errs...))
	}
	return c, nil
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	url := func(what, u string) {
		switch {
		case u == "":
			errs = append(errs, fmt.Errorf("%s: empty URL", what))
		case strings.HasPrefix(strings.ToLower(strings.TrimSpace(u)), "pools:"):
			// Any case: schemes are case-insensitive, and the registry
			// opens POOLS:// as pools:// (a file naming itself would
			// recurse without end).
			errs = append(errs, fmt.Errorf("%s: a pools:// store cannot be part of another", what))
		case !strings.Contains(u, "://"):
			// The registry would take a bare word for a relative
			// directory, as --store does: in a file it is a mistake
			// (default = "fast" under [pools] names a pool "default").
			errs = append(errs, fmt.Errorf("%s: %q names no scheme: write file:///ABSOLUTE/DIR, file://./RELATIVE/DIR or another store URL", what, u))
		}
	}
	url("metadata", c.Metadata)
	if len(c.Pools) == 0 {
		errs = append(errs, errors.New(`no data pool: add a [pools] table with NAME = "URL" lines`))
	}
	names := map[string]bool{}
	urls := map[string]string{} // URL → the first pool at it
	for _, p := range c.Pools {
		if err := validPoolName(p.Name); err != nil {
			errs = append(errs, err)
		}
		if names[p.Name] {
			errs = append(errs, fmt.Errorf("pool %q given twice", p.Name))
		}
		names[p.Name] = true
		url("pool "+p.Name, p.URL)
		if first, ok := urls[p.URL]; ok && p.URL != "" {
			errs = append(errs, fmt.Errorf("pools %q and %q have one URL (each would list and count the other's blocks as its own): give it once", first, p.Name))
		} else {
			urls[p.URL] = p.Name
		}
	}
	if c.Default != "" && !names[c.Default] {
		errs = append(errs, fmt.Errorf("default pool %q is not under [pools]", c.Default))
	}
	if c.Logs != "" && c.Logs != LogsPool && c.Logs != LogsMetadata {
		errs = append(errs, fmt.Errorf("logs = %q: %q (the default) or %q", c.Logs, LogsPool, LogsMetadata))
	}
	return errors.Join(errs...)
}

// DefaultPool returns the name of the pool new blocks go to.
func (c Config) DefaultPool() string {
	if c.Default != "" || len(c.Pools) == 0 {
		return c.Default
	}
	return c.Pools[0].Name
}

func validPoolName(n string) error {
	if n == "" || len(n) > maxPoolName {
		return fmt.Errorf("pool name %q: 1 to %d bytes", n, maxPoolName)
	}
	for i := 0; i < len(n); i++ {
		b := n[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_' || b == '-') {
			return fmt.Errorf("pool name %q: only [a-z0-9_-]", n)
		}
	}
	return nil
}

// stripComment cuts a # comment that is not inside a quoted value.
func stripComment(s string) string {
	in := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if in {
				i++
			}
		case '"':
			in = !in
		case '#':
			if !in {
				return s[:i]
			}
		}
	}
	return s
}

// unquote reads a TOML basic string with the escapes \" and \\ only.
func unquote(s string) (string, error) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", errors.New(`the value must be a "quoted string"`)
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		switch c {
		case '\\':
			i++
			if i >= len(s)-1 || s[i] != '"' && s[i] != '\\' {
				return "", errors.New(`only \" and \\ escapes are allowed`)
			}
			b.WriteByte(s[i])
		case '"':
			return "", errors.New("a quote inside the value: write it \\\"")
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
