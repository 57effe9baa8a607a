// Package lint holds tests that enforce the layering of DESIGN.md: a
// package imports only packages of layers below it.
package lint

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/archipelago-go/archip/"

// layer of each internal package; a package may import only packages of
// a lower layer (or its own sub-packages, such as objstore/all).
var layer = map[string]int{
	"internal/units":              0,
	"internal/objstore":           1,
	"internal/objstore/storetest": 1,
	"internal/objstore/all":       4, // above the backends it lists (rados, s3, pools); only commands import it
	"internal/objstore/rados":     1,
	"internal/objstore/s3":        1,
	"internal/blockmap":           2,
	"internal/objstore/pools":     3, // a store of several backends, routed by blockmap's names
	"internal/volume":             3,
	"internal/catalog":            4,
	"internal/progress":           4, // progress records of gc and moves: read by daemons, written by commands
	"internal/lease":              5,
	"internal/image":              6,
	"internal/bucket":             7, // objects in buckets: over image, under gc (its records are roots)
	"internal/gc":                 8,
	"internal/manage":             9,
	"internal/nbd":                10,
	"internal/daemon":             10, // the serving core: beside nbd, so it cannot import it
	"internal/frontend/nbdfe":     11,
	"internal/frontend/s3fe":      11,
	"internal/dashboard":          11, // the admin API's web pages: over the daemon, beside the frontends
	"internal/nbdattach":          0,  // runs tools only
	"internal/move":               10, // moves between pools: on manage, beside the daemon
	"internal/extstorage":         10, // cloud-manager integrations: on manage, beside the daemon
	"internal/csi":                11,
	"internal/lint":               99,
}

func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(f[0], module)
		if !strings.HasPrefix(pkg, "internal/") {
			continue // commands may import anything
		}
		l, ok := layer[pkg]
		if !ok {
			t.Errorf("package %s has no layer in lint_test.go: add it", pkg)
			continue
		}
		for _, imp := range f[1:] {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if strings.HasPrefix(dep, pkg+"/") || strings.HasPrefix(pkg, dep+"/") {
				continue
			}
			if dl, ok := layer[dep]; ok && dl >= l {
				t.Errorf("%s (layer %d) imports %s (layer %d): a layer imports only layers below it", pkg, l, dep, dl)
			}
		}
	}
}

// protocolFree lists the packages that must not depend on any protocol,
// even through other packages or sub-packages of their own: the serving
// core is frontend-neutral, and a frontend plugs into it (DESIGN.md).
var protocolFree = []string{"internal/daemon"}

// protocols are the packages of frontends and their protocols, by prefix.
var protocols = []string{"internal/nbd", "internal/frontend/"}

func TestCoreKnowsNoProtocol(t *testing.T) {
	for _, pkg := range protocolFree {
		out, err := exec.Command("go", "list", "-f", `{{join .Deps " "}}`, module+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			dep, ok := strings.CutPrefix(dep, module)
			if !ok {
				continue
			}
			for _, p := range protocols {
				if dep == p || strings.HasPrefix(dep, p+"/") || strings.HasSuffix(p, "/") && strings.HasPrefix(dep, p) {
					t.Errorf("%s depends on %s: the serving core must not know a protocol; put the protocol's glue in a frontend package", pkg, dep)
				}
			}
		}
	}
}
