package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/daemon"
	"github.com/archipelago-go/archip/internal/move"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/progress"
	"github.com/archipelago-go/archip/internal/units"
)

type volumeMoveOptions struct {
	to     string
	cancel bool
	rate   string
}

func newVolumeMoveCommand(g *globals) *cobra.Command {
	var o volumeMoveOptions
	c := &cobra.Command{
		Use:   "move NAME --to POOL",
		Short: "Move a volume (with its snapshots) or an image to another pool, online",
		Long: `Move a volume, with its snapshots, or an image to another data pool of a store of
several pools (--store pools:///FILE; docs/pools.md), while a VM may write it
through any daemon: new writes land in POOL from the start, every block it
references is copied once (a content block shared with other volumes is
copied once for all of them), then its placement switches atomically. The
copies left in the old pool become garbage: archip gc deletes those no volume
placed there needs.

A move that was interrupted (crash, kill, ^C) continues where it was when run
again with the same --to; --cancel moves it back to where it came from (what
was written meanwhile is copied back). Nothing is lost either way. While it
runs, the metrics and dashboard of every daemon on the store show its step and
counts (docs/metrics.md, "Operations"); so do those of 'store migrate'.`,
		Args: exactArgs("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return runVolumeMove(c.Context(), g, o, args[0])
		},
	}
	c.Flags().StringVar(&o.to, "to", "", "the pool to move to")
	c.Flags().BoolVar(&o.cancel, "cancel", false, "undo an interrupted move: move back to the pool it came from")
	c.Flags().StringVar(&o.rate, "rate", "", "at most this many bytes copied per second (e.g. 100M; default: no limit)")
	return c
}

func runVolumeMove(ctx context.Context, g *globals, o volumeMoveOptions, name string) error {
	if err := checkNames(name); err != nil {
		return err
	}
	if o.cancel == (o.to != "") {
		return usageError{fmt.Errorf("give either --to POOL or --cancel")}
	}
	var rate uint64
	if o.rate != "" {
		var err error
		if rate, err = parseSize("--rate", o.rate); err != nil {
			return err
		}
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	var bs int64
	if in, err := m.Info(ctx, name); err == nil {
		bs = in.BlockSize
	}
	rec := g.startProgress(ctx, m.Store, progress.KindMove, name)
	defer rec.End()
	opts := move.Options{Rate: int64(rate), Progress: both(moveRecorder(rec), g.moveProgress(name, bs))}
	var res move.Result
	if o.cancel {
		res, err = move.Cancel(ctx, m, name, opts)
	} else {
		res, err = move.Move(ctx, m, name, o.to, opts)
	}
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(res)
	}
	verb := "moved"
	if o.cancel {
		verb = "moved back"
	}
	fmt.Fprintf(g.stdout, "%s %s from pool %s to %s: %d blocks referenced, %d copied (%s) in %s\n", name, verb, res.From, res.To,
		res.Blocks, res.Copied, units.FormatSize(res.Bytes), (time.Duration(res.Seconds * float64(time.Second))).Round(time.Millisecond))
	return nil
}

// moveProgress reports a move's steps on stderr and its copy as a bar on
// a terminal (nothing with --quiet or --json).
func (g *globals) moveProgress(name string, bs int64) func(move.Progress) {
	if g.quiet || g.json {
		return nil
	}
	var prog func(done, total int64)
	done := func() {}
	walk := 0
	return func(p move.Progress) {
		switch p.Step {
		case move.StepReopen:
			fmt.Fprintf(g.stderr, "%s: placement switched to the target; its writer begins a new epoch (asked, or by a reopen)\n", name)
		case move.StepCopy:
			if p.Walk != walk {
				done()
				walk = p.Walk
				prog, done = g.progress(fmt.Sprintf("walk %d", walk))
				if prog == nil {
					fmt.Fprintf(g.stderr, "%s: walk %d over %d blocks (copied so far: %d, %s)\n", name, walk, p.Total, p.Copied, units.FormatSize(p.Bytes))
				}
			}
			if prog != nil && p.Total > 0 {
				prog(p.Done*bs, p.Total*bs)
			}
		case move.StepSwitch:
			done()
			fmt.Fprintf(g.stderr, "%s: every block is in the target; switching\n", name)
		}
	}
}

