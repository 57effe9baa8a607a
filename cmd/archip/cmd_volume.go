package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/units"
	"github.com/archipelago-go/archip/internal/volume"
)

func newVolumeCommand(g *globals) *cobra.Command {
	c := group("volume", "Create, snapshot, clone, resize and remove volumes",
		`Volumes are writable block devices; snapshots and images are read-only.
All three share one namespace of names (letters, digits, . _ - @).
Sizes take binary suffixes: 512M, 10G, 1TiB.`)
	c.AddCommand(newVolumeCreateCommand(g), newVolumeListCommand(g), newVolumeInfoCommand(g),
		newVolumeSnapshotCommand(g), newVolumeCloneCommand(g), newVolumeResizeCommand(g),
		newVolumeRenameCommand(g), newVolumeRemoveCommand(g), newVolumeDiffCommand(g),
		newVolumeHashCommand(g), newVolumeReadCommand(g), newVolumeWriteCommand(g),
		newVolumeDiskXMLCommand(g), newVolumeMoveCommand(g))
	return c
}

// sizeFlag parses a size given to a flag or an argument.
func parseSize(what, s string) (uint64, error) {
	n, err := units.ParseSize(s)
	if err != nil {
		return 0, usageError{fmt.Errorf("%s: %w", what, err)}
	}
	return n, nil
}

type volumeCreateOptions struct {
	size      string
	blockSize string
	pool      string
}

func (o *volumeCreateOptions) AddFlags(c *cobra.Command) {
	c.Flags().StringVar(&o.size, "size", "", "size of the volume, such as 10G (required; at most 2^22 blocks: 16T at 4M blocks)")
	c.Flags().StringVar(&o.blockSize, "block-size", "4M", "block size: a power of two from 64K to 32M")
	addPoolFlag(c, &o.pool, "the volume's blocks")
}

func newVolumeCreateCommand(g *globals) *cobra.Command {
	var o volumeCreateOptions
	c := &cobra.Command{
		Use:   "create NAME --size SIZE",
		Short: "Create an empty volume (thin: it takes no space until written)",
		Long:  "Create an empty volume (thin: it takes no space until written).\n\n" + sizeLimitHelp,
		Args:  exactArgs("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return runVolumeCreate(c.Context(), g, o, args[0])
		},
	}
	o.AddFlags(c)
	return c
}

func blockShift(s string) (uint8, error) {
	n, err := parseSize("--block-size", s)
	if err != nil {
		return 0, err
	}
	if n == 0 || n&(n-1) != 0 || n < 1<<blockmap.MinBlockShift || n > 1<<blockmap.MaxBlockShift {
		return 0, usageError{fmt.Errorf("--block-size %s: must be a power of two from 64K to 32M", s)}
	}
	return uint8(bits.TrailingZeros64(n)), nil
}

func runVolumeCreate(ctx context.Context, g *globals, o volumeCreateOptions, name string) error {
	if err := checkNames(name); err != nil {
		return err
	}
	if o.size == "" {
		return usageError{errors.New("volume create: --size is required")}
	}
	size, err := parseSize("--size", o.size)
	if err != nil {
		return err
	}
	if err := checkSize("--size", size); err != nil {
		return err
	}
	shift, err := blockShift(o.blockSize)
	if err != nil {
		return err
	}
	if err := checkMaxSize("--size", size, shift, "use a larger --block-size"); err != nil {
		return err
	}
	m, err := g.manager(ctx, true)
	if err != nil {
		return err
	}
	pr, err := poolRouter(m, o.pool)
	if err != nil {
		return err
	}
	r, err := m.CreateVolume(ctx, name, size, shift)
	if err != nil {
		return err
	}
	if err := place(ctx, pr, r.ID, name, o.pool); err != nil {
		return err
	}
	if g.json {
		return g.printJSON(r)
	}
	fmt.Fprintf(g.stdout, "created volume %s: %s, %s blocks (id %s)\n", name, units.FormatSize(int64(size)), units.FormatSize(1<<shift), r.ID)
	return nil
}

