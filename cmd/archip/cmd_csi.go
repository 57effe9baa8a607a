package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/archipelago-go/archip/internal/csi"
	"github.com/archipelago-go/archip/internal/nbdattach"
)

type csiOptions struct {
	endpoint   string
	controller bool
	nodeID     string
	nbd        string
	runDir     string
	name       string
}

func newCSICommand(g *globals) *cobra.Command {
	var o csiOptions
	c := &cobra.Command{
		Use:   "csi --endpoint unix:///csi/csi.sock [--controller] [--node-id NODE --nbd ADDR]",
		Short: "Run the Kubernetes CSI driver: the controller service, the node service, or both",
		Long: `Run the Container Storage Interface driver on the store until SIGTERM.

--controller serves the controller service (create, delete, clone and expand
volumes; snapshots; listings), for the external-provisioner, -snapshotter and
-resizer sidecars of one Deployment. --node-id serves the node service on
that node, beside the node's 'archip serve' (--nbd, its --nbd-listen
address): it attaches a volume's NBD export as a block device (a loop device
over nbdfuse, which needs no kernel NBD client: the fuse3, libnbd-bin and
util-linux packages), publishes a raw block volume as that device, and
formats (ext4 unless the StorageClass says ext3 or xfs), mounts and grows a
filesystem volume. It needs root and the host's /dev and mount namespace.

A volume's id is its archip name. Clones (from a snapshot or a volume) copy no
data. Raw block volumes may be attached on several nodes at once
(ReadWriteMany), as KubeVirt's live migration needs: the lease follows the
writes. Expansion is offline: a filesystem grows at its next stage.`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			return runCSI(c.Context(), g, o)
		},
	}
	c.Flags().StringVar(&o.endpoint, "endpoint", "unix:///csi/csi.sock", "the gRPC endpoint: unix:///PATH (the socket file is replaced)")
	c.Flags().BoolVar(&o.controller, "controller", false, "serve the controller service")
	c.Flags().StringVar(&o.nodeID, "node-id", "", "serve the node service as this node (the Kubernetes node name)")
	nbdFlag(c.Flags(), &o.nbd, "unix:/run/archip/nbd.sock")
	c.Flags().StringVar(&o.runDir, "run-dir", "/run/archip/csi", "where the node service keeps each attached volume's nbdfuse mount point")
	c.Flags().StringVar(&o.name, "driver-name", csi.DefaultName, "the driver name (a StorageClass's provisioner)")
	return c
}

func runCSI(ctx context.Context, g *globals, o csiOptions) error {
	if !o.controller && o.nodeID == "" {
		return usageError{errors.New("csi: give --controller, --node-id NODE, or both")}
	}
	path, ok := strings.CutPrefix(o.endpoint, "unix://")
	if !ok {
		path, ok = strings.CutPrefix(o.endpoint, "unix:")
	}
	if !ok || path == "" {
		return usageError{fmt.Errorf("csi: --endpoint %q: want unix:///PATH", o.endpoint)}
	}
	m, err := g.manager(ctx, false)
	if err != nil {
		return err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(g.stderr, "archip: "+format+"\n", args...) }
	d := csi.New(csi.Config{Name: o.name, Manager: m, Controller: o.controller, NodeID: o.nodeID, NBD: o.nbd,
		Attacher: &nbdattach.FuseLoop{RunDir: o.runDir}, Logf: logf})
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("csi: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("csi: %w", err)
	}
	defer os.Remove(path)
	srv := grpc.NewServer(grpc.UnaryInterceptor(d.Interceptor))
	d.Register(srv)
	ctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		srv.GracefulStop()
	}()
	logf("CSI driver %s on %s (controller: %v, node: %q)", o.name, path, o.controller, o.nodeID)
	err = srv.Serve(l) // returns once GracefulStop is called, or fails
	cancel()
	<-stopped
	return err
}
