package main

import (
	"context"
	"encoding/xml"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

type diskXMLOptions struct {
	nbd    string
	target string
	bus    string
	tls    bool
}

func newVolumeDiskXMLCommand(g *globals) *cobra.Command {
	var o diskXMLOptions
	c := &cobra.Command{
		Use:   "disk-xml NAME [--nbd unix:PATH|HOST:PORT] [--target vda] [--bus virtio]",
		Short: "Print the libvirt <disk> element for a volume served by 'archip serve'",
		Long: `Print the libvirt <disk> element that attaches volume NAME (or a snapshot or
image, read-only) to a domain through the NBD export of 'archip serve' at
--nbd: the same address as one of the daemon's --nbd-listen, a unix socket
(unix:PATH, absolute) or TCP (HOST:PORT).

  archip volume disk-xml vm1 --nbd unix:/run/archip.sock > vm1.xml
  virsh attach-device DOMAIN vm1.xml --persistent   # add --live to hotplug

or paste it into 'virsh edit DOMAIN'. For live migration, every host runs its
own daemon on the shared store at the same address, and the element stays
as it is: the destination's daemon takes the volume's lease at its first
write.`,
		Args: exactArgs("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return runVolumeDiskXML(c.Context(), g, o, args[0])
		},
	}
	nbdFlag(c.Flags(), &o.nbd, defaultNBDListen)
	c.Flags().StringVar(&o.target, "target", "vda", "the device name the guest sees (<target dev>)")
	c.Flags().StringVar(&o.bus, "bus", "virtio", "the disk bus (<target bus>): virtio, scsi, sata, ide")
	c.Flags().BoolVar(&o.tls, "tls", false, "connect with TLS (the daemon's --tls-cert; TCP only; libvirt's nbd_tls settings give the certificates)")
	return c
}

// libvirtDisk is libvirt's <disk> element for an NBD export.
type libvirtDisk struct {
	XMLName xml.Name `xml:"disk"`
	Type    string   `xml:"type,attr"`
	Device  string   `xml:"device,attr"`
	Driver  struct {
		Name    string `xml:"name,attr"`
		Type    string `xml:"type,attr"`
		Cache   string `xml:"cache,attr"`
		Discard string `xml:"discard,attr,omitempty"`
	} `xml:"driver"`
	Source struct {
		Protocol string `xml:"protocol,attr"`
		Name     string `xml:"name,attr"`
		TLS      string `xml:"tls,attr,omitempty"`
		Host     struct {
			Transport string `xml:"transport,attr,omitempty"`
			Socket    string `xml:"socket,attr,omitempty"`
			Name      string `xml:"name,attr,omitempty"`
			Port      string `xml:"port,attr,omitempty"`
		} `xml:"host"`
	} `xml:"source"`
	Target struct {
		Dev string `xml:"dev,attr"`
		Bus string `xml:"bus,attr"`
	} `xml:"target"`
	ReadOnly *struct{} `xml:"readonly"`
}

func runVolumeDiskXML(ctx context.Context, g *globals, o diskXMLOptions, name string) error {
	if err := checkNames(name); err != nil {
		return err
	}
	var d libvirtDisk
	d.Type, d.Device = "network", "disk"
	d.Driver.Name, d.Driver.Type, d.Driver.Cache = "qemu", "raw", "none"
	d.Source.Protocol, d.Source.Name = "nbd", name
	d.Target.Dev, d.Target.Bus = o.target, o.bus
	if o.target == "" || strings.ContainsAny(o.target, "/ ") {
		return usageError{fmt.Errorf("--target %q: want a device name such as vda", o.target)}
	}
	path, host, port, err := splitNBDAddr(o.nbd)
	switch {
	case err != nil:
		return err
	case path != "" && o.tls:
		return usageError{fmt.Errorf("--tls is for TCP: a unix socket is reached only from this host")}
	case path != "":
		d.Source.Host.Transport, d.Source.Host.Socket = "unix", path
	default:
		d.Source.Host.Name, d.Source.Host.Port = host, port
		if o.tls {
			d.Source.TLS = "yes"
		}
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	rec, err := m.Lookup(ctx, name)
	if err != nil {
		return err
	}
	if rec.ReadOnly() {
		d.ReadOnly = &struct{}{}
	} else {
		d.Driver.Discard = "unmap" // the guest's TRIM frees blocks
	}
	b, err := xml.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	out := string(b)
	for _, tag := range []string{"driver", "host", "target", "readonly"} {
		out = strings.ReplaceAll(out, "></"+tag+">", "/>") // empty elements, as libvirt writes them
	}
	_, err = fmt.Fprintln(g.stdout, out)
	return err
}
