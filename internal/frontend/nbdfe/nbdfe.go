// Package nbdfe is the NBD frontend of the node daemon: it serves the
// daemon's volumes (package daemon) to NBD clients with the server of
// package nbd. Every volume, snapshot and image is an export named after
// it; snapshots and images are read-only. It holds no state of its own:
// leases, handoffs, flushing and shutdown are the daemon's.
package nbdfe

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/archipelago-go/archip/internal/daemon"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/nbd"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/units"
	"github.com/archipelago-go/archip/internal/volume"
)

// Config configures the NBD server.
type Config struct {
	// Listen lists the addresses to serve on: HOST:PORT or unix:PATH.
	Listen []string
	// TLSCert and TLSKey are the PEM files of the server's certificate
	// for NBD_OPT_STARTTLS; TLSCA is the PEM file of the CA that signs
	// client certificates, if they are checked. TLSRequired refuses
	// clients that do not use TLS.
	TLSCert, TLSKey, TLSCA string
	TLSRequired            bool
	// MaxConns is how many connections are served at once (at least 1).
	MaxConns int
	// Warnf hears about trouble; Logf, if set, about every connection
	// error too.
	Warnf, Logf func(format string, args ...any)
}

// Frontend returns c as a frontend of daemon.Run, after checking it and
// loading its TLS files. Errors in how c was given are a
// *daemon.ConfigError.
func (c Config) Frontend() (daemon.FrontendConfig, error) {
	if c.MaxConns < 1 {
		return daemon.FrontendConfig{}, &daemon.ConfigError{Err: fmt.Errorf("nbdfe: %d connections at once: must be at least 1", c.MaxConns)}
	}
	srv := &nbd.Server{Errno: Errno, TLSRequired: c.TLSRequired, MaxConns: c.MaxConns, Warnf: c.Warnf, Logf: c.Logf}
	if c.TLSCert != "" || c.TLSKey != "" {
		cfg, err := nbd.ServerTLS(c.TLSCert, c.TLSKey, c.TLSCA, c.TLSRequired)
		if err != nil {
			return daemon.FrontendConfig{}, err
		}
		srv.TLS = cfg
	} else if c.TLSRequired || c.TLSCA != "" {
		return daemon.FrontendConfig{}, &daemon.ConfigError{Err: errors.New("nbdfe: requiring TLS or a client CA needs a certificate and key")}
	}
	return daemon.FrontendConfig{Name: "NBD", Listen: c.Listen, New: func(d *daemon.Daemon) daemon.Frontend {
		srv.Exports = Exports{d}
		return frontend{srv}
	}}, nil
}

// frontend adapts an nbd.Server to daemon.Frontend.
type frontend struct{ srv *nbd.Server }

func (f frontend) Serve(l net.Listener) error {
	err := f.srv.Serve(l)
	if errors.Is(err, nbd.ErrServerClosed) {
		return nil
	}
	return err
}

func (f frontend) Shutdown(ctx context.Context) error { return f.srv.Shutdown(ctx) }

// Exports serves a daemon's volumes as NBD exports.
type Exports struct{ D *daemon.Daemon }

var _ nbd.Exports = Exports{}

// Open implements nbd.Exports: name is a volume, snapshot or image.
func (x Exports) Open(ctx context.Context, name string) (nbd.Export, func(), error) {
	if name == "" {
		return nil, nil, fmt.Errorf("%w: give the volume's name as the export name", nbd.ErrUnknownExport)
	}
	v, release, err := x.D.Open(ctx, name)
	if errors.Is(err, daemon.ErrNotFound) {
		return nil, nil, fmt.Errorf("%w: %v", nbd.ErrUnknownExport, err)
	}
	if err != nil {
		return nil, nil, err
	}
	if v.Lends() {
		return lendingExport{export{v}}, release, nil
	}
	return export{v}, release, nil
}

// List implements nbd.Exports.
func (x Exports) List(ctx context.Context) ([]nbd.ExportInfo, error) {
	list, err := x.D.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]nbd.ExportInfo, 0, len(list))
	for _, e := range list {
		out = append(out, nbd.ExportInfo{Name: e.Name, Description: fmt.Sprintf("%s, %s", e.Kind, units.FormatSize(e.Size))})
	}
	return out, nil
}

// export adapts a daemon.Volume to nbd.Export. It has no ReadTo: on a
// store that does not lend, a copy into the server's buffer is cheaper.
type export struct{ v *daemon.Volume }

func (e export) Size() int64    { return e.v.Size() }
func (e export) ReadOnly() bool { return e.v.ReadOnly() }

func (e export) ReadAt(ctx context.Context, p []byte, off int64) error {
	return e.v.ReadAt(ctx, p, off)
}

func (e export) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return e.v.WriteAt(ctx, p, off, fua)
}

func (e export) WriteZeroes(ctx context.Context, off, n int64, noHole, fastOnly, fua bool) error {
	return e.v.WriteZeroes(ctx, off, n, noHole, fastOnly, fua)
}

func (e export) Trim(ctx context.Context, off, n int64, fua bool) error {
	return e.v.Trim(ctx, off, n, fua)
}

func (e export) Flush(ctx context.Context) error { return e.v.Flush(ctx) }

func (e export) BlockStatus(ctx context.Context, off, n int64) ([]nbd.Extent, error) {
	ext, err := e.v.BlockStatus(ctx, off, n)
	var out []nbd.Extent
	for _, x := range ext {
		out = append(out, nbd.Extent{Length: x.Length, Hole: x.Zero})
	}
	return out, err
}

// lendingExport is an export on a store that lends what it reads
// (objstore.Lender): reads reach the NBD server in the store's buffers.
type lendingExport struct{ export }

var _ nbd.ReaderTo = lendingExport{}

func (e lendingExport) ReadTo(ctx context.Context, off, n int64, fn func(bufs [][]byte) error) error {
	return e.v.ReadTo(ctx, off, n, fn)
}

// Errno maps an error from a daemon's volume to the errno an NBD reply
// carries.
func Errno(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, daemon.ErrNotFast):
		return nbd.ENOTSUP
	case errors.Is(err, volume.ErrReadOnly), errors.Is(err, objstore.ErrReadOnly):
		return nbd.EPERM
	case errors.Is(err, volume.ErrOutOfRange):
		return nbd.EINVAL
	case errors.Is(err, objstore.ErrNoSpace):
		return nbd.ENOSPC
	case errors.Is(err, volume.ErrClosed), errors.Is(err, context.Canceled):
		return nbd.ESHUTDOWN
	case errors.Is(err, lease.ErrStale), errors.Is(err, lease.ErrLost), errors.Is(err, daemon.ErrLeaseLost):
		return nbd.EIO
	}
	return nbd.EIO
}
