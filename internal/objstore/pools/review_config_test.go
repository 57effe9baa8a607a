package pools

import (
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
