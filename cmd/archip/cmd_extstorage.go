package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/extstorage"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/nbdattach"
)

type extstorageOptions struct {
	nbd    string
	admin  string
	runDir string
}

func (o *extstorageOptions) addFlags(c *cobra.Command) {
	nbdFlag(c.PersistentFlags(), &o.nbd, defaultNBDListen)
	c.PersistentFlags().StringVar(&o.admin, "admin", "",
		"the --admin-listen address of 'archip serve' on this node: close asks it to flush and release the volume's lease")
	c.PersistentFlags().StringVar(&o.runDir, "run-dir", "/run/archip/extstorage",
		"where attach keeps the state of each attached volume (its nbdfuse mount point and loop device)")
}

func newExtstorageCommand(g *globals) *cobra.Command {
	var o extstorageOptions
	c := group("extstorage", "Ganeti ExtStorage provider: the actions Ganeti runs on its disks", `The Ganeti ExtStorage provider (man ganeti-extstorage-interface). Install it on
every node of the node group, under Ganeti's ExtStorage search path, with the
store all nodes share and the addresses of this node's 'archip serve':

  archip --store URL extstorage install /srv/ganeti/extstorage/archip \
      --nbd unix:/run/archip/nbd.sock --admin 10.0.0.11:7701

which writes one executable per action (create, attach, detach, remove,
grow, setinfo, verify, snapshot, open, close), each running 'archip
extstorage ACTION' with these settings, and parameters.list. Then:

  gnt-instance add -t ext --disk 0:size=10G,provider=archip,origin=IMAGE ...

Ganeti passes VOL_NAME, VOL_SIZE and VOL_NEW_SIZE (mebibytes), VOL_METADATA,
VOL_SNAPSHOT_NAME, VOL_OPEN_EXCLUSIVE and the disk's parameters as EXTP_*:
  origin   clone the disk from this image or snapshot (no data copied)
  store    a store URL other than the provider's

attach prints a block device (a loop device over nbdfuse, which works with
or without a kernel NBD client) and a kvm: URI, the volume's NBD export on
this node's daemon, which KVM uses with disk access "userspace". open with
VOL_OPEN_EXCLUSIVE=True makes any other node writing the volume flush and
hand its lease over; close asks this node's daemon to do so.

Exit codes: 0 success, 1 the action failed, 2 an environment Ganeti would not
set (a missing or malformed variable, an unknown parameter).`)
	o.addFlags(c)
	for _, a := range extstorage.Actions {
		action := a
		ac := &cobra.Command{
			Use:   action,
			Short: "The ExtStorage " + action + " action (environment as Ganeti sets it)",
			Args: func(c *cobra.Command, args []string) error {
				if len(args) > 0 {
					return usageError{fmt.Errorf("%s takes no arguments: Ganeti passes the disk in VOL_* and EXTP_* variables (see archip extstorage --help)", c.CommandPath())}
				}
				return nil
			},
			RunE: func(c *cobra.Command, args []string) error {
				return runExtstorage(c.Context(), g, o, action, os.Environ())
			},
		}
		if action == "verify" {
			ac.Args = cobra.ArbitraryArgs // the checks to run: all of them are
		}
		c.AddCommand(ac)
	}
	c.AddCommand(&cobra.Command{
		Use:   "install DIR",
		Short: "Write the provider's directory: an executable per action and parameters.list",
		Args:  exactArgs("DIR"),
		RunE: func(c *cobra.Command, args []string) error {
			return runExtstorageInstall(g, o, args[0])
		},
	}, &cobra.Command{
		Use:   "parameters",
		Short: "Print parameters.list: the parameters a disk may have",
		Args:  exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			_, err := fmt.Fprint(g.stdout, extstorage.ParametersList())
			return err
		},
	}, &cobra.Command{
		Use:   "info VOLUME",
		Short: "Print the metadata Ganeti set on a disk (setinfo): the instance it belongs to",
		Args:  exactArgs("VOLUME"),
		RunE: func(c *cobra.Command, args []string) error {
			return runExtstorageInfo(c.Context(), g, args[0])
		},
	})
	return c
}

func runExtstorage(ctx context.Context, g *globals, o extstorageOptions, action string, environ []string) error {
	r, err := extstorage.ParseEnv(action, environ)
	if err != nil {
		return usageError{err}
	}
	store := g.store
	if s := r.Param("store"); s != "" {
		store = s
	}
	p := &extstorage.Provider{
		Open: func(ctx context.Context) (*manage.Manager, error) {
			gs := *g
			gs.store = store
			m, err := gs.manager(ctx, false)
			if err != nil {
				return nil, fmt.Errorf("extstorage: cannot open the store %s: %w", store, err)
			}
			return m, nil
		},
		NBD:      o.nbd,
		Admin:    o.admin,
		Attacher: &nbdattach.FuseLoop{RunDir: o.runDir},
		Out:      g.stdout,
		Logf:     func(format string, args ...any) { fmt.Fprintf(g.stderr, "archip: "+format+"\n", args...) },
	}
	return p.Run(ctx, r)
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func runExtstorageInstall(g *globals, o extstorageOptions, dir string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("extstorage: cannot find this program's path: %w", err)
	}
	if self, err = filepath.Abs(self); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	flags := []string{"--nbd", o.nbd, "--run-dir", o.runDir}
	if o.admin != "" {
		flags = append(flags, "--admin", o.admin)
	}
	for _, a := range extstorage.Actions {
		line := []string{"exec", shellQuote(self), "--store", shellQuote(g.store), "extstorage", a}
		for _, f := range flags {
			line = append(line, shellQuote(f))
		}
		script := fmt.Sprintf(`#!/bin/sh
# The %s action of the Ganeti ExtStorage provider "archip", written by
# 'archip extstorage install'. Ganeti runs it with VOL_* and EXTP_* set:
# see 'archip extstorage --help'. Ganeti may clean the environment:
# attach and detach need PATH to find nbdfuse, losetup and fusermount3.
PATH=${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}
export PATH
%s "$@"
`, a, strings.Join(line, " "))
		if err := writeFileAtomic(filepath.Join(dir, a), []byte(script), 0o755); err != nil {
			return err
		}
	}
	if err := writeFileAtomic(filepath.Join(dir, "parameters.list"), []byte(extstorage.ParametersList()), 0o644); err != nil {
		return err
	}
	if !g.quiet {
		fmt.Fprintf(g.stdout, "installed the ExtStorage provider %q in %s: store %s, NBD %s\n", filepath.Base(dir), dir, g.store, o.nbd)
	}
	return nil
}

// writeFileAtomic replaces name with data: Ganeti may run the old file
// meanwhile.
func writeFileAtomic(name string, data []byte, mode os.FileMode) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil { // whatever the umask
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func runExtstorageInfo(ctx context.Context, g *globals, name string) error {
	if err := checkNames(name); err != nil {
		return err
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	in, ok, err := extstorage.ReadInfo(ctx, m, name)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("extstorage: no metadata was set on " + name + " (Ganeti sets it with setinfo)")
	}
	if g.json {
		return g.printJSON(in)
	}
	fmt.Fprintf(g.stdout, "volume:    %s\nmetadata:  %s\n", in.Volume, in.Metadata)
	if in.CName != "" {
		fmt.Fprintf(g.stdout, "disk name: %s\n", in.CName)
	}
	if in.UUID != "" {
		fmt.Fprintf(g.stdout, "disk uuid: %s\n", in.UUID)
	}
	fmt.Fprintf(g.stdout, "updated:   %s\n", in.Updated.Format("2006-01-02 15:04:05"))
	return nil
}