func newVolumeListCommand(g *globals) *cobra.Command {
	var opts catalog.ListOptions
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List volumes, snapshots and images, by name",
		Long: `List volumes, snapshots and images in name order.

--prefix selects the names that start with it. --limit stops after that
many; with --json the output is {"records":[...],"next":"..."}, and "next"
(empty after the last page) is what to pass to --after to get the next
page. Without --limit everything is listed (the table streams, a page
at a time).`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			return runVolumeList(c.Context(), g, opts)
		},
	}
	c.Flags().StringVar(&opts.Prefix, "prefix", "", "only names that start with this")
	c.Flags().IntVar(&opts.Limit, "limit", 0, "at most this many records (0: all)")
	c.Flags().StringVar(&opts.After, "after", "", "only names after this one: the \"next\" of the previous page")
	return c
}

// listPage is the JSON of volume list.
type listPage struct {
	Records []manage.Entry `json:"records"`
	Next    string         `json:"next"`
}

func runVolumeList(ctx context.Context, g *globals, opts catalog.ListOptions) error {
	if opts.Limit < 0 {
		return usageError{errors.New("archip: --limit must be 0 (all) or more")}
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	if g.json {
		var page listPage
		if page.Records, page.Next, err = m.ListPage(ctx, opts); err != nil {
			return err
		}
		if page.Records == nil {
			page.Records = []manage.Entry{}
		}
		return g.printJSON(page)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSIZE\tBLOCK\tCREATED")
	next, err := m.Walk(ctx, opts, 1000, func(list []manage.Entry) error {
		for _, e := range list {
			size := units.FormatSize(e.Size)
			if e.Error != "" {
				size = "error: " + e.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, e.Kind, size, units.FormatSize(e.BlockSize), e.Created.Local().Format(time.DateTime))
		}
		return tw.Flush()
	})
	if err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(g.stderr, "more: --after %s\n", next)
	}
	return tw.Flush()
}

func newVolumeInfoCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info NAME",
		Short: "Show a volume's size, space use, lineage and epoch",
		Long: `Show a volume's, snapshot's or image's size, space use, lineage and epoch.

Space is counted in bytes of blocks (map segments aside):
  allocated  what the map points at (blocks never written or trimmed take nothing)
  private    written since the last snapshot: nothing else uses it
  shared     the rest: content blocks, and blocks its snapshots, its clones or
             what it was cloned from may use too
  content    of the allocated bytes, those in content blocks (made by volume hash
             and image import), which any volume may share through deduplication
  exclusive  the blocks in private objects that no other volume, snapshot or image
             uses: what removing it and then running archip gc frees. Content
             blocks are never counted, even those only it uses (gc frees those
             too): telling them apart needs every map of the store. Its write
             logs count too.
  write log  what the write logs of its writer take: writes logged since the
             last checkpoint into blocks (a writer checkpoints its log at 32 MiB,
             before a snapshot and at close)

It reads the maps of the volume's lineage (what it was made from, what was made
from it), not every map of the store; archip store stats, which reads them all,
gives the store-wide figures.`,
		Args: exactArgs("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return runVolumeInfo(c.Context(), g, args[0])
		},
	}
}

func runVolumeInfo(ctx context.Context, g *globals, name string) error {
	if err := checkNames(name); err != nil {
		return err
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	in, err := m.Info(ctx, name)
	if err != nil {
		return err
	}
	pool, from, err := placement(ctx, m, name)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(struct {
			*manage.Info
			Pool       string `json:"pool,omitempty"`
			MovingFrom string `json:"moving_from,omitempty"`
		}{in, pool, from})
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("name", in.Name)
	row("id", in.ID.String())
	row("kind", string(in.Kind))
	row("size", fmt.Sprintf("%s (%d bytes)", units.FormatSize(in.Size), in.Size))
	row("block size", units.FormatSize(in.BlockSize))
	if pool != "" {
		row("pool", pool+" (where its new blocks go; blocks it shares stay where they are)")
	}
	if from != "" {
		row("moving from", from+" (a move did not finish: run archip volume move "+name+" --to "+pool+" to finish it, or --cancel)")
	}
	row("allocated", units.FormatSize(in.AllocatedBytes))
	row("private", units.FormatSize(in.PrivateBytes)+" (written since the last snapshot; only this volume uses it)")
	row("shared", units.FormatSize(in.SharedBytes)+" (content blocks, or shared with snapshots, parent, images)")
	row("content", units.FormatSize(in.ContentBytes)+" (in content blocks, which deduplication may share with any volume)")
	row("exclusive", units.FormatSize(in.ExclusiveBytes)+" (private blocks only it uses: what removing it frees, after archip gc; content blocks not counted)")
	if in.LogBytes > 0 {
		row("write log", units.FormatSize(in.LogBytes)+" (logged writes not yet checkpointed into blocks; in exclusive)")
	}
	if in.Parent != "" {
		row("parent", in.Parent)
	}
	if in.Origin != "" {
		row("origin", in.Origin)
	}
	children := "none"
	if len(in.Children) > 0 {
		children = fmt.Sprint(in.Children)
	}
	row("children", children)
	row("epoch", fmt.Sprint(in.Epoch))
	row("created", in.Created.Local().Format(time.RFC3339))
	return tw.Flush()
}

func newVolumeSnapshotCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "snapshot VOLUME SNAPSHOT",
		Short: "Take a read-only, crash-consistent snapshot (copies no data)",
		Args:  exactArgs("VOLUME", "SNAPSHOT"),
		RunE: func(c *cobra.Command, args []string) error {
			return runVolumeSnapshot(c.Context(), g, args[0], args[1])
		},
	}
}

