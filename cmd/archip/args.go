package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/catalog"
)

// exactArgs is cobra.ExactArgs with a usage error and the names of the
// arguments in the message.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageError{fmt.Errorf("%s takes %d argument(s): %s (got %d)", c.CommandPath(), len(names), strings.Join(names, " "), len(args))}
		}
		return nil
	}
}

func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "unknown shorthand flag") || strings.Contains(s, "flag needs an argument")
}

// group returns a command that only holds subcommands: alone it prints
// its help, with an unknown subcommand it fails with a usage error.
func group(use, short, long string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q; see %s --help", args[0], c.CommandPath(), c.CommandPath())}
			}
			return c.Help()
		},
	}
}

// checkNames checks volume, snapshot and image names given as arguments,
// before anything is opened.
func checkNames(names ...string) error {
	for _, n := range names {
		if err := catalog.ValidName(n); err != nil {
			return usageError{err}
		}
	}
	return nil
}
