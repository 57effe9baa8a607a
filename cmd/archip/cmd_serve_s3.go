package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/daemon"
	"github.com/archipelago-go/archip/internal/frontend/s3fe"
)

// s3Options are serve's flags of the S3 API.
type s3Options struct {
	listen   []string
	keysFile string
	region   string
	maxConns int
}

func addS3Flags(c *cobra.Command, o *s3Options) {
	c.Flags().StringArrayVar(&o.listen, "s3-listen", nil,
		"serve the S3 API on HOST:PORT or unix:PATH (repeatable; off unless given); HTTPS with --tls-cert and --tls-key")
	c.Flags().StringVar(&o.keysFile, "s3-keys-file", "",
		"`FILE` of S3 access keys, one \"ACCESS_KEY SECRET_KEY\" a line (# comments); else ARCHIP_S3_ACCESS_KEY and ARCHIP_S3_SECRET_KEY")
	c.Flags().StringVar(&o.region, "s3-region", "", "the region the S3 API reports for its buckets (requests signed for any region are accepted)")
	c.Flags().IntVar(&o.maxConns, "s3-max-connections", s3fe.DefaultMaxConns,
		"S3 connections served at once (a request holds up to a few 4 MiB block buffers while it moves data); more wait until one closes")
}

// s3Keys reads the access keys of the S3 API.
func s3Keys(o s3Options) (map[string]string, error) {
	keys := map[string]string{}
	if o.keysFile != "" {
		f, err := os.Open(o.keysFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("--s3-keys-file: %w", err)}
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			f := strings.Fields(line)
			if len(f) != 2 {
				return nil, usageError{fmt.Errorf("--s3-keys-file %s line %d: want ACCESS_KEY SECRET_KEY", o.keysFile, n)}
			}
			keys[f[0]] = f[1]
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	if ak, sk := os.Getenv("ARCHIP_S3_ACCESS_KEY"), os.Getenv("ARCHIP_S3_SECRET_KEY"); ak != "" || sk != "" {
		if ak == "" || sk == "" {
			return nil, usageError{fmt.Errorf("ARCHIP_S3_ACCESS_KEY and ARCHIP_S3_SECRET_KEY go together")}
		}
		keys[ak] = sk
	}
	if len(keys) == 0 {
		return nil, usageError{fmt.Errorf("--s3-listen needs access keys: --s3-keys-file FILE, or ARCHIP_S3_ACCESS_KEY and ARCHIP_S3_SECRET_KEY")}
	}
	return keys, nil
}

// s3Frontend returns the S3 frontend serve's flags ask for, if any.
func s3Frontend(o s3Options, tlsCert, tlsKey string, logf func(string, ...any)) ([]daemon.FrontendConfig, error) {
	if len(o.listen) == 0 {
		return nil, nil
	}
	for _, a := range o.listen {
		if _, _, err := net.SplitHostPort(a); err != nil && !strings.HasPrefix(a, "unix:") {
			return nil, usageError{fmt.Errorf("--s3-listen %q: want HOST:PORT or unix:PATH", a)}
		}
	}
	if o.maxConns < 1 {
		return nil, usageError{fmt.Errorf("--s3-max-connections %d: must be at least 1", o.maxConns)}
	}
	keys, err := s3Keys(o)
	if err != nil {
		return nil, err
	}
	fc, err := s3fe.Config{Listen: o.listen, Keys: keys, TLSCert: tlsCert, TLSKey: tlsKey, Region: o.region, Logf: logf, MaxConns: o.maxConns}.Frontend()
	if err != nil {
		return nil, serveError(err)
	}
	return []daemon.FrontendConfig{fc}, nil
}
