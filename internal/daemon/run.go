package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
)

// A Frontend serves the daemon's volumes to the clients of one protocol
// (NBD, S3, ...). It opens volumes with Daemon.Open and releases each
// when its client is done with it; it never reaches the store by itself.
type Frontend interface {
	// Serve accepts clients on l until Shutdown, and then returns nil;
	// any other return is an error that stops the daemon. Run calls it
	// once for each of the frontend's listeners, concurrently, and Serve
	// closes l when it returns.
	Serve(l net.Listener) error
	// Shutdown stops accepting, lets the clients finish the requests in
	// progress, ends them, and releases every volume they opened. It
	// returns ctx's error if the clients are not gone when ctx ends, after
	// cutting them off. The daemon flushes and closes every volume after
	// Shutdown returns.
	Shutdown(ctx context.Context) error
}

// FrontendConfig is one frontend of a daemon, and where it listens.
type FrontendConfig struct {
	// Name is the frontend's protocol in logs and errors ("NBD").
	Name string
	// Listen lists the addresses to serve on: HOST:PORT or unix:PATH.
	// Run opens them all before serving anything, removing a stale unix
	// socket file (one nobody listens on) first, and removes the unix
	// socket files it created when it returns.
	Listen []string
	// New builds the frontend on the running daemon.
	New func(d *Daemon) Frontend
}

// Config is what Run needs to run a node daemon.
type Config struct {
	// Manager is the store's manager. Run sets its Leases.
	Manager *manage.Manager
	// Store names the store in logs.
	Store string
	// Node names this daemon in the leases it holds: unique among the
	// daemons sharing the store.
	Node string
	// AdminListen is the HOST:PORT of the admin API (see AdminHandler).
	AdminListen string
	// AdminAdvertise is the admin address other nodes use, if not the
	// one listened on.
	AdminAdvertise string
	// AdminToken is the bearer token the admin API requires, and that
	// this node's handoff requests carry: every daemon sharing the store
	// uses the same. Run refuses an admin API beyond loopback without
	// one.
	AdminToken string
	// LeaseTTL and MaxClockDrift are the lease timing every daemon of
	// the store must share (see lease.Config).
	LeaseTTL, MaxClockDrift time.Duration
	// FlushInterval is the period of FlushLoop; 0 runs none.
	FlushInterval time.Duration
	// ShutdownTimeout bounds how long the frontends are drained and the
	// volumes flushed on shutdown (default 30s).
	ShutdownTimeout time.Duration
	Frontends       []FrontendConfig
	// Metrics, if set, counts the daemon's requests, lease events and
	// frontend connections, and the admin API serves them at /metrics.
	// Build Manager on Metrics.WrapStore's store to count the store's
	// calls too.
	Metrics *Metrics
	// Dashboard, if set, builds the handler of the admin API's /ui/
	// pages on the running daemon (see Daemon.UseDashboard).
	Dashboard func(d *Daemon) http.Handler
	// Logger hears what the daemon does, one record per event (see
	// Daemon.SetLogger); nil: Logf's.
	Logger *slog.Logger
	// Logf hears what the daemon does as lines of text, if Logger is nil
	// (nil: silent).
	Logf func(format string, args ...any)
}

// ConfigError is an error in a Config: the caller's to correct.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Validate reports every problem of c at once, in a *ConfigError.
func (c *Config) Validate() error {
	var errs []error
	if c.Manager == nil {
		errs = append(errs, errors.New("daemon: no store manager"))
	}
	lc := lease.Config{Node: c.Node, TTL: c.LeaseTTL, MaxDrift: c.MaxClockDrift}
	if err := lc.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.FlushInterval < 0 {
		errs = append(errs, fmt.Errorf("daemon: flush interval %s is negative", c.FlushInterval))
	}
	for _, f := range c.Frontends {
		if f.New == nil {
			errs = append(errs, fmt.Errorf("daemon: frontend %s has no constructor", f.Name))
		}
		for _, a := range f.Listen {
			if _, ok := strings.CutPrefix(a, "unix:"); ok {
				continue
			}
			if _, _, err := net.SplitHostPort(a); err != nil {
				errs = append(errs, fmt.Errorf("daemon: %s listener %q: want HOST:PORT or unix:PATH", f.Name, a))
			}
		}
	}
	if len(errs) > 0 {
		return &ConfigError{errors.Join(errs...)}
	}
	return nil
}

