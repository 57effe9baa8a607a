package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

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
	}, &cobra.Command{
		Use:   "stats",
		Short: "Show logical and stored bytes and the deduplication ratio",
		Args:  exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			return runStoreStats(c.Context(), g)
		},
	})
	return c
}

func runStoreStats(ctx context.Context, g *globals) error {
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	st, err := m.Stats(ctx)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(st)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("store", g.store)
	row("volumes", fmt.Sprintf("%d volumes, %d snapshots, %d images", st.Volumes, st.Snapshots, st.Images))
	row("provisioned", units.FormatSize(st.ProvisionedBytes))
	row("logical", units.FormatSize(st.LogicalBytes)+" (allocated, summed over every map)")
	row("stored", fmt.Sprintf("%s (%d content blocks %s, %d private blocks %s)", units.FormatSize(st.StoredBytes),
		st.ContentObjects, units.FormatSize(st.ContentBytes), st.PrivateObjects, units.FormatSize(st.PrivateBytes)))
	row("metadata", fmt.Sprintf("%s in %d objects", units.FormatSize(st.MetadataBytes), st.MetadataObjects))
	row("dedup ratio", fmt.Sprintf("%.2fx", st.DedupRatio))
	return tw.Flush()
}