func runVolumeSnapshot(ctx context.Context, g *globals, vol, snap string) error {
	if err := checkNames(vol, snap); err != nil {
		return err
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	start := time.Now()
	r, err := m.Snapshot(ctx, vol, snap)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(r)
	}
	fmt.Fprintf(g.stdout, "snapshot %s of %s taken in %s\n", snap, vol, time.Since(start).Round(time.Microsecond))
	return nil
}

type volumeCloneOptions struct{ size, pool string }

func newVolumeCloneCommand(g *globals) *cobra.Command {
	var o volumeCloneOptions
	c := &cobra.Command{
		Use:   "clone SOURCE NEW [--size SIZE]",
		Short: "Make a writable volume from a snapshot or image (copies no data)",
		Long: "Make a writable volume from a snapshot or image (copies no data), of the\n" +
			"source's size and block size, or larger with --size.\n\n" +
			"SOURCE may be an object of the S3 API, s3://BUCKET/KEY (an uploaded raw\n" +
			"image): no data is copied unless it was uploaded in parts that are not\n" +
			"multiples of the block size.\n\n" + sizeLimitHelp,
		Args: exactArgs("SOURCE", "NEW"),
		RunE: func(c *cobra.Command, args []string) error {
			return runVolumeClone(c.Context(), g, o, args[0], args[1])
		},
	}
	c.Flags().StringVar(&o.size, "size", "", "size of the clone, at least the source's and at most 2^22 blocks (default: the source's)")
	addPoolFlag(c, &o.pool, "the clone's new blocks (those it shares stay where they are)")
	return c
}

