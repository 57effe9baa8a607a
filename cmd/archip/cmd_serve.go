package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/daemon"
	"github.com/archipelago-go/archip/internal/dashboard"
	"github.com/archipelago-go/archip/internal/frontend/nbdfe"
	"github.com/archipelago-go/archip/internal/manage"
)

type serveOptions struct {
	nbdListen   []string
	tlsCert     string
	tlsKey      string
	tlsRequired bool
	tlsCA       string
	verbose     bool
	cpuProfile  string
	flushEvery  time.Duration
	shutdownIn  time.Duration
	nodeID      string
	adminListen string
	adminAddr   string
	leaseTTL    time.Duration
	maxDrift    time.Duration
	maxConns    int
	s3          s3Options
	metrics     bool
	dashboard   bool
	metricsVols int
}

func newServeCommand(g *globals) *cobra.Command {
	var o serveOptions
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the node daemon: export every volume over NBD",
		Long: `Run the node daemon. Every volume, snapshot and image of the store is an NBD
export named after it (snapshots and images read-only), on each --nbd-listen
address, until SIGTERM or SIGINT, which flushes every volume and exits.

Attach a volume to QEMU:
  -blockdev driver=nbd,server.type=unix,server.path=SOCK,export=NAME,node-name=d0
  -device virtio-blk-pci,drive=d0
or use nbd://127.0.0.1:10809/NAME with qemu-img, nbdinfo, nbdcopy, nbdfuse, fio.

Several daemons, on one host or many, may serve one store (a shared file://
directory on NFS, or RADOS): any of them can serve any volume. Reads go
anywhere; the first write on a node takes the volume's lease, asking the
node that holds it (at its --admin-listen address, recorded in the lease)
to flush and hand over. That is all QEMU live migration needs: attach the
destination to its own host's daemon. A node that stops renewing its leases
(crashed, cut off) loses them after --lease-ttl, and has stopped writing by
then. Every daemon sharing a store must use the same --lease-ttl and
--max-clock-drift, and a --node-id of its own.

With --s3-listen, the daemon also serves the store's buckets and objects
over an S3-compatible API (path-style, SigV4, keys from --s3-keys-file or
ARCHIP_S3_ACCESS_KEY/ARCHIP_S3_SECRET_KEY); objects share blocks with volumes
and images.

NBD over a network should authenticate both ends: --tls-cert and --tls-key
for the server, --tls-ca and --tls-required to serve only clients with a
certificate that CA signed.

The admin API (handoffs, /v1/volumes, /metrics for Prometheus) requires a
bearer token when one is given (--admin-token-file or ARCHIP_ADMIN_TOKEN),
and refuses to listen beyond loopback without one. Every daemon sharing the
store, and the CLI commands that ask them for handoffs, use the same token.
The admin API also serves a read-only web dashboard at /ui/ (--dashboard):
volumes and their lineage, space, leases, live I/O. A browser signs in with
the token once (a form, or /ui/?token=TOKEN), which sets a cookie that opens
the dashboard's pages only.

Logs: one record per event on stderr (--log-format text or json,
--log-level).`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			return runServe(c.Context(), g, o)
		},
	}
	c.Flags().StringArrayVar(&o.nbdListen, "nbd-listen", []string{defaultNBDListen},
		"NBD listener: HOST:PORT or unix:PATH (repeatable); the default listens on loopback only")
	c.Flags().StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate for NBD_OPT_STARTTLS")
	c.Flags().StringVar(&o.tlsKey, "tls-key", "", "PEM private key for --tls-cert")
	c.Flags().BoolVar(&o.tlsRequired, "tls-required", false,
		"refuse clients that do not use TLS (needs --tls-cert); with --tls-ca, also those without a client certificate it signed")
	c.Flags().StringVar(&o.tlsCA, "tls-ca", "",
		"PEM `FILE` of the CA that signs client certificates: a client presenting a certificate it did not sign is refused (needs --tls-cert)")
	c.Flags().BoolVarP(&o.verbose, "verbose", "v", false, "log connection errors")
	c.Flags().IntVar(&o.maxConns, "max-connections", 1024,
		"NBD connections served at once (each costs 128 KiB and what its requests hold); more are refused")
	c.Flags().DurationVar(&o.flushEvery, "flush-interval", 10*time.Second,
		"flush volumes with unflushed writes this often, for clients that never flush (0: only when clients flush)")
	c.Flags().DurationVar(&o.shutdownIn, "shutdown-timeout", 30*time.Second,
		"on SIGTERM or SIGINT, how long to drain clients and close volumes (a close checkpoints each volume's write log: on S3 a put per block it touched); a volume not closed in time keeps its log, which the next open replays")
	host, _ := os.Hostname()
	c.Flags().StringVar(&o.nodeID, "node-id", fmt.Sprintf("%s-%d", host, os.Getpid()),
		"this daemon's name in the leases it holds; unique among the daemons sharing the store")
	c.Flags().StringVar(&o.adminListen, "admin-listen", "127.0.0.1:0",
		"HOST:PORT of the admin API, where other nodes ask for handoffs and Prometheus scrapes /metrics (port 0: any free port); beyond loopback it needs a token (--admin-token-file)")
	c.Flags().StringVar(&o.adminAddr, "admin-advertise", "",
		"the admin address other hosts should use, if not the one listened on (for example behind NAT, or when listening on 0.0.0.0)")
	c.Flags().DurationVar(&o.leaseTTL, "lease-ttl", 5*time.Second,
		"how long a lease lasts without renewal: how long other nodes wait for a node that died")
	c.Flags().DurationVar(&o.maxDrift, "max-clock-drift", 500*time.Millisecond,
		"the largest difference between the clocks of the hosts sharing the store (under a third of --lease-ttl)")
	addS3Flags(c, &o.s3)
	c.Flags().BoolVar(&o.metrics, "metrics", true, "count requests, leases and store calls, served for Prometheus at /metrics on the admin API")
	c.Flags().BoolVar(&o.dashboard, "dashboard", true, "serve a read-only web dashboard at /ui/ on the admin API (its live I/O needs --metrics)")
	c.Flags().IntVar(&o.metricsVols, "metrics-volumes", daemon.DefaultVolumeLabels,
		"volumes with series of their own in the metrics (more are counted together as volume=\"_other\"; -1: every open volume, and the 100 closed last)")
	c.Flags().StringVar(&o.cpuProfile, "cpuprofile", "", "write a Go CPU profile to this file until the daemon stops (for diagnosing performance)")
	return c
}

