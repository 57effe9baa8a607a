package extstorage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// Attacher maps a volume's NBD export to a block device of this host.
type Attacher interface {
	// Attach maps the export at uri, the volume name, to a block device
	// and returns its path. If name is already attached it returns the
	// same path and changes nothing.
	Attach(ctx context.Context, name, uri string, readOnly bool) (string, error)
	// Detach undoes Attach. A name that is not attached is no error.
	Detach(ctx context.Context, name string) error
}

// Refresher is an Attacher that can make an attached volume's device
// show the volume's size after a grow (nbdattach.FuseLoop).
type Refresher interface {
	// Refresh does so if name is attached; nothing attached is no error.
	Refresh(ctx context.Context, name, uri string, readOnly bool) error
}

// Provider carries out the actions on one store.
type Provider struct {
	// Open opens the store; actions that need none (detach) never call
	// it.
	Open func(ctx context.Context) (*manage.Manager, error)
	// NBD is the local daemon's NBD listener as 'archip serve
	// --nbd-listen' takes it: unix:PATH or HOST:PORT. attach needs it.
	NBD string
	// Admin is the local daemon's admin API address (HOST:PORT): close
	// asks it to flush and release the volume's lease. Empty: close has
	// nothing to ask, and the lease moves at the next write elsewhere.
	Admin    string
	Attacher Attacher
	Out      io.Writer                                         // attach's two lines
	Logf     func(string, ...any)                              // notes for the log Ganeti keeps
	Ask      func(context.Context, lease.Record, string) error // nil: lease.HTTPAsk
}

// Errors of the provider.
var (
	// ErrNoNBD: attach cannot name the export without the daemon's address.
	ErrNoNBD = errors.New("extstorage: the local daemon's NBD address is not configured: install the provider with --nbd set to an --nbd-listen address of 'archip serve' on this node")
	// ErrOrigin: the origin parameter names nothing that can be cloned.
	ErrOrigin = errors.New("extstorage: bad origin")
)

// InfoPrefix is where setinfo keeps each volume's metadata, as
// InfoPrefix+<volume id>; remove deletes it with the volume.
const InfoPrefix = "extstorage/info/"

// Info is what setinfo stores: Ganeti's VOL_METADATA (it names the
// instance), with the disk it was given for.
type Info struct {
	Volume   string    `json:"volume"`
	Metadata string    `json:"metadata"`
	CName    string    `json:"cname,omitempty"`
	UUID     string    `json:"uuid,omitempty"`
	Updated  time.Time `json:"updated"`
}

// Run carries out r.
func (p *Provider) Run(ctx context.Context, r *Request) error {
	if r.Action == "detach" {
		return p.Attacher.Detach(ctx, r.Name)
	}
	m, err := p.Open(ctx)
	if err != nil {
		return err
	}
	switch r.Action {
	case "create":
		return p.create(ctx, m, r)
	case "attach":
		return p.attach(ctx, m, r)
	case "remove":
		return p.remove(ctx, m, r)
	case "grow":
		return p.grow(ctx, m, r)
	case "setinfo":
		return p.setinfo(ctx, m, r)
	case "verify":
		return p.checkOrigin(ctx, m, r)
	case "snapshot":
		_, err := m.Snapshot(ctx, r.Name, r.SnapshotName)
		return err
	case "open":
		return p.open(ctx, m, r)
	case "close":
		return p.close(ctx, m, r)
	}
	return fmt.Errorf("%w: unknown action %q (want one of %s)", ErrEnv, r.Action, strings.Join(Actions, ", "))
}

func (p *Provider) logf(format string, args ...any) {
	if p.Logf != nil {
		p.Logf(format, args...)
	}
}

// checkOrigin checks that the origin parameter, if given, names an
// image or snapshot.
func (p *Provider) checkOrigin(ctx context.Context, m *manage.Manager, r *Request) error {
	o := r.Param("origin")
	if o == "" {
		return nil
	}
	rec, err := m.Lookup(ctx, o)
	switch {
	case errors.Is(err, catalog.ErrNotFound):
		return fmt.Errorf("%w: EXTP_ORIGIN=%s: the store has no image or snapshot of that name (archip image list, archip volume list)", ErrOrigin, o)
	case err != nil:
		return err
	case !rec.ReadOnly():
		return fmt.Errorf("%w: EXTP_ORIGIN=%s is a writable volume: snapshot it (archip volume snapshot %s SNAP) and give the snapshot", ErrOrigin, o, o)
	}
	return nil
}

func (p *Provider) create(ctx context.Context, m *manage.Manager, r *Request) error {
	if err := p.checkOrigin(ctx, m, r); err != nil {
		return err
	}
	size := r.SizeMiB << 20
	if o := r.Param("origin"); o != "" {
		_, err := m.Clone(ctx, o, r.Name, size)
		return err
	}
	_, err := m.CreateVolume(ctx, r.Name, size, 0)
	return err
}

// ExportURI is the NBD URI of export name at a daemon's listener addr
// (unix:PATH or HOST:PORT), as QEMU, nbdfuse and nbdinfo take it. The
// socket path is percent-encoded but for its slashes: a space, comma or
// & in it would break the URI, or QEMU's -drive option in which Ganeti
// puts the kvm: URI.
func ExportURI(addr, name string) string {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "nbd+unix:///" + name + "?socket=" + escapePath(path)
	}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		addr = net.JoinHostPort(host, port)
	}
	return "nbd://" + addr + "/" + name
}

