package extstorage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/lease"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

func TestParseEnvReportsEveryProblem(t *testing.T) {
	_, err := ParseEnv("create", []string{"VOL_SIZE=ten", "EXTP_COLOUR=blue", "EXTP_ORIGIN=bad/name"})
	if !errors.Is(err, ErrEnv) {
		t.Fatalf("err = %v, want ErrEnv", err)
	}
	for _, want := range []string{"VOL_NAME is not set", `VOL_SIZE="ten"`, "unknown parameter(s) colour", "EXTP_ORIGIN"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestParseEnv(t *testing.T) {
	for _, c := range []struct {
		action string
		env    []string
		check  func(*Request) bool
		bad    string // what the error says, "" if none
	}{
		{"grow", []string{"VOL_NAME=d", "VOL_SIZE=10"}, nil, "VOL_NEW_SIZE is not set"},
		{"grow", []string{"VOL_NAME=d", "VOL_SIZE=10", "VOL_NEW_SIZE=8"}, nil, "never shrinks"},
		{"grow", []string{"VOL_NAME=d", "VOL_SIZE=10", "VOL_NEW_SIZE=20"}, func(r *Request) bool { return r.NewSizeMiB == 20 && r.SizeMiB == 10 }, ""},
		{"open", []string{"VOL_NAME=d"}, func(r *Request) bool { return r.Exclusive }, ""},
		{"open", []string{"VOL_NAME=d", "VOL_OPEN_EXCLUSIVE=False"}, func(r *Request) bool { return !r.Exclusive }, ""},
		{"open", []string{"VOL_NAME=d", "VOL_OPEN_EXCLUSIVE=maybe"}, nil, "want True or False"},
		{"setinfo", []string{"VOL_NAME=d"}, nil, "VOL_METADATA is not set"},
		{"snapshot", []string{"VOL_NAME=d"}, nil, "VOL_SNAPSHOT_NAME is not set"},
		{"verify", nil, func(r *Request) bool { return r.Name == "" }, ""},                                           // verify needs no disk
		{"attach", []string{"VOL_NAME=d", "EXTP_OLD=x"}, func(r *Request) bool { return r.Param("old") == "x" }, ""}, // ignored outside create and verify
		{"create", []string{"VOL_NAME=d", "VOL_SIZE=0"}, nil, "at least 1"},
	} {
		r, err := ParseEnv(c.action, c.env)
		switch {
		case c.bad != "" && (err == nil || !strings.Contains(err.Error(), c.bad)):
			t.Errorf("%s %v: err %v, want %q", c.action, c.env, err, c.bad)
		case c.bad == "" && err != nil:
			t.Errorf("%s %v: %v", c.action, c.env, err)
		case c.check != nil && err == nil && !c.check(r):
			t.Errorf("%s %v: %+v", c.action, c.env, r)
		}
	}
}

func TestExportURI(t *testing.T) {
	for addr, want := range map[string]string{
		"unix:/run/archip/nbd.sock": "nbd+unix:///vol?socket=/run/archip/nbd.sock",
		"127.0.0.1:10809":           "nbd://127.0.0.1:10809/vol",
		"[::1]:10809":               "nbd://[::1]:10809/vol",
	} {
		if got := ExportURI(addr, "vol"); got != want {
			t.Errorf("ExportURI(%s) = %s, want %s", addr, got, want)
		}
	}
}

// fakeAttacher records attachments.
type fakeAttacher struct{ attached map[string]string }

func (f *fakeAttacher) Attach(ctx context.Context, name, uri string, ro bool) (string, error) {
	f.attached[name] = uri
	return "/dev/loop9", nil
}

func (f *fakeAttacher) Detach(ctx context.Context, name string) error {
	delete(f.attached, name)
	return nil
}

type fixture struct {
	t   *testing.T
	m   *manage.Manager
	p   *Provider
	out bytes.Buffer
	fa  *fakeAttacher
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, m: manage.New(objstore.NewMem()), fa: &fakeAttacher{attached: map[string]string{}}}
	f.p = &Provider{Open: func(context.Context) (*manage.Manager, error) { return f.m, nil },
		NBD: "unix:/s", Attacher: f.fa, Out: &f.out}
	return f
}

func (f *fixture) run(action string, env ...string) error {
	r, err := ParseEnv(action, env)
	if err != nil {
		return err
	}
	return f.p.Run(context.Background(), r)
}

func (f *fixture) ok(action string, env ...string) {
	f.t.Helper()
	if err := f.run(action, env...); err != nil {
		f.t.Fatalf("%s: %v", action, err)
	}
}

func (f *fixture) size(name string) int64 {
	f.t.Helper()
	in, err := f.m.Info(context.Background(), name)
	if err != nil {
		f.t.Fatal(err)
	}
	return in.Size
}

// TestGrowTakesNewSize: grow makes the volume VOL_NEW_SIZE MiB, not
// VOL_SIZE (the size before), and a retried grow is harmless.
func TestGrowTakesNewSize(t *testing.T) {
	f := newFixture(t)
	f.ok("create", "VOL_NAME=d", "VOL_SIZE=4")
	f.ok("grow", "VOL_NAME=d", "VOL_SIZE=4", "VOL_NEW_SIZE=12")
	if got := f.size("d"); got != 12<<20 {
		t.Fatalf("size after grow = %d, want 12 MiB", got)
	}
	f.ok("grow", "VOL_NAME=d", "VOL_SIZE=4", "VOL_NEW_SIZE=12")
	if err := f.run("grow", "VOL_NAME=d", "VOL_SIZE=4", "VOL_NEW_SIZE=8"); !errors.Is(err, manage.ErrShrink) {
		t.Fatalf("grow to less than the volume: %v, want ErrShrink", err)
	}
}

func TestCreateFromOrigin(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.ok("create", "VOL_NAME=src", "VOL_SIZE=4")
	manage.WriteT(t, f.m, "src", 4096, []byte("hello"))
	if _, err := f.m.Snapshot(ctx, "src", "src@1"); err != nil {
		t.Fatal(err)
	}
	f.ok("create", "VOL_NAME=d", "VOL_SIZE=8", "EXTP_ORIGIN=src@1")
	if got := manage.ReadT(t, f.m, "d", 4096, 5); string(got) != "hello" || f.size("d") != 8<<20 {
		t.Fatalf("clone reads %q, size %d", got, f.size("d"))
	}
	for origin, want := range map[string]error{"nosuch": ErrOrigin, "src": ErrOrigin} {
		if err := f.run("create", "VOL_NAME=e", "VOL_SIZE=8", "EXTP_ORIGIN="+origin); !errors.Is(err, want) {
			t.Errorf("origin %s: %v, want %v", origin, err, want)
		}
	}
	if err := f.run("verify", "EXTP_ORIGIN=nosuch"); !errors.Is(err, ErrOrigin) {
		t.Errorf("verify: %v", err)
	}
}

func TestAttachPrintsDeviceAndURI(t *testing.T) {
	f := newFixture(t)
	f.ok("create", "VOL_NAME=d", "VOL_SIZE=4")
	f.ok("attach", "VOL_NAME=d")
	if got, want := f.out.String(), "/dev/loop9\nkvm:nbd+unix:///d?socket=/s\n"; got != want {
		t.Fatalf("attach printed %q, want %q", got, want)
	}
	f.ok("detach", "VOL_NAME=d")
	if len(f.fa.attached) != 0 {
		t.Fatalf("still attached: %v", f.fa.attached)
	}
	if err := f.run("attach", "VOL_NAME=nosuch"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("attach of a missing volume: %v", err)
	}
	f.p.NBD = ""
	if err := f.run("attach", "VOL_NAME=d"); !errors.Is(err, ErrNoNBD) {
		t.Fatalf("attach without an NBD address: %v", err)
	}
}

func TestSetinfoAndRemove(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.ok("create", "VOL_NAME=d", "VOL_SIZE=4")
	f.ok("setinfo", "VOL_NAME=d", "VOL_METADATA=originstname+web1", "VOL_CNAME=disk0")
	in, ok, err := ReadInfo(ctx, f.m, "d")
	if err != nil || !ok || in.Metadata != "originstname+web1" || in.CName != "disk0" {
		t.Fatalf("ReadInfo = %+v, %v, %v", in, ok, err)
	}
	f.ok("remove", "VOL_NAME=d")
	f.ok("remove", "VOL_NAME=d") // already gone
	n := 0
	f.m.Store.List(ctx, InfoPrefix, func(objstore.Info) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d metadata objects left after remove", n)
	}
}

// TestOpenClose: an exclusive open takes the lease from its holder (who
// is asked to hand over) and leaves it free; a shared open asks nobody;
// close asks the local daemon.
func TestOpenClose(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.ok("create", "VOL_NAME=d", "VOL_SIZE=4")
	rec, _ := f.m.Lookup(ctx, "d")
	id := rec.ID.String()

	holder, err := lease.NewManager(f.m.Store, lease.Config{Node: "other", Addr: "10.0.0.2:7001"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := holder.Acquire(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	f.m.Leases, _ = lease.NewManager(f.m.Store, lease.Config{Node: "cli", Ask: func(ctx context.Context, r lease.Record, vol string) error {
		asked = append(asked, r.Addr)
		return l.Release(ctx)
	}})
	f.p.Ask = func(ctx context.Context, r lease.Record, vol string) error {
		asked = append(asked, "close:"+r.Addr+":"+vol)
		return nil
	}
	f.ok("open", "VOL_NAME=d", "VOL_OPEN_EXCLUSIVE=False")
	if len(asked) != 0 {
		t.Fatalf("a shared open asked %v", asked)
	}
	f.ok("open", "VOL_NAME=d", "VOL_OPEN_EXCLUSIVE=True")
	if len(asked) != 1 || asked[0] != "10.0.0.2:7001" {
		t.Fatalf("exclusive open asked %v", asked)
	}
	if r, _, _ := f.m.Leases.Read(ctx, id); r.Owner != "" {
		t.Fatalf("after open the lease is held by %q", r.Owner)
	}
	f.ok("close", "VOL_NAME=d") // no local daemon configured: nothing to ask
	f.p.Admin = "127.0.0.1:7001"
	f.ok("close", "VOL_NAME=d")
	if len(asked) != 2 || asked[1] != "close:127.0.0.1:7001:"+id {
		t.Fatalf("close asked %v", asked)
	}
}

// TestExportURIEscapesSocketPath: a socket path with characters a URI
// (or QEMU's -drive option syntax, which Ganeti puts the kvm: URI in)
// cannot carry as they are comes out percent-encoded, and decodes back
// to the path.
func TestExportURIEscapesSocketPath(t *testing.T) {
	path := "/run/my archip,1/a&b=c%d#e?.sock"
	got := ExportURI("unix:"+path, "vol")
	if strings.ContainsAny(strings.TrimPrefix(got, "nbd+unix:///vol?socket="), " ,&#?=") {
		t.Errorf("ExportURI = %s: the socket path is not escaped", got)
	}
	u, err := url.Parse(got)
	if err != nil {
		t.Fatalf("ExportURI = %s: %v", got, err)
	}
	if u.Scheme != "nbd+unix" || u.Path != "/vol" || u.Query().Get("socket") != path {
		t.Errorf("ExportURI = %s: parses as scheme %s, export %s, socket %q", got, u.Scheme, u.Path, u.Query().Get("socket"))
	}
}

// refreshingAttacher is a fakeAttacher that can refresh, and says
// whether it was asked to.
type refreshingAttacher struct {
	fakeAttacher
	refreshed []string
	err       error
}

func (r *refreshingAttacher) Refresh(ctx context.Context, name, uri string, ro bool) error {
	r.refreshed = append(r.refreshed, name+" "+uri)
	return r.err
}

// TestGrowRefreshesAttachedDevice: Ganeti grows an attached disk (its
// Grow attaches first) and then reads the block device's size (the wipe
// of the grown part, repair-disk-sizes): grow refreshes the attachment;
// a device that cannot be refreshed (held open) is no failure of grow.
func TestGrowRefreshesAttachedDevice(t *testing.T) {
	f := newFixture(t)
	ra := &refreshingAttacher{fakeAttacher: fakeAttacher{attached: map[string]string{}}}
	f.p.Attacher = ra
	f.ok("create", "VOL_NAME=d", "VOL_SIZE=4")
	f.ok("grow", "VOL_NAME=d", "VOL_SIZE=4", "VOL_NEW_SIZE=8")
	if want := "d nbd+unix:///d?socket=/s"; len(ra.refreshed) != 1 || ra.refreshed[0] != want {
		t.Errorf("refreshed %q, want %q", ra.refreshed, want)
	}
	ra.err = errors.New("busy")
	var logged []string
	f.p.Logf = func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }
	f.ok("grow", "VOL_NAME=d", "VOL_SIZE=8", "VOL_NEW_SIZE=12")
	if len(logged) != 1 || !strings.Contains(logged[0], "busy") {
		t.Errorf("a refresh that failed logged %q", logged)
	}
}
