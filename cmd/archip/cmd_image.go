package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/units"
)

func newImageCommand(g *globals) *cobra.Command {
	c := group("image", "Import and export raw disk images (deduplicated)", "")
	c.AddCommand(newImageImportCommand(g), newImageExportCommand(g))
	return c
}

type imageImportOptions struct {
	blockSize string
	workers   int
}

func newImageImportCommand(g *globals) *cobra.Command {
	var o imageImportOptions
	c := &cobra.Command{
		Use:   "import FILE NAME",
		Short: "Store a raw image file as a read-only image that volumes are cloned from",
		Long: `Store a raw image file (or - for standard input) as a read-only image.
Blocks are hashed in parallel and stored once: zero blocks take no space,
and blocks identical to any already in the store are not stored again.
Clone volumes from it with: archip volume clone NAME VOLUME`,
		Args: exactArgs("FILE", "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return runImageImport(c.Context(), g, o, args[0], args[1])
		},
	}
	c.Flags().StringVar(&o.blockSize, "block-size", "4M", "block size: a power of two from 64K to 32M")
	c.Flags().IntVar(&o.workers, "workers", 0, "blocks hashed and stored at once (default: 16, or 2 per CPU if more)")
	return c
}

func runImageImport(ctx context.Context, g *globals, o imageImportOptions, file, name string) error {
	shift, err := blockShift(o.blockSize)
	if err != nil {
		return err
	}
	var r io.Reader = g.stdin
	size := int64(-1)
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("image import: %s is not a regular file (use - and a pipe for other sources)", file)
		}
		r, size = f, st.Size()
	}
	m, err := g.manager(ctx, true)
	if err != nil {
		return err
	}
	prog, done := g.progress("importing " + name)
	start := time.Now()
	_, st, err := m.Import(ctx, r, size, name, image.Options{BlockShift: shift, Workers: o.workers, Progress: prog})
	done()
	if err != nil {
		return err
	}
	el := time.Since(start)
	if g.json {
		return g.printJSON(map[string]any{"name": name, "stats": st, "seconds": el.Seconds()})
	}
	fmt.Fprintf(g.stdout, "imported %s: %s in %s (%s/s); %d blocks: %d new (%s stored), %d already stored, %d zero\n",
		name, units.FormatSize(st.Size), el.Round(time.Millisecond), units.FormatSize(int64(float64(st.Size)/max(el.Seconds(), 1e-9))),
		st.Blocks, st.NewBlocks, units.FormatSize(st.StoredBytes), st.DedupBlocks, st.ZeroBlocks)
	return nil
}

type imageExportOptions struct{ force bool }

func newImageExportCommand(g *globals) *cobra.Command {
	var o imageExportOptions
	c := &cobra.Command{
		Use:   "export NAME FILE",
		Short: "Write a volume, snapshot or image to a raw file (sparse) or - for standard output",
		Args:  exactArgs("NAME", "FILE"),
		RunE: func(c *cobra.Command, args []string) error {
			return runImageExport(c.Context(), g, o, args[0], args[1])
		},
	}
	c.Flags().BoolVar(&o.force, "force", false, "overwrite FILE if it exists")
	return c
}

func runImageExport(ctx context.Context, g *globals, o imageExportOptions, name, file string) error {
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	v, _, err := m.Open(ctx, name, false)
	if err != nil {
		return err
	}
	defer v.Close(ctx)
	if file == "-" {
		return image.ExportStream(ctx, v, g.stdout, image.Options{})
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if o.force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(file, flags, 0o644)
	if err != nil {
		return fmt.Errorf("image export: %w (use --force to overwrite)", err)
	}
	prog, done := g.progress("exporting " + name)
	start := time.Now()
	err = image.Export(ctx, v, f, image.Options{Progress: prog})
	done()
	if err == nil {
		err = f.Truncate(v.Size())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(file)
		return err
	}
	if g.json {
		return g.printJSON(map[string]any{"name": name, "file": file, "size": v.Size()})
	}
	fmt.Fprintf(g.stdout, "exported %s to %s: %s in %s\n", name, file, units.FormatSize(v.Size()), time.Since(start).Round(time.Millisecond))
	return nil
}
