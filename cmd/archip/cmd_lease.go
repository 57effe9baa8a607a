package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/lease"
)

func newLeaseCommand(g *globals) *cobra.Command {
	c := group("lease", "Show or break the lease that lets one node write a volume", `Every writable volume has a lease: the node that writes it (an 'archip serve'
daemon, or a command such as 'volume snapshot' for a moment) holds it and
renews it; other nodes ask that node to hand it over when they must write.
A node that stops renewing loses it after the TTL by itself, so breaking a
lease by hand is for the rare case of a node that will never come back and
that you cannot wait for.`)
	c.AddCommand(&cobra.Command{
		Use:   "show VOLUME",
		Short: "Show who holds the volume's lease, its term and its expiry",
		Args:  exactArgs("VOLUME"),
		RunE: func(c *cobra.Command, args []string) error {
			return runLeaseShow(c.Context(), g, args[0])
		},
	})
	var force bool
	brk := &cobra.Command{
		Use:   "break VOLUME --force",
		Short: "Remove the volume's lease whoever holds it (needs --force)",
		Long: `Remove the volume's lease whoever holds it. A holder that is still alive
finds out at its next renewal and stops writing; what it had not flushed is
lost. Use it only for a node that is gone for good: a stopped node's lease
expires by itself after the TTL.`,
		Args: exactArgs("VOLUME"),
		RunE: func(c *cobra.Command, args []string) error {
			if !force {
				return usageError{errors.New("lease break: this can make a live writer lose unflushed data; add --force if that is what you want")}
			}
			return runLeaseBreak(c.Context(), g, args[0])
		},
	}
	brk.Flags().BoolVar(&force, "force", false, "really break it")
	c.AddCommand(brk)
	return c
}

// leaseState describes a record for people and scripts.
type leaseState struct {
	Volume  string       `json:"volume"`
	State   string       `json:"state"` // "none", "released", "held", "expired"
	Record  lease.Record `json:"record"`
	Expires string       `json:"expires_in,omitempty"`
}

func readLease(ctx context.Context, g *globals, name string) (*leaseState, *lease.Manager, string, error) {
	m, err := g.manager(ctx, false)
	if err != nil {
		return nil, nil, "", err
	}
	r, err := m.Lookup(ctx, name)
	if err != nil {
		return nil, nil, "", err
	}
	if r.Kind != catalog.KindVolume {
		return nil, nil, "", fmt.Errorf("lease: %q is a %s, which nobody writes: it has no lease", name, r.Kind)
	}
	rec, ver, err := m.Leases.Read(ctx, r.ID.String())
	if err != nil {
		return nil, nil, "", err
	}
	st := &leaseState{Volume: name, Record: rec}
	switch left := time.Until(rec.Expires); {
	case ver == 0:
		st.State = "none"
	case rec.Owner == "":
		st.State = "released"
	case left > 0:
		st.State, st.Expires = "held", left.Round(time.Millisecond).String()
	default:
		st.State = "expired"
	}
	return st, m.Leases, r.ID.String(), nil
}

func runLeaseShow(ctx context.Context, g *globals, name string) error {
	st, _, _, err := readLease(ctx, g, name)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(st)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "volume:\t%s\nstate:\t%s\n", name, st.State)
	if st.State == "held" || st.State == "expired" {
		fmt.Fprintf(tw, "owner:\t%s\nadmin address:\t%s\nexpires:\t%s", st.Record.Owner, st.Record.Addr, st.Record.Expires.Format(time.RFC3339Nano))
		if st.Expires != "" {
			fmt.Fprintf(tw, " (in %s)", st.Expires)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "term:\t%d\n", st.Record.Term)
	return tw.Flush()
}

func runLeaseBreak(ctx context.Context, g *globals, name string) error {
	st, leases, id, err := readLease(ctx, g, name)
	if err != nil {
		return err
	}
	prev, err := leases.Break(ctx, id)
	if err != nil {
		return err
	}
	st.Record = prev
	if g.json {
		return g.printJSON(st)
	}
	if st.State == "held" {
		fmt.Fprintf(g.stdout, "broke the lease of %s held by %s (term %d)\n", name, prev.Owner, prev.Term)
	} else {
		fmt.Fprintf(g.stdout, "the lease of %s was %s; it is now released\n", name, st.State)
	}
	return nil
}
