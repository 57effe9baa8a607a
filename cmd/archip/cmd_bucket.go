package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/bucket"
)

// objectPrefix marks an S3 object where a volume, snapshot or image name
// is expected: s3://BUCKET/KEY, as the aws CLI writes it.
const objectPrefix = "s3://"

// parseObject splits s3://BUCKET/KEY; ok is false if s is not one.
func parseObject(s string) (bkt, key string, ok bool, err error) {
	rest, found := strings.CutPrefix(s, objectPrefix)
	if !found {
		return "", "", false, nil
	}
	bkt, key, _ = strings.Cut(rest, "/")
	if err := bucket.ValidBucketName(bkt); err != nil {
		return "", "", true, usageError{err}
	}
	if key == "" {
		return "", "", true, usageError{fmt.Errorf("%q: want s3://BUCKET/KEY", s)}
	}
	return bkt, key, true, nil
}

// runCloneObject is volume clone from s3://BUCKET/KEY.
func runCloneObject(ctx context.Context, g *globals, src, bkt, key, name string, size uint64) error {
	if err := checkNames(name); err != nil {
		return err
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	start := time.Now()
	r, err := m.CloneObject(ctx, bkt, key, name, size)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(r)
	}
	fmt.Fprintf(g.stdout, "cloned %s to %s in %s\n", src, name, time.Since(start).Round(time.Microsecond))
	return nil
}

func newImagePublishCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "publish NAME s3://BUCKET/KEY",
		Short: "Make a snapshot or image an object of the S3 API (copies no data)",
		Long: `Make a snapshot or image an object of the S3 API (archip serve --s3-listen),
sharing its blocks: no data is copied, and the object stays when the snapshot
is removed. Download it with any S3 client, e.g.
  aws --endpoint-url http://127.0.0.1:9000 s3 cp s3://BUCKET/KEY disk.raw
The reverse: archip volume clone s3://BUCKET/KEY NEW.`,
		Args: exactArgs("NAME", "s3://BUCKET/KEY"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkNames(args[0]); err != nil {
				return err
			}
			bkt, key, ok, err := parseObject(args[1])
			if err != nil {
				return err
			}
			if !ok {
				return usageError{fmt.Errorf("%q: want s3://BUCKET/KEY", args[1])}
			}
			m, err := g.manager(c.Context(), false)
			if err != nil {
				return err
			}
			start := time.Now()
			o, err := m.Publish(c.Context(), args[0], bkt, key)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(o)
			}
			fmt.Fprintf(g.stdout, "published %s as %s (%d bytes) in %s\n", args[0], args[1], o.Size, time.Since(start).Round(time.Microsecond))
			return nil
		},
	}
}

// runImportObject is image import from s3://BUCKET/KEY.
func runImportObject(ctx context.Context, g *globals, src, bkt, key, name string) error {
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	start := time.Now()
	r, err := m.ImportObject(ctx, bkt, key, name)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(r)
	}
	fmt.Fprintf(g.stdout, "imported %s as %s in %s\n", src, name, time.Since(start).Round(time.Microsecond))
	return nil
}
