package main

import (
	"encoding/xml"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestDiskXMLUsage: addresses libvirt cannot use are usage errors (exit
// 2); a volume the store lacks is a failure (exit 1).
func TestDiskXMLUsage(t *testing.T) {
	store := "file://" + filepath.Join(t.TempDir(), "store")
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "1M")
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"v", "--nbd", "unix:rel.sock"}, 2, "absolute"},
		{[]string{"v", "--nbd", "unix:/s", "--tls"}, 2, "TCP"},
		{[]string{"v", "--nbd", "host"}, 2, "HOST:PORT"},
		{[]string{"v", "--nbd", "host:99999"}, 2, "HOST:PORT"},
		{[]string{"v", "--target", "a b"}, 2, "device name"},
		{[]string{"nosuch"}, 1, "no volume"},
	} {
		_, errs, code := cli(t, store, nil, append([]string{"volume", "disk-xml"}, c.args...)...)
		if code != c.code || !strings.Contains(errs, c.says) {
			t.Errorf("%v: exit %d, %q; want %d, %q", c.args, code, errs, c.code, c.says)
		}
	}
	out := mustCLI(t, store, nil, "volume", "disk-xml", "v", "--nbd", "unix:/run/archip.sock")
	for _, want := range []string{`<source protocol="nbd" name="v">`, `<host transport="unix" socket="/run/archip.sock"/>`, `discard="unmap"`} {
		if !strings.Contains(out, want) {
			t.Errorf("disk-xml printed %s, without %s", out, want)
		}
	}
}

// TestDiskXMLEscapes: a socket path and a target with XML's special
// characters come out escaped, and parse back as given.
func TestDiskXMLEscapes(t *testing.T) {
	store := "file://" + filepath.Join(t.TempDir(), "store")
	mustCLI(t, store, nil, "volume", "create", "v", "--size", "1M")
	sock := `/run/a&b "c" <d>'e'.sock`
	out := mustCLI(t, store, nil, "volume", "disk-xml", "v", "--nbd", "unix:"+sock, "--target", `vd"<&`)
	var d libvirtDisk
	if err := xml.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("disk-xml printed %s: %v", out, err)
	}
	if d.Source.Host.Socket != sock || d.Target.Dev != `vd"<&` || d.Source.Name != "v" {
		t.Errorf("disk-xml printed %s: socket %q, target %q", out, d.Source.Host.Socket, d.Target.Dev)
	}
}

// TestNBDFlagOneDefinition: the commands that name a daemon's NBD
// listener (volume disk-xml, extstorage, csi) define --nbd in one place:
// one meaning, and serve's --nbd-listen default unless a command's
// setting (csi's node plugin) wants another.
func TestNBDFlagOneDefinition(t *testing.T) {
	root := newRootCommand(&globals{})
	find := func(path ...string) *pflag.Flag {
		t.Helper()
		c, _, err := root.Find(path[:len(path)-1])
		if err != nil {
			t.Fatal(err)
		}
		f := c.Flags().Lookup(path[len(path)-1])
		if f == nil {
			f = c.PersistentFlags().Lookup(path[len(path)-1])
		}
		if f == nil {
			t.Fatalf("%v: no such flag", path)
		}
		return f
	}
	listen := find("serve", "nbd-listen")
	xml, ext, csi := find("volume", "disk-xml", "nbd"), find("extstorage", "nbd"), find("csi", "nbd")
	if xml.DefValue != ext.DefValue || !strings.Contains(listen.DefValue, xml.DefValue) {
		t.Errorf("--nbd defaults: disk-xml %s, extstorage %s; serve --nbd-listen %s", xml.DefValue, ext.DefValue, listen.DefValue)
	}
	if xml.Usage != ext.Usage || xml.Usage != csi.Usage {
		t.Errorf("--nbd usages differ:\n%s\n%s\n%s", xml.Usage, ext.Usage, csi.Usage)
	}
}