type storeMigrateOptions struct{ from, to, rate string }

func newStoreMigrateCommand(g *globals) *cobra.Command {
	var o storeMigrateOptions
	c := &cobra.Command{
		Use:   "migrate --from POOL --to POOL",
		Short: "Move every volume, snapshot and image of a pool to another, online",
		Long: `Empty a data pool of a store of several pools (docs/pools.md), so that it can be
retired while VMs run: every volume (with its snapshots) and image placed in
--from moves to --to as archip volume move does (unfinished moves are finished
first), then the blocks that volumes of other pools read from --from by
reference are copied into their own pools. Then archip gc deletes what is left
in --from, and the pool can leave the configuration. Set the configuration's
default pool to another first, or new volumes keep landing in --from. Run it
again after an interruption: it skips what is done.`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			return runStoreMigrate(c.Context(), g, o)
		},
	}
	c.Flags().StringVar(&o.from, "from", "", "the pool to empty")
	c.Flags().StringVar(&o.to, "to", "", "the pool its volumes and images move to")
	c.Flags().StringVar(&o.rate, "rate", "", "at most this many bytes copied per second (e.g. 100M; default: no limit)")
	return c
}

func runStoreMigrate(ctx context.Context, g *globals, o storeMigrateOptions) error {
	if o.from == "" || o.to == "" {
		return usageError{fmt.Errorf("give --from POOL and --to POOL")}
	}
	var rate uint64
	if o.rate != "" {
		var err error
		if rate, err = parseSize("--rate", o.rate); err != nil {
			return err
		}
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	rec := g.startProgress(ctx, m.Store, progress.KindMigrate, o.from+" to "+o.to)
	defer rec.End()
	opts := move.Options{Rate: int64(rate), Progress: moveRecorder(rec)}
	each := rec.SetCurrent
	if !g.quiet && !g.json {
		var cur string
		each = func(name string) {
			cur = name
			rec.SetCurrent(name)
			fmt.Fprintf(g.stderr, "moving %s\n", name)
		}
		opts.Progress = both(moveRecorder(rec), func(p move.Progress) {
			if p.Step == move.StepCopy && p.Total > 0 && p.Done == p.Total {
				fmt.Fprintf(g.stderr, "  %s: walk %d: %d blocks, %d copied so far (%s)\n", cur, p.Walk, p.Total, p.Copied, units.FormatSize(p.Bytes))
			}
		})
	}
	res, err := move.Migrate(ctx, m, o.from, o.to, opts, each)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(res)
	}
	fmt.Fprintf(g.stdout, "pool %s: %d volumes and images moved to %s, %d shared blocks copied to other pools, %s copied in %s; run archip gc to free %s\n",
		o.from, len(res.Moved), o.to, res.Shared, units.FormatSize(res.Bytes), (time.Duration(res.Seconds * float64(time.Second))).Round(time.Millisecond), o.from)
	return nil
}

// both returns a move progress that calls a, then b (if not nil).
func both(a, b func(move.Progress)) func(move.Progress) {
	if b == nil {
		return a
	}
	return func(p move.Progress) { a(p); b(p) }
}

// startProgress starts the record that shows a long operation to the
// daemons sharing the store (package progress).
func (g *globals) startProgress(ctx context.Context, s objstore.Store, kind, target string) *progress.Reporter {
	var logf func(string, ...any)
	if log, err := g.logger(); err == nil {
		logf = daemon.Logf(log, slog.LevelWarn, kind)
	}
	return progress.Start(ctx, s, kind, target, progress.Options{Logf: logf})
}

// moveRecorder returns a move.Options.Progress that records a move's step and
// counts: the walk, blocks walked and to walk in it, blocks and bytes
// copied.
func moveRecorder(r *progress.Reporter) func(move.Progress) {
	return func(p move.Progress) {
		r.Set(p.Step, map[string]int64{"walk": int64(p.Walk), "blocks_walked": p.Done, "blocks_to_walk": p.Total,
			"blocks_copied": p.Copied, "bytes_copied": p.Bytes})
	}
}