// escapePath percent-encodes all of path but unreserved characters and
// slashes.
func escapePath(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~/", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func (p *Provider) attach(ctx context.Context, m *manage.Manager, r *Request) error {
	if p.NBD == "" {
		return ErrNoNBD
	}
	rec, err := m.Lookup(ctx, r.Name)
	if err != nil {
		return err
	}
	uri := ExportURI(p.NBD, r.Name)
	dev, err := p.Attacher.Attach(ctx, r.Name, uri, rec.ReadOnly())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(p.Out, "%s\nkvm:%s\n", dev, uri)
	return err
}

func (p *Provider) remove(ctx context.Context, m *manage.Manager, r *Request) error {
	rec, err := m.Lookup(ctx, r.Name)
	if errors.Is(err, catalog.ErrNotFound) {
		p.logf("extstorage: %s is not in the store: nothing to remove", r.disk())
		return nil
	}
	if err != nil {
		return err
	}
	if err := m.Remove(ctx, r.Name); err != nil {
		return err
	}
	if err := m.Store.Delete(ctx, InfoPrefix+rec.ID.String()); err != nil && !objstore.IsNotExist(err) {
		p.logf("extstorage: %s removed, but not its metadata: %v", r.disk(), err)
	}
	return nil
}

func (p *Provider) grow(ctx context.Context, m *manage.Manager, r *Request) error {
	// Ganeti gives the size before as VOL_SIZE and the size after as
	// VOL_NEW_SIZE; a grow retried after it landed finds the volume at
	// VOL_NEW_SIZE already, which Resize leaves as it is.
	if err := m.Resize(ctx, r.Name, r.NewSizeMiB<<20, false); err != nil {
		return err
	}
	// Ganeti attaches the disk before it grows it and then may read the
	// device's size (repair-disk-sizes, the wipe of the grown part).
	if rf, ok := p.Attacher.(Refresher); ok && p.NBD != "" {
		if err := rf.Refresh(ctx, r.Name, ExportURI(p.NBD, r.Name), false); err != nil {
			p.logf("extstorage: %s grew, but its block device on this node keeps the old size until it is detached and attached again: %v", r.disk(), err)
		}
	}
	return nil
}

func (p *Provider) setinfo(ctx context.Context, m *manage.Manager, r *Request) error {
	rec, err := m.Lookup(ctx, r.Name)
	if err != nil {
		return err
	}
	b, err := json.Marshal(Info{Volume: r.Name, Metadata: r.Metadata, CName: r.CName, UUID: r.UUID, Updated: m.Now().UTC()})
	if err != nil {
		return err
	}
	_, err = m.Store.Put(ctx, InfoPrefix+rec.ID.String(), b)
	return err
}

// ReadInfo returns what setinfo stored for volume name (ok false if
// nothing).
func ReadInfo(ctx context.Context, m *manage.Manager, name string) (Info, bool, error) {
	rec, err := m.Lookup(ctx, name)
	if err != nil {
		return Info{}, false, err
	}
	b, _, err := m.Store.Get(ctx, InfoPrefix+rec.ID.String())
	if objstore.IsNotExist(err) {
		return Info{}, false, nil
	}
	if err != nil {
		return Info{}, false, err
	}
	var in Info
	if err := json.Unmarshal(b, &in); err != nil {
		return Info{}, false, fmt.Errorf("extstorage: metadata of %q: %w", name, err)
	}
	return in, true, nil
}

// open: exclusive, it takes the volume's lease and releases it at once,
// which makes whoever wrote the volume flush and hand over (or, for a
// node that died, waits out its lease): when open returns, no other node
// writes the volume, and the local daemon takes the lease at the
// instance's first write. Shared (a migration), both daemons serve the
// volume and the lease follows the writes, so open only checks it.
func (p *Provider) open(ctx context.Context, m *manage.Manager, r *Request) error {
	rec, err := m.Lookup(ctx, r.Name)
	if err != nil || !r.Exclusive || rec.ReadOnly() {
		return err
	}
	l, err := m.Leases.Take(ctx, rec.ID.String())
	if err != nil {
		return fmt.Errorf("extstorage: open %s: %w", r.disk(), err)
	}
	return l.Release(ctx)
}

// close asks the local daemon to flush the volume and release its lease
// (if it holds it), so the next node to write takes it without waiting.
func (p *Provider) close(ctx context.Context, m *manage.Manager, r *Request) error {
	rec, err := m.Lookup(ctx, r.Name)
	if err != nil || rec.ReadOnly() {
		return err
	}
	if p.Admin == "" {
		p.logf("extstorage: no admin address of the local daemon configured (--admin): the lease of %s moves at the next write elsewhere", r.disk())
		return nil
	}
	ask := p.Ask
	if ask == nil {
		ask = lease.HTTPAsk(time.Minute)
	}
	if err := ask(ctx, lease.Record{Addr: p.Admin}, rec.ID.String()); err != nil {
		return fmt.Errorf("extstorage: close %s: asking the local daemon at %s to flush and release it: %w", r.disk(), p.Admin, err)
	}
	return nil
}
