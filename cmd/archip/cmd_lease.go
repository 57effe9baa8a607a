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
	"github.com/archipelago-go/archip/internal/objstore"
)

func newLeaseCommand(g *globals) *cobra.Command {
	c := group("lease", "Show or break the lease that lets one node write a volume", `Every writable volume has a lease: the node that writes it (an 'archip serve'
daemon, or a command such as 'volume snapshot' for a moment) holds it and
renews it; other nodes ask that node to hand it over when they must write.
A node that stops renewing loses it after the TTL by itself, so breaking a
lease by hand is for the rare case of a node that will never come back and
that you cannot wait for, or of a lease record that cannot be read.`)
	c.AddCommand(&cobra.Command{
		Use:   "show VOLUME",
		Short: "Show who holds the volume's lease, its term and its expiry",
		Args:  exactArgs("VOLUME"),
		RunE: func(c *cobra.Command, args []string) error {
			return runLeaseShow(c.Context(), g, args[0])
		},
	})
	var now bool
	brk := &cobra.Command{
		Use:   "break VOLUME [--now]",
		Short: "Take the volume's lease away from its holder, whoever it is",
		Long: `Take the volume's lease away from its holder. The holder can no longer renew
it: at its next renewal (within a third of the TTL) it finds the lease lost,
stops writing, and what it had not flushed is lost. The next node to write
the volume takes the lease over and starts a new epoch, so that a late write
of the old holder cannot change what the new one wrote.

By default the lease becomes free only when the holder's expiry plus the
clock drift allowance has passed: by then a holder that is still alive has
stopped writing by its own clock. The command waits until then and says
what it is waiting for; interrupting the wait does not undo the break.

With --now the lease is free at once. A holder that is still alive (frozen,
cut off) may go on writing until its lease expires by its own clock. Those
late writes are never reported durable and never reach a snapshot (the next
writer starts a new epoch and seals the old one's blocks before its first
snapshot), but until then they may show in blocks the next writer has not
written. What the holder had not flushed is lost.

On RADOS, the next writer that takes the broken lease first blocklists the
holder's client (when the holder's record names one and the taker's key may
run "osd blocklist": docs/leases.md, "Fencing"), so the OSDs refuse its
late writes; a blocklisted daemon can then write nothing to the store, for
any volume, until it is restarted.

A lease record that cannot be read (corrupt) blocks every writer of the
volume until it is broken this way. Its expiry is unknown: the command then
waits one lease TTL (5s) plus the clock drift allowance (500ms) from now. A
daemon running with a longer --lease-ttl may write until its own runs out,
with the same outcome as under --now.`,
		Args: exactArgs("VOLUME"),
		RunE: func(c *cobra.Command, args []string) error {
			return runLeaseBreak(c.Context(), g, args[0], now)
		},
	}
	brk.Flags().BoolVar(&now, "now", false, "free the lease at once instead of waiting for the holder's expiry (a live holder may still write until then)")
	brk.Flags().BoolVar(&now, "force", false, "same as --now")
	c.AddCommand(brk)
	return c
}

