package e2e

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// libvirtDisk is the part of libvirt's <disk> element the test reads.
type libvirtDisk struct {
	Type   string `xml:"type,attr"`
	Device string `xml:"device,attr"`
	Driver struct {
		Type string `xml:"type,attr"`
	} `xml:"driver"`
	Source struct {
		Protocol string `xml:"protocol,attr"`
		Name     string `xml:"name,attr"`
		Host     struct {
			Transport string `xml:"transport,attr"`
			Socket    string `xml:"socket,attr"`
			Name      string `xml:"name,attr"`
			Port      string `xml:"port,attr"`
		} `xml:"host"`
	} `xml:"source"`
	Target struct {
		Dev string `xml:"dev,attr"`
		Bus string `xml:"bus,attr"`
	} `xml:"target"`
	ReadOnly *struct{} `xml:"readonly"`
}

// uri is the NBD URI QEMU opens for the disk, as libvirt builds it.
func (d libvirtDisk) uri() string {
	if d.Source.Host.Transport == "unix" {
		return "nbd+unix:///" + d.Source.Name + "?socket=" + d.Source.Host.Socket
	}
	return fmt.Sprintf("nbd://%s:%s/%s", d.Source.Host.Name, d.Source.Host.Port, d.Source.Name)
}

// TestLibvirtDiskXML: 'volume disk-xml' prints a <disk> element that
// libvirt's schema accepts (in a domain), over a unix socket and over
// TCP, read-only for a snapshot; and QEMU reads the volume at what the
// element names.
func TestLibvirtDiskXML(t *testing.T) {
	need(t, "virt-xml-validate", "qemu-io")
	e := newEnv(t)
	e.archip("volume", "create", "vm1", "--size", "8M")
	d := e.serve()
	qemuIO(t, d.uri("vm1"), "write -P 0x42 1M 64k")
	e.archip("volume", "snapshot", "vm1", "vm1@base")

	for _, c := range []struct {
		args     []string
		readOnly bool
	}{
		{[]string{"vm1", "--nbd", "unix:" + d.sock}, false},
		{[]string{"vm1", "--nbd", d.tcp, "--target", "vdb", "--bus", "scsi"}, false},
		{[]string{"vm1@base", "--nbd", "unix:" + d.sock, "--target", "vdc"}, true},
		{[]string{"vm1", "--nbd", d.tcp, "--tls"}, false},
	} {
		out := e.archip(append([]string{"volume", "disk-xml"}, c.args...)...)
		var disk libvirtDisk
		if err := xml.Unmarshal([]byte(out), &disk); err != nil {
			t.Fatalf("%v: %v\n%s", c.args, err, out)
		}
		if disk.Type != "network" || disk.Source.Protocol != "nbd" || disk.Driver.Type != "raw" || (disk.ReadOnly != nil) != c.readOnly {
			t.Fatalf("%v: %s", c.args, out)
		}
		dom := e.path("domain.xml")
		os.WriteFile(dom, []byte(`<domain type='kvm'><name>t</name><memory unit='MiB'>128</memory>
<os><type arch='x86_64'>hvm</type></os><devices>`+out+`</devices></domain>`), 0o644)
		run(t, "virt-xml-validate", dom, "domain") // fails the test unless it validates
		if tls := strings.Contains(out, `tls="yes"`); tls != (c.args[len(c.args)-1] == "--tls") {
			t.Fatalf("%v: %s", c.args, out)
		} else if tls {
			continue // the daemon serves no TLS here
		}
		if c.readOnly {
			if o := run(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x42 1M 64k", disk.uri()); strings.Contains(o, "fail") {
				t.Fatalf("%v: %s", c.args, o)
			}
		} else {
			qemuIO(t, disk.uri(), "read -P 0x42 1M 64k")
		}
	}

	// A volume the store does not have, and a malformed address, fail.
	for _, args := range [][]string{{"nosuch", "--nbd", d.tcp}, {"vm1", "--nbd", "nowhere"}} {
		if _, errs, code := archipRun(e, append([]string{"volume", "disk-xml"}, args...)...); code == 0 {
			t.Errorf("disk-xml %v succeeded", args)
		} else if errs == "" {
			t.Errorf("disk-xml %v: no message", args)
		}
	}
}

// archipRun runs archip on e's store and returns stdout, stderr and the
// exit code, failing or not.
func archipRun(e *env, args ...string) (string, string, int) {
	e.t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(archipBin, append([]string{"--store", e.store}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}
