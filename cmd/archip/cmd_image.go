package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/image"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/units"
	"github.com/archipelago-go/archip/internal/volume"
)

func newImageCommand(g *globals) *cobra.Command {
	c := group("image", "Import and export raw disk images (deduplicated)", "")
	c.AddCommand(newImageImportCommand(g), newImageExportCommand(g), newImagePublishCommand(g))
	return c
}

type imageImportOptions struct {
	blockSize string
	workers   int
	pool      string
}

func newImageImportCommand(g *globals) *cobra.Command {
	var o imageImportOptions
	c := &cobra.Command{
		Use:   "import FILE NAME",
		Short: "Store a raw image file as a read-only image that volumes are cloned from",
		Long: `Store a raw image file (or - for standard input) as a read-only image.
Blocks are hashed in parallel and stored once: zero blocks take no space,
and blocks identical to any already in the store are not stored again.
Clone volumes from it with: archip volume clone NAME VOLUME

FILE may be an object of the S3 API, s3://BUCKET/KEY (archip serve
--s3-listen): the image then shares the object's blocks, copying no data
unless the object was uploaded in parts that are not multiples of the
block size.

` + sizeLimitHelp + ` A larger image is refused
(before it is read, when it is a file).`,
		Args: exactArgs("FILE", "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return runImageImport(c.Context(), g, o, args[0], args[1])
		},
	}
	c.Flags().StringVar(&o.blockSize, "block-size", "4M", "block size: a power of two from 64K to 32M")
	c.Flags().IntVar(&o.workers, "workers", 0, "blocks hashed and stored at once (default: 16, or 2 per CPU if more)")
	addPoolFlag(c, &o.pool, "the image's new blocks (blocks already in another pool are shared, not copied)")
	return c
}

func runImageImport(ctx context.Context, g *globals, o imageImportOptions, file, name string) error {
	if err := checkNames(name); err != nil {
		return err
	}
	if bkt, key, ok, err := parseObject(file); ok || err != nil {
		if err != nil {
			return err
		}
		return runImportObject(ctx, g, file, bkt, key, name)
	}
	if o.workers < 0 {
		return usageError{fmt.Errorf("--workers %d: must be 0 (the default) or more", o.workers)}
	}
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
			return usageError{fmt.Errorf("image import: %s is not a regular file (use - and a pipe for other sources)", file)}
		}
		if err := checkMaxSize("image import: "+file, uint64(st.Size()), shift, "use a larger --block-size"); err != nil {
			return err
		}
		r, size = f, st.Size()
	}
	m, err := g.manager(ctx, true)
	if err != nil {
		return err
	}
	pr, err := poolRouter(m, o.pool)
	if err != nil {
		return err
	}
	if pr != nil {
		// The image's content blocks go to the pool from the start.
		view, err := pr.View(o.pool)
		if err != nil {
			return err
		}
		m = manage.New(view)
	}
	prog, done := g.progress("importing " + name)
	start := time.Now()
	rec, st, err := m.Import(ctx, r, size, name, image.Options{BlockShift: shift, Workers: o.workers, Progress: prog})
	done()
	if err != nil {
		return err
	}
	if err := place(ctx, pr, rec.ID, name, o.pool); err != nil {
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
		Long: `Write a volume, snapshot or image to a raw file, sparse (zero blocks are holes),
or with - to standard output, every byte in order.

FILE must be a regular file, or not exist yet. The export is written to a
temporary file in FILE's directory and renamed to FILE only once it is
complete and synced, so a failed export leaves no partial file and an existing
FILE as it was (with --force, FILE is replaced then; until then both take
space). On Linux the temporary file has no name until then: even an export
killed part way leaves nothing behind. Devices, FIFOs and sockets are refused, never truncated or removed:
to write a disk, use - and redirect standard output to it
(archip image export NAME - > /dev/sdX), which writes zeros as well.`,
		Args: exactArgs("NAME", "FILE"),
		RunE: func(c *cobra.Command, args []string) error {
			return runImageExport(c.Context(), g, o, args[0], args[1])
		},
	}
	c.Flags().BoolVar(&o.force, "force", false, "replace FILE if it exists (a regular file; once the export is complete)")
	return c
}

// exportTarget checks where an export may go and returns the regular
// file to replace or create (symlinks resolved) and, if it exists, its
// Info.
func exportTarget(file string, force bool) (string, os.FileInfo, error) {
	fi, err := os.Lstat(file)
	if errors.Is(err, fs.ErrNotExist) {
		return file, nil, nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("image export: %w", err)
	}
	path := file
	if fi.Mode()&fs.ModeSymlink != 0 {
		if path, err = filepath.EvalSymlinks(file); err != nil {
			return "", nil, fmt.Errorf("image export: %s: %w", file, err)
		}
		if fi, err = os.Stat(path); err != nil {
			return "", nil, fmt.Errorf("image export: %w", err)
		}
	}
	switch {
	case fi.IsDir():
		return "", nil, usageError{fmt.Errorf("image export: %s is a directory; give the name of the file to write", file)}
	case !fi.Mode().IsRegular():
		return "", nil, usageError{fmt.Errorf("image export: %s is not a regular file but %s; archip exports to regular files only: "+
			"to write a device, use - and redirect standard output to it (archip image export NAME - > %s)", file, fileKind(fi.Mode()), file)}
	case !force:
		return "", nil, usageError{fmt.Errorf("image export: %s exists; add --force to replace it", file)}
	}
	return path, fi, nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "a special file"
}

