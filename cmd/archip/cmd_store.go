package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/units"
)

func newStoreCommand(g *globals) *cobra.Command {
	c := group("store", "Create a store and report on it", "")
	c.AddCommand(&cobra.Command{
		Use:   "init",
		Short: "Create an empty store at --store (commands that write also do it)",
		Args:  exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			if _, err := g.manager(c.Context(), true); err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintf(g.stdout, "store ready at %s\n", g.store)
			}
			return nil
		},
	}, newStoreStatsCommand(g), newStoreUpgradeCommand(g), newStoreMigrateCommand(g))
	return c
}

func newStoreUpgradeCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "upgrade",
		Short: "Bring the store's catalog to the format of this program (also done on first use)",
		Long: `Bring the store's catalog to the format this program writes (format 4: a
record per name, and an index of the names that every writer keeps, on
RADOS and on the file store). A store written by an earlier archip (format
1: one catalog object; format 2: a record per name, written by binaries
that may not keep the index; format 3: binaries that keep RADOS's index,
not the file store's) is upgraded: every name, lineage and volume stays as
it was; the index is repaired first (on RADOS from format 2: one walk of
the pool; on the file store: one listing of the catalog). Running it again
changes nothing. With --json it prints from_format and to_format.

Every command of this program also upgrades the store by itself the first
time it uses it, so this command is only a way to do it at a chosen
moment. The upgrade goes forward only: archip binaries of earlier formats
then refuse the store ("format 4; this program reads format 1", or "...
reads formats 1 and 2", or "... reads formats 1 to 3 (a newer archip wrote
it: use that)").

Restart every older archip process still running on the store (archip
serve): one that started before the upgrade keeps writing as its format
does, and the names it creates are missing from volume list until archip
gc repairs the index. Run archip gc once they are restarted.`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			return runStoreUpgrade(c.Context(), g)
		},
	}
}

func newStoreStatsCommand(g *globals) *cobra.Command {
	var volumes bool
	c := &cobra.Command{
		Use:   "stats",
		Short: "Show logical and stored bytes and the deduplication ratio",
		Long: `Show logical and stored bytes and the deduplication ratio. It reads every map
and lists every object of the store.

With --volumes, also what each volume, snapshot and image alone uses: what
removing it and then running archip gc frees, its private blocks ("exclusive",
as archip volume info counts them from the volume's lineage) and the content
blocks no other map uses (which only reading every map can tell).`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			return runStoreStats(c.Context(), g, volumes)
		},
	}
	c.Flags().BoolVar(&volumes, "volumes", false, "also show what each volume, snapshot and image alone uses")
	return c
}

func runStoreUpgrade(ctx context.Context, g *globals) error {
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	rep, err := m.Catalog.Upgrade(ctx)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(rep)
	}
	switch {
	case rep.From == rep.To:
		fmt.Fprintf(g.stdout, "catalog already at format %d\n", rep.To)
	case rep.From == 0:
		fmt.Fprintf(g.stdout, "empty store: catalog at format %d\n", rep.To)
	case rep.From == 1:
		fmt.Fprintf(g.stdout, "catalog upgraded from format %d to %d (%d records)\n", rep.From, rep.To, rep.Upgraded)
	case rep.Upgraded > 0: // an upgrade from format 1 was under way
		fmt.Fprintf(g.stdout, "catalog upgraded from format %d to %d, finishing an upgrade from format 1 under way (%d records); restart older archip processes still running on this store, then run archip gc\n", rep.From, rep.To, rep.Upgraded)
	default:
		fmt.Fprintf(g.stdout, "catalog upgraded from format %d to %d; restart older archip processes still running on this store, then run archip gc\n", rep.From, rep.To)
	}
	return nil
}

func runStoreStats(ctx context.Context, g *globals, volumes bool) error {
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	st, err := m.StatsWith(ctx, manage.StatsOptions{Volumes: volumes})
	if err != nil {
		return err
	}
	ps, err := statsPerPool(ctx, m)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(struct {
			*manage.StoreStats
			Pools []poolStats `json:"pools,omitempty"`
		}{st, ps})
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("store", g.store)
	row("volumes", fmt.Sprintf("%d volumes, %d snapshots, %d images", st.Volumes, st.Snapshots, st.Images))
	row("provisioned", units.FormatSize(st.ProvisionedBytes))
	row("logical", units.FormatSize(st.LogicalBytes)+" (allocated, summed over every map)")
	row("stored", fmt.Sprintf("%s (%d content blocks %s, %d private blocks %s, %d write log objects %s)", units.FormatSize(st.StoredBytes),
		st.ContentObjects, units.FormatSize(st.ContentBytes), st.PrivateObjects, units.FormatSize(st.PrivateBytes),
		st.LogObjects, units.FormatSize(st.LogBytes)))
	row("metadata", fmt.Sprintf("%s in %d objects", units.FormatSize(st.MetadataBytes), st.MetadataObjects))
	row("dedup ratio", fmt.Sprintf("%.2fx", st.DedupRatio))
	for _, p := range ps {
		def := ""
		if p.Default {
			def = " (default)"
		}
		row("pool "+p.Name, fmt.Sprintf("%s in %d blocks%s", units.FormatSize(p.Bytes), p.Objects, def))
	}
	if err := tw.Flush(); err != nil || !volumes {
		return err
	}
	fmt.Fprintln(g.stdout)
	tw = tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tEXCLUSIVE\tCONTENT ONLY IT USES")
	for _, v := range st.VolumeSpace {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, v.Kind, units.FormatSize(v.ExclusiveBytes), units.FormatSize(v.ExclusiveContentBytes))
	}
	return tw.Flush()
}
