// Command archip is the Archipelago CLI: management commands that work
// directly on a store, and (later) the node daemon.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"syscall"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/all"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the operation failed
	exitUsage = 2 // bad arguments or flags
)

// globals are the flags and streams every command shares.
type globals struct {
	store  string
	json   bool
	quiet  bool
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	// logLevel and logFormat shape the log of archip serve (logger).
	logLevel, logFormat string
	adminTokenFile      string // see adminToken

	spoolMemory int // volume write: 0 is the default, spoolMemory; tests lower it
}

func defaultStore() string {
	if s := os.Getenv("ARCHIP_STORE"); s != "" {
		return s
	}
	base := os.Getenv("XDG_DATA_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "file://./archip-data"
		}
		base = filepath.Join(home, ".local", "share")
	}
	return "file://" + filepath.Join(base, "archip")
}

// usageError marks errors in how a command was called (exit code 2).
type usageError struct{ error }

func newRootCommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "archip",
		Short: "Archipelago: volumes, snapshots, thin clones and deduplicated images on pluggable storage",
		Long: `Archipelago stores VM disks (volumes) and images as block maps over an object
store. Clones and snapshots copy no data; identical blocks are stored once.

The store is named by a URL, given with --store or ARCHIP_STORE:
  file:///var/lib/archip    a directory on a local disk or NFS (the default kind)
  rados://POOL?conf=/etc/ceph/ceph.conf
                            a Ceph RADOS pool (in builds with Ceph support)
  s3://BUCKET/PREFIX?endpoint=https://HOST
                            an S3-compatible bucket; keys from the AWS
                            environment variables or shared files
  pools:///etc/archip/store.toml
                            metadata on one of those, blocks in named data
                            pools (--pool NAME at create, clone, import)
  mem://NAME                in memory, for tests
See the README's store URL table for every parameter.
Without either, the store is ` + defaultStore() + `.

Exit codes: 0 success, 1 the operation failed, 2 bad arguments: an unknown
command or flag, a malformed name or size, a size, offset or length out of
range (for the volume named, too), or a refusal that a flag overrides
(--force, --allow-shrink).
A name that is missing or already taken is a failure (1).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.store, "store", defaultStore(), "store URL (env ARCHIP_STORE)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print results as JSON, for scripts")
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", false, "print no progress")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "least severe log records printed: debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log records as text (key=value) or json, one per line")
	root.PersistentFlags().StringVar(&g.adminTokenFile, "admin-token-file", "",
		"`FILE` holding the bearer token of the daemons' admin API (env ARCHIP_ADMIN_TOKEN): serve requires it, other commands send it to ask for handoffs")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newVolumeCommand(g), newImageCommand(g), newStoreCommand(g), newServeCommand(g), newGCCommand(g), newLeaseCommand(g), newTopCommand(g), newExtstorageCommand(g), newCSICommand(g))
	return root
}

// run executes the CLI and returns the exit code.
func run(ctx context.Context, args []string, g *globals) int {
	root := newRootCommand(g)
	root.SetArgs(args)
	root.SetIn(g.stdin)
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(g.stderr, "archip:", err)
	if isUsage(err) {
		return exitUsage
	}
	return exitError
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startCPUProfile(os.Getenv("ARCHIP_CPUPROFILE"), os.Stderr)
	code := run(ctx, os.Args[1:], &globals{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr})
	stopProfile()
	stop()
	os.Exit(code)
}

// startCPUProfile writes a Go CPU profile of the whole command to path
// (ARCHIP_CPUPROFILE, for diagnosing performance; serve has --cpuprofile
// too) until the returned function is called; "" profiles nothing.
func startCPUProfile(path string, stderr io.Writer) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "archip: ARCHIP_CPUPROFILE:", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// manager opens the store. Commands that write pass create, so the first
// write to a new directory makes the store.
func (g *globals) manager(ctx context.Context, create bool) (*manage.Manager, error) {
	tok, err := g.adminToken()
	if err != nil {
		return nil, err
	}
	s, err := all.Registry().Open(ctx, g.store, objstore.OpenOptions{Create: create})
	if err != nil {
		return nil, err
	}
	m := manage.NewWithAdminToken(s, tok)
	var told sync.Once // operations of a daemon upgrade at once
	m.Catalog.Upgraded = func(rep catalog.UpgradeReport) {
		told.Do(func() {
			fmt.Fprintf(g.stderr, "archip: upgraded the store's catalog from format %d to %d; restart older archip processes still running on this store, then run archip gc\n", rep.From, rep.To)
		})
	}
	return m, nil
}

// printJSON writes v as indented JSON.
func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// progress returns a progress callback drawing a bar on a terminal, or
// nil when stderr is not a terminal or --quiet/--json is set.
func (g *globals) progress(label string) (func(done, total int64), func()) {
	f, ok := g.stderr.(*os.File)
	if g.quiet || g.json || !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, func() {}
	}
	var bar *progressbar.ProgressBar
	return func(done, total int64) {
			if bar == nil {
				bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(f),
					progressbar.OptionSetDescription(label), progressbar.OptionShowBytes(true),
					progressbar.OptionThrottle(100_000_000), progressbar.OptionClearOnFinish())
			}
			bar.Set64(done)
		}, func() {
			if bar != nil {
				bar.Finish()
			}
		}
}
