package pools

import (
	"strings"
	"testing"
)

// TestReviewNestedPoolsAnyCase: URL schemes are case-insensitive (the
// registry opens POOLS:// as pools://), so a pools store named in any
// case must be refused as a part, or a file naming itself recurses
// until the stack overflows.
func TestReviewNestedPoolsAnyCase(t *testing.T) {
	for _, u := range []string{"POOLS:///etc/archip/store.toml", "Pools://./store.toml"} {
		c := Config{Metadata: "mem://m", Pools: []Pool{{"p", u}}}
		if err := c.Validate(); err == nil {
			t.Errorf("pool URL %s accepted", u)
		}
		c = Config{Metadata: u, Pools: []Pool{{"p", "mem://p"}}}
		if err := c.Validate(); err == nil {
			t.Errorf("metadata URL %s accepted", u)
		}
	}
}

// TestReviewPoolURLTwice: two pools at one URL would each list, count
// and collect the other's blocks as their own (store stats counts them
// twice): refused, as a name given twice is. The metadata backend may
// share a pool's URL (docs/pools.md).
func TestReviewPoolURLTwice(t *testing.T) {
	c := Config{Metadata: "file:///m", Pools: []Pool{{"a", "file:///d"}, {"b", "file:///d"}}}
	if err := c.Validate(); err == nil {
		t.Error("two pools at one URL accepted")
	}
	c = Config{Metadata: "file:///d", Pools: []Pool{{"a", "file:///d"}}}
	if err := c.Validate(); err != nil {
		t.Errorf("metadata at a pool's URL: %v", err)
	}
}

// TestReviewURLWithoutScheme: a store URL in the file names its scheme.
// The registry takes a bare word for a relative directory (as --store
// does), so `default = "fast"` written under [pools] (a pool named
// default) opened a directory ./fast in the working directory as a data
// pool; it is refused, saying how to name a directory.
func TestReviewURLWithoutScheme(t *testing.T) {
	in := "metadata = \"file:///m\"\n[pools]\nfast = \"file:///f\"\ndefault = \"fast\"\n"
	_, err := ParseConfig(strings.NewReader(in))
	if err == nil || !strings.Contains(err.Error(), "file://./") {
		t.Fatalf("a pool URL without a scheme: %v", err)
	}
	c := Config{Metadata: "/var/lib/archip", Pools: []Pool{{"p", "file://./rel"}}}
	if err := c.Validate(); err == nil {
		t.Fatal("a metadata URL without a scheme accepted")
	}
}