func runVolumeClone(ctx context.Context, g *globals, o volumeCloneOptions, src, name string) error {
	var size uint64
	if o.size != "" {
		var err error
		if size, err = parseSize("--size", o.size); err != nil {
			return err
		}
		if err := checkSize("--size", size); err != nil {
			return err
		}
	}
	if bkt, key, ok, err := parseObject(src); ok || err != nil {
		if err != nil {
			return err
		}
		return runCloneObject(ctx, g, src, bkt, key, name, size)
	}
	if err := checkNames(src, name); err != nil {
		return err
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	pr, err := poolRouter(m, o.pool)
	if err != nil {
		return err
	}
	if size != 0 {
		r, err := m.Lookup(ctx, src)
		if err != nil {
			return err
		}
		h, _, err := volume.ReadHead(ctx, m.Store, r.ID)
		if err != nil {
			return err
		}
		if size < h.Size {
			return usageError{fmt.Errorf("volume clone: --size %d is smaller than its source %s (%d bytes); clone, then shrink", size, src, h.Size)}
		}
		if err := checkMaxSize("--size", size, h.BlockShift, "a clone has its source's block size"); err != nil {
			return err
		}
	}
	start := time.Now()
	r, err := m.Clone(ctx, src, name, size)
	if err != nil {
		return err
	}
	if err := place(ctx, pr, r.ID, name, o.pool); err != nil {
		return err
	}
	if g.json {
		return g.printJSON(r)
	}
	fmt.Fprintf(g.stdout, "cloned %s to %s in %s\n", src, name, time.Since(start).Round(time.Microsecond))
	return nil
}

type volumeResizeOptions struct{ allowShrink bool }

func newVolumeResizeCommand(g *globals) *cobra.Command {
	var o volumeResizeOptions
	c := &cobra.Command{
		Use:   "resize NAME SIZE",
		Short: "Grow or shrink a volume",
		Long: "Grow or shrink a volume. Shrinking drops the data past the new end, so it needs\n" +
			"--allow-shrink. The block size of a volume never changes.\n\n" + sizeLimitHelp,
		Args: exactArgs("NAME", "SIZE"),
		RunE: func(c *cobra.Command, args []string) error {
			return runVolumeResize(c.Context(), g, o, args[0], args[1])
		},
	}
	c.Flags().BoolVar(&o.allowShrink, "allow-shrink", false, "allow a size smaller than the current one")
	return c
}

func runVolumeResize(ctx context.Context, g *globals, o volumeResizeOptions, name, sizeArg string) error {
	if err := checkNames(name); err != nil {
		return err
	}
	size, err := parseSize("SIZE", sizeArg)
	if err != nil {
		return err
	}
	if err := checkSize("SIZE", size); err != nil {
		return err
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	// Check what can be checked before taking the lease.
	r, err := m.Lookup(ctx, name)
	if err != nil {
		return err
	}
	if r.ReadOnly() {
		return fmt.Errorf("%w: %q is a %s", volume.ErrReadOnly, name, r.Kind)
	}
	h, _, err := volume.ReadHead(ctx, m.Store, r.ID)
	if err != nil {
		return err
	}
	if err := checkMaxSize("SIZE", size, h.BlockShift, "the block size of a volume never changes"); err != nil {
		return err
	}
	if size < h.Size && !o.allowShrink {
		return usageError{fmt.Errorf("%w (%d < %d)", manage.ErrShrink, size, h.Size)}
	}
	if size == h.Size {
		if g.json {
			return g.printJSON(map[string]any{"name": name, "size": size})
		}
		fmt.Fprintf(g.stdout, "%s is already %s\n", name, units.FormatSize(int64(size)))
		return nil
	}
	if err := m.Resize(ctx, name, size, o.allowShrink); err != nil {
		return err
	}
	if g.json {
		return g.printJSON(map[string]any{"name": name, "size": size})
	}
	fmt.Fprintf(g.stdout, "resized %s to %s\n", name, units.FormatSize(int64(size)))
	return nil
}

func newVolumeRenameCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rename OLD NEW",
		Short: "Rename a volume, snapshot or image (instant: data is named by ID)",
		Args:  exactArgs("OLD", "NEW"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkNames(args...); err != nil {
				return err
			}
			m, err := g.manager(c.Context(), false)
			if err != nil {
				return err
			}
			if err := m.Rename(c.Context(), args[0], args[1]); err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintf(g.stdout, "renamed %s to %s\n", args[0], args[1])
			}
			return nil
		},
	}
}

func newVolumeRemoveCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Remove a volume, snapshot or image",
		Long: `Remove a volume, snapshot or image. Clones and snapshots made from it stay
valid: maps are flat, so the blocks they share simply stay. Space that only the
removed map used is freed at once where it is certain (a volume's own blocks
since its last snapshot); the rest is reclaimed by garbage collection.`,
		Args: exactArgs("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkNames(args...); err != nil {
				return err
			}
			m, err := g.manager(c.Context(), false)
			if err != nil {
				return err
			}
			after := unplace(c.Context(), m, args[0])
			if err := m.Remove(c.Context(), args[0]); err != nil {
				return err
			}
			after()
			if !g.json {
				fmt.Fprintf(g.stdout, "removed %s\n", args[0])
			}
			return nil
		},
	}
}

func newVolumeDiffCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "diff A B",
		Short: "List the byte ranges where two volumes or snapshots may differ",
		Long: `List the byte ranges where two volumes or snapshots may differ, block by block.
It compares maps, not data, so it is cheap: use it for incremental backups
between two snapshots of one volume.`,
		Args: exactArgs("A", "B"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkNames(args...); err != nil {
				return err
			}
			m, err := g.manager(c.Context(), false)
			if err != nil {
				return err
			}
			ranges, err := m.Diff(c.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if g.json {
				if ranges == nil {
					ranges = []manage.Range{}
				}
				return g.printJSON(ranges)
			}
			for _, r := range ranges {
				fmt.Fprintf(g.stdout, "%d\t%d\n", r.Offset, r.Length)
			}
			return nil
		},
	}
}

func newVolumeHashCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "hash NAME",
		Short: "Deduplicate: turn a snapshot's (or idle volume's) private blocks into shared content blocks",
		Long: `Hash every private block of NAME and store it as a content block named by its
SHA-256, so identical data anywhere in the store is kept once. What NAME reads
does not change. The private copies are freed when no map references them any
longer (for a snapshot, once its volume has moved on; see archip gc).`,
		Args: exactArgs("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkNames(args...); err != nil {
				return err
			}
			m, err := g.manager(c.Context(), false)
			if err != nil {
				return err
			}
			prog, done := g.progress("hashing")
			var bs int64
			if in, err := m.Info(c.Context(), args[0]); err == nil {
				bs = in.BlockSize
			}
			var fn func(int64, int64)
			if prog != nil {
				fn = func(d, t int64) { prog(d*bs, t*bs) }
			}
			st, err := m.Hash(c.Context(), args[0], fn)
			done()
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(st)
			}
			fmt.Fprintf(g.stdout, "%s: %d blocks hashed, %d new content blocks (%s), %d already stored, %d were zeros\n",
				args[0], st.Converted, st.NewContent, units.FormatSize(st.StoredBytes), st.Converted-st.NewContent, st.Zeroed)
			return nil
		},
	}
}

type volumeIOOptions struct {
	offset string
	length string
}

func newVolumeReadCommand(g *globals) *cobra.Command {
	var o volumeIOOptions
	c := &cobra.Command{
		Use:   "read NAME [--offset N] [--length M] > data",
		Short: "Write bytes of a volume to standard output",
		Args:  exactArgs("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return runVolumeRead(c.Context(), g, o, args[0])
		},
	}
	c.Flags().StringVar(&o.offset, "offset", "0", "where to start")
	c.Flags().StringVar(&o.length, "length", "", "how many bytes (default: to the end)")
	return c
}

func runVolumeRead(ctx context.Context, g *globals, o volumeIOOptions, name string) error {
	if err := checkNames(name); err != nil {
		return err
	}
	off, err := parseSize("--offset", o.offset)
	if err != nil {
		return err
	}
	var n uint64
	if o.length != "" {
		if n, err = parseSize("--length", o.length); err != nil {
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
	size := uint64(v.Size())
	if o.length == "" {
		if off > size {
			return usageError{fmt.Errorf("volume read: --offset %d is past the end of %s (%d bytes)", off, name, size)}
		}
		n = size - off
	}
	if err := checkRange("volume read", off, n, size); err != nil {
		return err
	}
	buf := make([]byte, min(n, 1<<20))
	for done := uint64(0); done < n; {
		k := min(uint64(len(buf)), n-done)
		if err := v.ReadAt(ctx, buf[:k], int64(off+done)); err != nil {
			return err
		}
		if _, err := g.stdout.Write(buf[:k]); err != nil {
			return err
		}
		done += k
	}
	return nil
}

func newVolumeWriteCommand(g *globals) *cobra.Command {
	var o volumeIOOptions
	c := &cobra.Command{
		Use:   "write NAME [--offset N] < data",
		Short: "Write standard input into a volume, then flush",
		Long: `Write standard input into the volume at --offset, then flush.

Input longer than the room from --offset to the end of the volume is refused
(exit 2) before anything is written: a regular file's length is known; other
input is read whole first (in memory up to 16 MiB, beyond that into an
unlinked temporary file in $TMPDIR). A write that fails part way (a store
error) is not flushed: the map keeps pointing where it did, though blocks the
volume already owned may have been rewritten in place, as on a disk.`,
		Args: exactArgs("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return runVolumeWrite(c.Context(), g, o, args[0])
		},
	}
	c.Flags().StringVar(&o.offset, "offset", "0", "where to start writing")
	return c
}

// spoolMemory is how much of a stream volume write holds in memory
// before it spools the rest to a temporary file.
const spoolMemory = 16 << 20

// boundedInput returns r as a reader of exactly n bytes, n ≤ room, or a
// usage error if r holds more than room bytes. A regular file is
// measured; any other input is read whole first (into memory, then a
// temporary file). done releases what it used.
func boundedInput(r io.Reader, room uint64, memory int, tooLong func() error) (in io.Reader, n int64, done func(), err error) {
	nop := func() {}
	if f, ok := r.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			if pos, err := f.Seek(0, io.SeekCurrent); err == nil {
				n := max(st.Size()-pos, 0)
				if uint64(n) > room {
					return nil, 0, nop, tooLong()
				}
				return io.LimitReader(f, n), n, nop, nil
			}
		}
	}
	limit := room + 1 // one byte more says it is too long
	buf, err := io.ReadAll(io.LimitReader(r, int64(min(limit, uint64(memory)))))
	if err != nil {
		return nil, 0, nop, fmt.Errorf("volume write: read input: %w", err)
	}
	if uint64(len(buf)) < uint64(memory) || uint64(len(buf)) == limit {
		if uint64(len(buf)) > room {
			return nil, 0, nop, tooLong()
		}
		return bytes.NewReader(buf), int64(len(buf)), nop, nil
	}
	tmp, err := os.CreateTemp("", "archip-write-")
	if err != nil {
		return nil, 0, nop, fmt.Errorf("volume write: spool input: %w", err)
	}
	os.Remove(tmp.Name()) // unlinked: nothing stays behind, whatever happens
	done = func() { tmp.Close() }
	n, err = io.Copy(tmp, io.MultiReader(bytes.NewReader(buf), io.LimitReader(r, int64(limit-uint64(len(buf))))))
	if err == nil {
		_, err = tmp.Seek(0, io.SeekStart)
	}
	if err != nil {
		done()
		return nil, 0, nop, fmt.Errorf("volume write: spool input (set TMPDIR to a directory with room): %w", err)
	}
	if uint64(n) > room {
		done()
		return nil, 0, nop, tooLong()
	}
	return tmp, n, done, nil
}

