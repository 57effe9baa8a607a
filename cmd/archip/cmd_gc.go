package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/progress"
	"github.com/archipelago-go/archip/internal/units"
)

type gcOptions struct {
	dryRun bool
	grace  time.Duration
}

func newGCCommand(g *globals) *cobra.Command {
	var o gcOptions
	c := &cobra.Command{
		Use:   "gc [--dry-run] [--grace DURATION]",
		Short: "Reclaim space: delete the objects no volume, snapshot, image or S3 object uses",
		Long: `Mark everything the catalog's volumes, snapshots and images reference, then
delete the objects that nothing references and that are older than the grace
period: blocks of removed volumes, blocks a snapshot or 'volume hash' left
behind, replaced map segments, leftovers of crashed writers and imports.

Safe on a live store, from any host: snapshots, clones, imports and hashes
wait while a collection runs (and a collection waits for those running), and
writers' new blocks are younger than the grace period. Two collections at
once are refused. Interrupting one is harmless; the next finishes the work.
While it runs, the metrics and dashboard of every daemon on the store show
its phase and counts (docs/metrics.md, "Operations").

The grace period must be at least ` + gc.MinGrace.String() + `: a writer checks that its
unflushed blocks still exist only once they are 15 minutes old, so a shorter
grace could delete blocks that a live writer's next flush then points at.
Keep it well above the longest time writers keep data unflushed (the daemon
flushes every 10 s by default).`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			return runGC(c.Context(), g, o)
		},
	}
	c.Flags().BoolVar(&o.dryRun, "dry-run", false, "report what would be deleted, delete nothing")
	c.Flags().DurationVar(&o.grace, "grace", gc.DefaultGrace, "keep unreferenced objects younger than this (writers' unflushed data); at least "+gc.MinGrace.String())
	return c
}

func runGC(ctx context.Context, g *globals, o gcOptions) error {
	if err := gc.CheckGrace(o.grace); err != nil {
		return usageError{fmt.Errorf("--grace: %w", err)}
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	target := ""
	if o.dryRun {
		target = "dry run"
	}
	rec := g.startProgress(ctx, m.Store, progress.KindGC, target)
	defer rec.End()
	gcRec := rec.GC()
	report := gcRec
	if prog, done := g.progress("gc"); prog != nil {
		defer done()
		report = func(phase string, n int64) { gcRec(phase, n); prog(n, -1) }
	}
	rep, err := m.GC(ctx, gc.Options{Grace: o.grace, DryRun: o.dryRun, Progress: report})
	if err != nil {
		log.Error("gc run failed", "store", g.store, "err", err)
		return err
	}
	log.Info("gc run", "store", g.store, "dry_run", o.dryRun, "examined", rep.Examined, "referenced", rep.Referenced,
		"young", rep.Young, "deleted_objects", rep.Deleted.Objects, "deleted_bytes", rep.Deleted.Bytes,
		"failed", rep.Failed, "seconds", rep.Seconds)
	if g.json {
		return g.printJSON(rep)
	}
	verb := "deleted"
	if o.dryRun {
		verb = "would delete"
	}
	d := rep.Deleted
	fmt.Fprintf(g.stdout, "%s %d objects, %s: %d content blocks, %d private blocks, %d map segments, %d heads\n",
		verb, d.Objects, units.FormatSize(d.Bytes), d.Content, d.Private, d.Segments, d.Heads)
	fmt.Fprintf(g.stdout, "examined %d objects; %d referenced by %d maps; %d unreferenced but younger than %s kept",
		rep.Examined, rep.Referenced, rep.Roots, rep.Young, o.grace)
	if rep.Failed > 0 {
		fmt.Fprintf(g.stdout, "; %d deletions failed (the next run retries)", rep.Failed)
	}
	fmt.Fprintf(g.stdout, "; %.1fs\n", rep.Seconds)
	return nil
}