// Run runs a node daemon until ctx ends or a frontend fails: it starts
// the admin API and takes part in the lease protocol, opens every
// frontend's listeners, serves, and flushes volumes every
// FlushInterval. Then it shuts down in this order: the flush loop stops,
// the frontends stop accepting and drain (their clients' volumes are
// released), every volume is flushed and closed, which releases its
// lease, and last the admin API stops (other nodes may ask for a
// handoff until then). A configuration error is a *ConfigError.
func Run(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	log := c.Logger
	if log == nil {
		log = LogfLogger(c.Logf)
	}
	timeout := c.ShutdownTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	adminL, err := net.Listen("tcp", c.AdminListen)
	if err != nil {
		return fmt.Errorf("daemon: admin API: %w", err)
	}
	defer adminL.Close()
	if ip := adminL.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() && c.AdminToken == "" {
		return &ConfigError{fmt.Errorf("daemon: admin API on %s is reachable beyond this host: give it a token (or listen on loopback)", c.AdminListen)}
	}
	advertise := c.AdminAdvertise
	if advertise == "" {
		advertise = adminL.Addr().String()
		if ip := adminL.Addr().(*net.TCPAddr).IP; ip.IsUnspecified() {
			return &ConfigError{fmt.Errorf("daemon: admin API on %s: other nodes cannot reach an unspecified address; give the address to advertise", c.AdminListen)}
		}
	}
	m := c.Manager
	m.Leases, err = lease.NewManager(m.Store, lease.Config{Node: c.Node, Addr: advertise, TTL: c.LeaseTTL, MaxDrift: c.MaxClockDrift,
		Ask: lease.HTTPAskToken(c.LeaseTTL/2, c.AdminToken), Logf: Logf(log, slog.LevelWarn, "lease")})
	if err != nil {
		return &ConfigError{err}
	}
	m.AskEpoch = lease.HTTPEpochAskToken(c.LeaseTTL/2, c.AdminToken)
	d := New(m, nil)
	d.SetLogger(log)
	d.RequireToken(c.AdminToken)
	if h, _, err := net.SplitHostPort(advertise); err == nil {
		d.AdvertiseHost(h)
	}
	if c.Metrics != nil {
		d.UseMetrics(c.Metrics)
	}
	if c.Dashboard != nil {
		d.UseDashboard(c.Dashboard(d))
	}
	admin := &http.Server{Handler: d.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	adminDone := make(chan struct{})
	go func() { defer close(adminDone); admin.Serve(adminL) }()
	defer func() { admin.Close(); <-adminDone }()
	log.Info("admin API", "node", c.Node, "addr", advertise, "listen", adminL.Addr().String(), "auth", c.AdminToken != "")

	type listener struct {
		fe   int
		l    net.Listener
		addr string
	}
	var ls []listener
	defer func() {
		for _, l := range ls {
			if a, ok := l.l.Addr().(*net.UnixAddr); ok {
				os.Remove(a.Name)
			}
		}
	}()
	for i, fc := range c.Frontends {
		for _, a := range fc.Listen {
			l, err := listen(a)
			if err != nil {
				for _, l := range ls {
					l.l.Close()
				}
				return fmt.Errorf("daemon: %s listener %s: %w", fc.Name, a, err)
			}
			if c.Metrics != nil {
				l = c.Metrics.countConns(l, strings.ToLower(fc.Name))
			}
			ls = append(ls, listener{i, l, a})
		}
	}
	fes := make([]Frontend, len(c.Frontends))
	for i, fc := range c.Frontends {
		fes[i] = fc.New(d)
	}

	var flushing sync.WaitGroup
	fctx, stopFlush := context.WithCancel(context.Background())
	if c.FlushInterval > 0 {
		flushing.Add(1)
		go func() { defer flushing.Done(); d.FlushLoop(fctx, c.FlushInterval, nil) }()
	}
	errc := make(chan error, len(ls))
	for _, l := range ls {
		go func() { errc <- fes[l.fe].Serve(l.l) }()
		log.Info("serving", "store", c.Store, "frontend", c.Frontends[l.fe].Name, "addr", l.l.Addr().String())
	}
	var serveErr error
	running := len(ls)
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		running--
	}
	stopFlush()
	flushing.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, fe := range fes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fe.Shutdown(sctx); err != nil {
				log.Warn("stopping a frontend", "frontend", c.Frontends[i].Name, "err", err)
			}
		}()
	}
	wg.Wait()
	for ; running > 0; running-- {
		if err := <-errc; err != nil {
			log.Warn("a frontend stopping", "err", err)
		}
	}
	if err := d.Close(sctx); err != nil {
		return fmt.Errorf("daemon: flush on shutdown: %w", err)
	}
	if serveErr != nil {
		return serveErr
	}
	log.Info("stopped; every volume flushed")
	return nil
}

// listen opens a listener: HOST:PORT or unix:PATH. A stale socket file
// (nobody listening) is removed first.
func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another server", path)
		}
		os.Remove(path)
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", addr)
}