// leaseState describes a record for people and scripts.
type leaseState struct {
	Volume  string       `json:"volume"`
	State   string       `json:"state"` // "none", "released", "held", "expired", "broken", "corrupt"
	Record  lease.Record `json:"record"`
	Expires string       `json:"expires_in,omitempty"`
	Error   string       `json:"error,omitempty"` // why a corrupt record cannot be read
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
	st := &leaseState{Volume: name, Record: rec}
	if errors.Is(err, objstore.ErrCorrupt) {
		st.State, st.Error = "corrupt", err.Error()
		return st, m.Leases, r.ID.String(), nil
	}
	if err != nil {
		return nil, nil, "", err
	}
	switch left := time.Until(rec.Expires); {
	case ver == 0:
		st.State = "none"
	case rec.Broken:
		st.State = "broken"
		if left > 0 {
			st.Expires = left.Round(time.Millisecond).String()
		}
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
	switch st.State {
	case "corrupt":
		fmt.Fprintf(tw, "error:\t%s\nfix:\tarchip lease break %s\n", st.Error, name)
		return tw.Flush()
	case "held", "expired":
		fmt.Fprintf(tw, "owner:\t%s\nadmin address:\t%s\nexpires:\t%s", st.Record.Owner, st.Record.Addr, st.Record.Expires.Format(time.RFC3339Nano))
		if st.Expires != "" {
			fmt.Fprintf(tw, " (in %s)", st.Expires)
		}
		fmt.Fprintln(tw)
	case "broken":
		if !st.Record.Expires.IsZero() {
			fmt.Fprintf(tw, "old holder's expiry:\t%s", st.Record.Expires.Format(time.RFC3339Nano))
			if st.Expires != "" {
				fmt.Fprintf(tw, " (in %s)", st.Expires)
			}
			fmt.Fprintln(tw)
		}
	}
	fmt.Fprintf(tw, "term:\t%d\n", st.Record.Term)
	return tw.Flush()
}

// breakReport is what 'lease break' did, for --json.
type breakReport struct {
	Volume string       `json:"volume"`
	Was    string       `json:"was"`             // the state before, as in 'lease show'
	Record lease.Record `json:"record"`          // the record broken (empty if it was corrupt)
	Error  string       `json:"error,omitempty"` // why a corrupt record could not be read
	Broken bool         `json:"broken"`          // a broken record was written
	Now    bool         `json:"now"`             // freed at once (--now)
	// FreeAt is when, by this host's clock, another node may take the
	// lease (and a live holder has stopped writing); the command waited
	// for it unless --now.
	FreeAt time.Time `json:"free_at"`
}

func runLeaseBreak(ctx context.Context, g *globals, name string, now bool) error {
	st, leases, id, err := readLease(ctx, g, name)
	if err != nil {
		return err
	}
	res, err := leases.Break(ctx, id, now)
	if err != nil {
		return err
	}
	rep := breakReport{Volume: name, Was: st.State, Record: res.Prev, Broken: res.Changed, Now: now, FreeAt: res.FreeAt}
	if res.Corrupt != nil {
		rep.Was, rep.Error = "corrupt", res.Corrupt.Error()
	} else if res.Prev.Broken {
		rep.Was = "broken"
	}
	say := func(format string, args ...any) {
		if !g.json {
			fmt.Fprintf(g.stdout, format+"\n", args...)
		}
	}
	report := func() error {
		if g.json {
			return g.printJSON(rep)
		}
		return nil
	}
	if !res.Changed {
		if res.Found {
			say("the lease of %s is released: nothing to break", name)
		} else {
			say("%s has no lease record: nothing to break", name)
		}
		return report()
	}
	what, until := "the lease of "+name, "its holder's expiry "+res.Prev.Expires.Format(time.RFC3339Nano)
	switch {
	case res.Corrupt != nil:
		what = fmt.Sprintf("the unreadable lease record of %s (%v)", name, res.Corrupt)
		until = "one lease TTL from now, as its holder's expiry cannot be read"
	case res.Prev.Broken:
		what = fmt.Sprintf("the already broken lease of %s", name)
	case res.Prev.Owner != "":
		what = fmt.Sprintf("the lease of %s held by %s (term %d)", name, res.Prev.Owner, res.Prev.Term)
	}
	say("broke %s: its holder can no longer renew it", what)
	if now {
		if res.Corrupt != nil || res.Prev.Expires.After(time.Now()) {
			fmt.Fprintf(g.stderr, "archip: warning: the lease of %s was freed at once: a holder that is still alive may go on writing until %s by its own clock; those late writes, and everything it had not flushed, are lost\n",
				name, until)
		}
		say("the lease is free now: the next writer takes it over in a new epoch")
		return report()
	}
	if wait := time.Until(res.FreeAt); wait > 0 {
		if !g.quiet {
			fmt.Fprintf(g.stderr, "archip: waiting %s, until %s: %s plus the clock drift allowance, when a holder still alive has stopped writing by its own clock and another node may take the lease (interrupting does not undo the break)\n",
				wait.Round(time.Millisecond), res.FreeAt.Format(time.RFC3339Nano), until)
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return fmt.Errorf("lease: stopped waiting (%w); the lease stays broken and is free from %s", ctx.Err(), res.FreeAt.Format(time.RFC3339Nano))
		case <-t.C:
		}
	}
	say("the lease is free: the next writer takes it over in a new epoch")
	return report()
}