func runServe(ctx context.Context, g *globals, o serveOptions) error {
	// Checked here as well as by nbdfe and daemon.Run, to name the flags.
	if o.maxConns < 1 {
		return usageError{fmt.Errorf("--max-connections %d: must be at least 1", o.maxConns)}
	}
	if o.shutdownIn <= 0 {
		return usageError{fmt.Errorf("--shutdown-timeout %s: must be positive", o.shutdownIn)}
	}
	if (o.tlsRequired || o.tlsCA != "") && o.tlsCert == "" && o.tlsKey == "" {
		return usageError{errors.New("--tls-required and --tls-ca need --tls-cert and --tls-key")}
	}
	if o.metricsVols == 0 || o.metricsVols < -1 {
		return usageError{fmt.Errorf("--metrics-volumes %d: give a bound of at least 1, or -1 for none", o.metricsVols)}
	}
	for _, a := range o.nbdListen {
		if _, _, err := net.SplitHostPort(a); err != nil && !strings.HasPrefix(a, "unix:") {
			return usageError{fmt.Errorf("--nbd-listen %q: want HOST:PORT or unix:PATH", a)}
		}
	}
	if o.adminAddr == "" {
		if host, _, err := net.SplitHostPort(o.adminListen); err == nil {
			if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
				return usageError{fmt.Errorf("--admin-listen %s: other nodes cannot reach an unspecified address; give --admin-advertise HOST:PORT", o.adminListen)}
			}
		}
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	nc := nbdfe.Config{Listen: o.nbdListen, TLSCert: o.tlsCert, TLSKey: o.tlsKey, TLSCA: o.tlsCA,
		TLSRequired: o.tlsRequired, MaxConns: o.maxConns, Warnf: daemon.Logf(log, slog.LevelWarn, "nbd")}
	if o.verbose {
		nc.Logf = daemon.Logf(log, slog.LevelInfo, "nbd")
	}
	nbdFrontend, err := nc.Frontend()
	if err != nil {
		return serveError(err)
	}
	var verboseLog func(string, ...any)
	if o.verbose {
		verboseLog = daemon.Logf(log, slog.LevelInfo, "s3")
	}
	s3Frontends, err := s3Frontend(o.s3, o.tlsCert, o.tlsKey, verboseLog)
	if err != nil {
		return err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	token, err := g.adminToken()
	if err != nil {
		return err
	}
	m, err := g.manager(ctx, true)
	if err != nil {
		return err
	}
	var mx *daemon.Metrics
	if o.metrics {
		mx = daemon.NewMetrics(daemon.MetricsConfig{VolumeLabels: o.metricsVols})
		backend, _, ok := strings.Cut(g.store, "://")
		if !ok {
			backend = "file" // a directory
		}
		m = manage.NewWithAdminToken(mx.WrapStore(m.Store, backend), token)
	}
	var dash func(d *daemon.Daemon) http.Handler
	if o.dashboard {
		dash = func(d *daemon.Daemon) http.Handler {
			return dashboard.New(dashboard.Config{Manager: m, Daemon: d, Metrics: mx, Node: o.nodeID, Store: g.store})
		}
	}
	return serveError(daemon.Run(ctx, daemon.Config{
		Manager:         m,
		Store:           g.store,
		Node:            o.nodeID,
		AdminListen:     o.adminListen,
		AdminAdvertise:  o.adminAddr,
		AdminToken:      token,
		LeaseTTL:        o.leaseTTL,
		MaxClockDrift:   o.maxDrift,
		FlushInterval:   o.flushEvery,
		ShutdownTimeout: o.shutdownIn,
		Frontends:       append([]daemon.FrontendConfig{nbdFrontend}, s3Frontends...),
		Logger:          log,
		Metrics:         mx,
		Dashboard:       dash,
	}))
}

// serveError makes a configuration error a usage error, and prefixes
// others with the command.
func serveError(err error) error {
	var ce *daemon.ConfigError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return usageError{err}
	}
	return fmt.Errorf("serve: %w", err)
}