func runImageExport(ctx context.Context, g *globals, o imageExportOptions, name, file string) error {
	if err := checkNames(name); err != nil {
		return err
	}
	target, old := "", os.FileInfo(nil)
	if file != "-" {
		var err error
		if target, old, err = exportTarget(file, o.force); err != nil {
			return err
		}
	}
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
	prog, done := g.progress("exporting " + name)
	start := time.Now()
	err = exportFile(ctx, v, target, old, image.Options{Progress: prog})
	done()
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(map[string]any{"name": name, "file": file, "size": v.Size()})
	}
	fmt.Fprintf(g.stdout, "exported %s to %s: %s in %s\n", name, file, units.FormatSize(v.Size()), time.Since(start).Round(time.Millisecond))
	return nil
}

// exportFile writes v to a new file next to target, then puts it in
// target's place: over old (a regular file) if it exists, and otherwise
// only if target still does not exist. On failure only the new file is
// removed. On Linux the new file has no name until it is complete, so
// that an export killed part way leaves nothing behind.
func exportFile(ctx context.Context, v *volume.Volume, target string, old os.FileInfo, opts image.Options) (err error) {
	dir, base := filepath.Split(target)
	tmp := "" // the named temporary file, if the new file has a name
	f := openUnnamed(dir)
	if f == nil {
		if f, err = createTemp(dir, base); err != nil {
			return fmt.Errorf("image export: %w", err)
		}
		tmp = f.Name()
	}
	defer func() {
		if err != nil {
			f.Close()
			if tmp != "" {
				os.Remove(tmp)
			}
		}
	}()
	if err := image.Export(ctx, v, f, opts); err != nil {
		return err
	}
	if err := f.Truncate(v.Size()); err != nil {
		return fmt.Errorf("image export: %w", err)
	}
	if old != nil {
		if err := f.Chmod(old.Mode().Perm()); err != nil {
			return fmt.Errorf("image export: %w", err)
		}
		if st, ok := old.Sys().(*syscall.Stat_t); ok {
			f.Chown(int(st.Uid), int(st.Gid)) // best effort: only root may give files away
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("image export: %w", err)
	}
	if tmp == "" {
		// Named while open: linking goes through the descriptor.
		if err := placeUnnamed(f, dir, base, target, old != nil); err != nil {
			return fmt.Errorf("image export: %w", err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("image export: %w", err)
		}
	} else {
		if err := f.Close(); err != nil {
			return fmt.Errorf("image export: %w", err)
		}
		if err := placeNamed(tmp, target, old != nil); err != nil {
			return fmt.Errorf("image export: %w", err)
		}
	}
	if d, err := os.Open(filepath.Clean(dir + "/.")); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// createTemp creates a temporary file next to dir/base.
func createTemp(dir, base string) (f *os.File, err error) {
	for try := 0; ; try++ {
		f, err = os.OpenFile(tempName(dir, base), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil || !errors.Is(err, fs.ErrExist) || try == 10 {
			return f, err
		}
	}
}

func tempName(dir, base string) string {
	return filepath.Join(dir, fmt.Sprintf(".%s.archip-%d", base, rand.Uint32()))
}

func appeared(target string, err error) error {
	return fmt.Errorf("%s appeared while exporting; add --force to replace it: %w", target, err)
}

// placeUnnamed names the unnamed file f target: by a link if target must
// not exist, or by a link to a temporary name and a rename over it.
func placeUnnamed(f *os.File, dir, base, target string, replace bool) error {
	if !replace {
		err := linkFile(f, target)
		if errors.Is(err, fs.ErrExist) {
			return appeared(target, err)
		}
		return err
	}
	var name string
	var err error
	for try := 0; ; try++ {
		name = tempName(dir, base)
		if err = linkFile(f, name); err == nil || !errors.Is(err, fs.ErrExist) || try == 10 {
			break
		}
	}
	if err != nil {
		return err
	}
	if err := os.Rename(name, target); err != nil {
		os.Remove(name)
		return err
	}
	return nil
}

// placeNamed puts the temporary file tmp in target's place.
func placeNamed(tmp, target string, replace bool) error {
	if replace {
		return os.Rename(tmp, target)
	}
	err := os.Link(tmp, target)
	switch {
	case err == nil:
		os.Remove(tmp)
		return nil
	case errors.Is(err, fs.ErrExist):
		return appeared(target, err)
	}
	if _, serr := os.Lstat(target); errors.Is(serr, fs.ErrNotExist) {
		// No hard links here (some network file systems): rename.
		return os.Rename(tmp, target)
	}
	return err
}
