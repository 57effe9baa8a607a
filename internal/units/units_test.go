package units

import (
	"strconv"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{
		"0": 0, "4096": 4096, "1K": 1024, "1k": 1024, "1KiB": 1024, "512M": 512 << 20, "1G": 1 << 30,
		"1GiB": 1 << 30, "1 GiB": 1 << 30, "2TiB": 2 << 40, "1gb": 1 << 30, "100B": 100, "15E": 15 << 60,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "G", "-1", "1.5G", "1X", "16E", "99999999999999999999", "1 G B"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted it", bad)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 3 << 29: "1.5 GiB", 1 << 40: "1 TiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1G", "512MiB", "0", "18446744073709551615", "16E"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		// Whatever parses means the same as its plain byte count.
		if back, err := ParseSize(strconv.FormatUint(n, 10)); err != nil || back != n {
			t.Fatalf("%q parsed as %d, which parses as %d, %v", s, n, back, err)
		}
	})
}
