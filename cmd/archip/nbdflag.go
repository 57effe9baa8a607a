package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// defaultNBDListen is where 'archip serve' serves NBD unless told.
const defaultNBDListen = "127.0.0.1:10809"

// nbdFlag defines --nbd, the address of this node's 'archip serve' NBD
// listener, for the commands that hand it to a client (volume disk-xml,
// extstorage, csi).
func nbdFlag(fs *pflag.FlagSet, p *string, def string) {
	fs.StringVar(p, "nbd", def, "an NBD address of 'archip serve' on this node, as its --nbd-listen: unix:PATH (absolute) or HOST:PORT")
}

// splitNBDAddr parses an --nbd address: a unix socket's path, or a host
// and port. A malformed one is a usage error.
func splitNBDAddr(addr string) (path, host, port string, err error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !filepath.IsAbs(path) {
			return "", "", "", usageError{fmt.Errorf("--nbd %s: want an absolute socket path (clients run elsewhere)", addr)}
		}
		return path, "", "", nil
	}
	host, port, err = net.SplitHostPort(addr)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 || host == "" {
		return "", "", "", usageError{fmt.Errorf("--nbd %q: want unix:PATH or HOST:PORT", addr)}
	}
	return "", host, port, nil
}
