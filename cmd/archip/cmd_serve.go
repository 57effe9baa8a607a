package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archip/internal/daemon"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/nbd"
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
	nodeID      string
	adminListen string
	adminAddr   string
	leaseTTL    time.Duration
	maxDrift    time.Duration
	maxConns    int
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

NBD over a network should authenticate both ends: --tls-cert and --tls-key
for the server, --tls-ca and --tls-required to serve only clients with a
certificate that CA signed.`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			return runServe(c.Context(), g, o)
		},
	}
	c.Flags().StringArrayVar(&o.nbdListen, "nbd-listen", []string{"127.0.0.1:10809"},
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
	host, _ := os.Hostname()
	c.Flags().StringVar(&o.nodeID, "node-id", fmt.Sprintf("%s-%d", host, os.Getpid()),
		"this daemon's name in the leases it holds; unique among the daemons sharing the store")
	c.Flags().StringVar(&o.adminListen, "admin-listen", "127.0.0.1:0",
		"HOST:PORT of the admin API, where other nodes ask for handoffs (port 0: any free port)")
	c.Flags().StringVar(&o.adminAddr, "admin-advertise", "",
		"the admin address other hosts should use, if not the one listened on (for example behind NAT, or when listening on 0.0.0.0)")
	c.Flags().DurationVar(&o.leaseTTL, "lease-ttl", 5*time.Second,
		"how long a lease lasts without renewal: how long other nodes wait for a node that died")
	c.Flags().DurationVar(&o.maxDrift, "max-clock-drift", 500*time.Millisecond,
		"the largest difference between the clocks of the hosts sharing the store (under a third of --lease-ttl)")
	c.Flags().StringVar(&o.cpuProfile, "cpuprofile", "", "write a Go CPU profile to this file until the daemon stops (for diagnosing performance)")
	return c
}

// listen opens an NBD listener: HOST:PORT or unix:PATH. A stale socket
// file (nobody listening) is removed first.
func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("serve: %s is in use by another server", path)
		}
		os.Remove(path)
		return net.Listen("unix", path)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, usageError{fmt.Errorf("--nbd-listen %q: want HOST:PORT or unix:PATH", addr)}
	}
	return net.Listen("tcp", addr)
}

func runServe(ctx context.Context, g *globals, o serveOptions) error {
	if o.maxConns < 1 {
		return usageError{fmt.Errorf("--max-connections %d: must be at least 1", o.maxConns)}
	}
	srv := &nbd.Server{Errno: daemon.Errno, TLSRequired: o.tlsRequired, MaxConns: o.maxConns}
	if o.tlsCert != "" || o.tlsKey != "" {
		cfg, err := nbd.ServerTLS(o.tlsCert, o.tlsKey, o.tlsCA, o.tlsRequired)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		srv.TLS = cfg
	} else if o.tlsRequired || o.tlsCA != "" {
		return usageError{errors.New("--tls-required and --tls-ca need --tls-cert and --tls-key")}
	}
	srv.Warnf = func(format string, args ...any) { fmt.Fprintf(g.stderr, format+"\n", args...) }
	if o.verbose {
		srv.Logf = srv.Warnf
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
	m, err := g.manager(ctx, true)
	if err != nil {
		return err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(g.stderr, format+"\n", args...) }
	adminL, err := net.Listen("tcp", o.adminListen)
	if err != nil {
		return fmt.Errorf("serve: --admin-listen: %w", err)
	}
	defer adminL.Close()
	advertise := o.adminAddr
	if advertise == "" {
		advertise = adminL.Addr().String()
		if ip := adminL.Addr().(*net.TCPAddr).IP; ip.IsUnspecified() {
			return usageError{fmt.Errorf("--admin-listen %s: other nodes cannot reach an unspecified address; give --admin-advertise HOST:PORT", o.adminListen)}
		}
	}
	m.Leases, err = lease.NewManager(m.Store, lease.Config{Node: o.nodeID, Addr: advertise, TTL: o.leaseTTL, MaxDrift: o.maxDrift,
		Ask: lease.HTTPAsk(o.leaseTTL / 2), Logf: logf})
	if err != nil {
		return usageError{err}
	}
	d := daemon.New(m, logf)
	srv.Exports = d
	admin := &http.Server{Handler: d.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go admin.Serve(adminL)
	defer admin.Close()
	fmt.Fprintf(g.stderr, "archip: node %s, admin API on %s\n", o.nodeID, advertise)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			if a, ok := l.Addr().(*net.UnixAddr); ok {
				os.Remove(a.Name)
			}
		}
	}()
	for _, a := range o.nbdListen {
		l, err := listen(a)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return err
		}
		ls = append(ls, l)
	}
	flushDone := make(chan struct{})
	fctx, stopFlush := context.WithCancel(context.Background())
	go func() {
		defer close(flushDone)
		if o.flushEvery > 0 {
			d.FlushLoop(fctx, o.flushEvery, logf)
		}
	}()
	errc := make(chan error, len(ls))
	for _, l := range ls {
		go func() { errc <- srv.Serve(l) }()
		fmt.Fprintf(g.stderr, "archip: serving %s over NBD on %s\n", g.store, l.Addr())
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	stopFlush()
	<-flushDone
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := d.Close(sctx); err != nil {
		return fmt.Errorf("serve: flush on shutdown: %w", err)
	}
	if serveErr != nil && !errors.Is(serveErr, nbd.ErrServerClosed) {
		return serveErr
	}
	fmt.Fprintln(g.stderr, "archip: stopped; every volume flushed")
	return nil
}
