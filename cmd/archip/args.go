package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/units"
	"github.com/archipelago-go/archip/internal/volume"
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

// isUsage reports whether err means the command was called wrong (exit
// 2): a usageError, cobra's own, or one of the errors the packages
// return for a name, size, offset or length no call could use.
func isUsage(err error) bool {
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		return true
	}
	for _, e := range []error{catalog.ErrBadName, volume.ErrBadSize, volume.ErrOutOfRange, manage.ErrShrink} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "unknown shorthand flag") || strings.Contains(s, "flag needs an argument") ||
		strings.HasPrefix(s, "invalid argument")
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

// checkSize refuses a size of 0 for a flag or argument.
func checkSize(what string, n uint64) error {
	if n == 0 {
		return usageError{fmt.Errorf("%s 0: a size must be at least 1 byte", what)}
	}
	return nil
}

// checkMaxSize refuses a volume size over the cap at 2^shift-byte
// blocks; hint says what to do instead.
func checkMaxSize(what string, n uint64, shift uint8, hint string) error {
	if max := blockmap.MaxSizeFor(shift); n > max {
		return usageError{fmt.Errorf("%s %d bytes: over the maximum of %s (%d bytes) at %s blocks (%d blocks: every open holds a volume's whole map in memory); %s",
			what, n, units.FormatSize(int64(max)), max, units.FormatSize(1<<shift), blockmap.MaxBlocks, hint)}
	}
	return nil
}

// sizeLimitHelp states the size cap for --help.
const sizeLimitHelp = `A volume has at most 4194304 (2^22) blocks, because every open holds its
whole map in memory (33 bytes a block, 132 MiB at the most): 16 TiB at the
default 4 MiB blocks, 256 GiB at 64 KiB, 128 TiB at 32 MiB.`

// checkRange refuses a range [off, off+n) that is not inside a volume of
// size bytes.
func checkRange(what string, off, n, size uint64) error {
	if off > size || n > size-off {
		return usageError{fmt.Errorf("%s: offset %d length %d is past the end of the volume (%d bytes)", what, off, n, size)}
	}
	return nil
}
