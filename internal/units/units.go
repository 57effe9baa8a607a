// Package units parses and prints byte sizes.
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var suffixes = []struct {
	names []string
	shift uint
}{
	{[]string{"k", "kb", "kib"}, 10},
	{[]string{"m", "mb", "mib"}, 20},
	{[]string{"g", "gb", "gib"}, 30},
	{[]string{"t", "tb", "tib"}, 40},
	{[]string{"p", "pb", "pib"}, 50},
	{[]string{"e", "eb", "eib"}, 60},
	{[]string{"", "b"}, 0},
}

// ParseSize parses a byte count: a plain number of bytes, or a whole
// number with a binary suffix, any case: K, KiB, M, MiB, G, GiB, T, TiB,
// P, PiB, E, EiB (KB, MB, ... mean the same powers of 1024 here).
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	num, suf := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("invalid size %q: want a whole number of bytes with an optional suffix such as 512M, 1G or 2TiB", s)
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %v", s, err)
	}
	for _, sf := range suffixes {
		for _, name := range sf.names {
			if suf != name {
				continue
			}
			if sf.shift > 0 && n > math.MaxUint64>>sf.shift {
				return 0, fmt.Errorf("invalid size %q: too large", s)
			}
			return n << sf.shift, nil
		}
	}
	return 0, fmt.Errorf("invalid size %q: unknown suffix %q (use K, M, G, T, P or E, optionally with iB)", s, t[i:])
}

// FormatSize prints n bytes with a binary unit: 0 B, 512 B, 4 MiB, 1.5 GiB.
func FormatSize(n int64) string {
	const units = "KMGTPE"
	if n < 1024 && n > -1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n), -1
	for math.Abs(f) >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	s := strconv.FormatFloat(f, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + string(units[u]) + "iB"
}