func runVolumeWrite(ctx context.Context, g *globals, o volumeIOOptions, name string) error {
	if err := checkNames(name); err != nil {
		return err
	}
	off, err := parseSize("--offset", o.offset)
	if err != nil {
		return err
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	rec, err := m.Lookup(ctx, name)
	if err != nil {
		return err
	}
	if rec.ReadOnly() {
		return fmt.Errorf("%w: %q is a %s", volume.ErrReadOnly, name, rec.Kind)
	}
	h, _, err := volume.ReadHead(ctx, m.Store, rec.ID)
	if err != nil {
		return err
	}
	if off > h.Size {
		return usageError{fmt.Errorf("volume write: --offset %d is past the end of %s (%d bytes)", off, name, h.Size)}
	}
	room := h.Size - off
	memory := spoolMemory
	if g.spoolMemory > 0 {
		memory = g.spoolMemory
	}
	in, n, done, err := boundedInput(g.stdin, room, memory, func() error {
		return usageError{fmt.Errorf("volume write: the input is longer than the %d bytes from --offset %d to the end of %s (%d bytes); nothing was written", room, off, name, h.Size)}
	})
	if err != nil {
		return err
	}
	defer done()
	if n > 0 {
		if err := writeVolume(ctx, m, name, in, int64(off), n); err != nil {
			return err
		}
	}
	if g.json {
		return g.printJSON(map[string]any{"name": name, "offset": off, "written": n})
	}
	if !g.quiet {
		fmt.Fprintf(g.stderr, "wrote %d bytes to %s at offset %d\n", n, name, off)
	}
	return nil
}

// writeVolume writes n bytes of in at off and flushes; on any error it
// discards what it wrote. The volume is opened in a new epoch, so that no
// write changes an existing object in place, which Discard could not undo.
func writeVolume(ctx context.Context, m *manage.Manager, name string, in io.Reader, off, n int64) error {
	rec, err := m.Lookup(ctx, name)
	if err != nil {
		return err
	}
	if rec.ReadOnly() {
		return fmt.Errorf("%w: %q is a %s", volume.ErrReadOnly, name, rec.Kind)
	}
	v, err := m.OpenWriterCopying(ctx, rec.ID)
	if err != nil {
		return err
	}
	buf := make([]byte, min(n, 1<<20))
	for done := int64(0); done < n; {
		k, err := io.ReadFull(in, buf[:min(int64(len(buf)), n-done)])
		if err == nil {
			err = v.WriteAt(ctx, buf[:k], off+done, false)
		} else {
			err = fmt.Errorf("volume write: read input: %w", err)
		}
		if err != nil {
			v.Discard(ctx)
			return err
		}
		done += int64(k)
	}
	return v.Close(ctx)
}
