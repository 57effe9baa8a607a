package pools

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// formatConfig writes c as a configuration file ParseConfig reads back.
func formatConfig(c Config) string {
	q := func(s string) string {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
	}
	var b strings.Builder
	fmt.Fprintf(&b, "metadata = %s\n", q(c.Metadata))
	if c.Default != "" {
		fmt.Fprintf(&b, "default = %s\n", q(c.Default))
	}
	if c.Logs != "" {
		fmt.Fprintf(&b, "logs = %s\n", q(c.Logs))
	}
	b.WriteString("[pools]\n")
	for _, p := range c.Pools {
		fmt.Fprintf(&b, "%s = %s\n", p.Name, q(p.URL))
	}
	return b.String()
}

func isPoolsURL(u string) bool {
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(u)), "pools:")
}

// FuzzParseConfig: a configuration file may hold anything. ParseConfig
// never panics; what it refuses is an ErrBadURL; what it accepts is
// valid (pool names, no pool given twice, a default among the pools, no
// pools store as a part in any case) and reads back the same once
// written out again.
func FuzzParseConfig(f *testing.F) {
	f.Add("metadata = \"file:///m\"\n[pools]\na = \"file:///a\"\n")
	f.Add("# c\nmetadata = \"rados://m?conf=/etc/ceph/ceph.conf\" # x\ndefault = \"b\"\n[pools]\na = \"s3://b/p?endpoint=http://h:1#f\"\nb = \"file://./rel\"\n")
	f.Add("metadata = \"file:///a\\\"b\\\\\"\n[pools]\np = \"file:///x\"\n")
	f.Add("metadata = \"file:///m\"\nlogs = \"metadata\"\n[pools]\na = \"file:///a\"\n")
	f.Add("metadata = \"POOLS:///x.toml\"\n[pools]\np = \"Pools://./y\"\n")
	f.Add("[pools]\n[pools]\np = \"x\"\np = \"y\"\n= \"z\"\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := ParseConfig(strings.NewReader(in))
		if err != nil {
			if !errors.Is(err, objstore.ErrBadURL) {
				t.Fatalf("a refusal that is no ErrBadURL: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted an invalid configuration %+v: %v", c, err)
		}
		names := map[string]bool{}
		for _, p := range c.Pools {
			if validPoolName(p.Name) != nil || names[p.Name] {
				t.Fatalf("accepted pool name %q (pools %+v)", p.Name, c.Pools)
			}
			names[p.Name] = true
			if isPoolsURL(p.URL) {
				t.Fatalf("accepted a pools store as pool %s: %q", p.Name, p.URL)
			}
		}
		if isPoolsURL(c.Metadata) {
			t.Fatalf("accepted a pools store as metadata: %q", c.Metadata)
		}
		if !names[c.DefaultPool()] {
			t.Fatalf("default pool %q is not a pool of %+v", c.DefaultPool(), c)
		}
		again, err := ParseConfig(strings.NewReader(formatConfig(c)))
		if err != nil {
			t.Fatalf("%+v written out does not read back: %v\n%s", c, err, formatConfig(c))
		}
		if fmt.Sprint(again) != fmt.Sprint(c) {
			t.Fatalf("read back %+v, want %+v", again, c)
		}
	})
}
