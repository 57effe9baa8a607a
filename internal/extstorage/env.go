// Package extstorage is Archipelago's Ganeti ExtStorage provider: the
// actions of the interface (man ganeti-extstorage-interface) on the
// volumes of a store, by name, driven by the environment Ganeti sets.
//
// Ganeti runs one executable per action in the provider's directory,
// with no arguments and VOL_* and EXTP_* variables; ParseEnv reads them
// into a Request and Provider carries out the action. The CLI's 'archip
// extstorage install' writes that directory: a shim per action that
// execs 'archip extstorage ACTION', and parameters.list.
//
// Sizes from Ganeti are in mebibytes. grow resizes to VOL_NEW_SIZE (the
// size after the grow; VOL_SIZE is the size before) and, as Ganeti
// attaches a disk before it grows it, attaches it anew so that its block
// device has the new size (a Refresher's Refresh; not while a process
// holds the device open, such as a VM with kernel-space disk access,
// which then sees the new size once detached and attached again). A
// disk with the
// origin parameter is an O(1) clone of that image or snapshot. snapshot
// names the snapshot VOL_SNAPSHOT_NAME; VOL_SNAPSHOT_SIZE must be a size
// but is otherwise unused, as a snapshot has its volume's size. setinfo
// keeps VOL_METADATA in an object of its own beside the volume (ReadInfo),
// which remove deletes.
//
// attach prints a block device on its first line, as Ganeti requires
// (it checks the path is one), and on its second a kvm: URI naming the
// volume's NBD export on the local 'archip serve', which Ganeti's KVM
// hypervisor opens directly when disk access is userspace. The block
// device is a loop device over an nbdfuse file backed by the same export
// (Attacher; package nbdattach): it works on kernels without an NBD
// client, and through it Ganeti's OS scripts install the instance.
//
// open and close are the lease handoff: an exclusive open asks whoever
// writes the volume (a daemon on another node, a dead node's lease
// expiring) to flush and hand over before the instance starts here; a
// shared open (VOL_OPEN_EXCLUSIVE=False, during a migration) only checks
// the volume, since the destination's daemon takes the lease at its
// first write; close asks the local daemon to flush and release it.
package extstorage

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/archipelago-go/archip/internal/catalog"
)

// The actions of the interface, each an executable in the provider's
// directory.
var Actions = []string{"create", "attach", "detach", "remove", "grow", "setinfo", "verify", "snapshot", "open", "close"}

// Param is one ExtStorage parameter of the provider (parameters.list),
// given as EXTP_<NAME>.
type Param struct{ Name, Help string }

// Params are the parameters the provider takes.
var Params = []Param{
	{"origin", "image or snapshot to clone the disk from (O(1), no data copied); without it the disk starts empty"},
	{"store", "store URL of the disk, if not the provider's default (every node must reach it)"},
}

// ParametersList is the text of parameters.list.
func ParametersList() string {
	var b strings.Builder
	for _, p := range Params {
		fmt.Fprintf(&b, "%s %s\n", p.Name, p.Help)
	}
	return b.String()
}

// ErrEnv marks an environment Ganeti would not set: a missing or
// malformed variable, an unknown parameter.
var ErrEnv = errors.New("extstorage: bad environment")

// Request is what one run of an action is asked to do.
type Request struct {
	Action string
	Name   string // VOL_NAME
	// SizeMiB is VOL_SIZE (create, grow: the size before), NewSizeMiB
	// VOL_NEW_SIZE (grow); 0 when not set.
	SizeMiB, NewSizeMiB uint64
	Metadata            string // VOL_METADATA (setinfo)
	CName, UUID         string // VOL_CNAME, VOL_UUID: for messages only
	SnapshotName        string // VOL_SNAPSHOT_NAME (snapshot)
	SnapshotSizeMiB     uint64 // VOL_SNAPSHOT_SIZE (snapshot), 0 if not set
	// Exclusive is VOL_OPEN_EXCLUSIVE (open): true unless Ganeti says
	// False, which it does during a migration.
	Exclusive bool
	// Params are the EXTP_* variables, by lower-case parameter name.
	Params map[string]string
}

// Param returns the value of parameter name ("" if not given).
func (r *Request) Param(name string) string { return r.Params[name] }

// ParseEnv reads the request of action from the environment (environ,
// as os.Environ gives it). It reports every problem at once, each an
// ErrEnv. Unknown parameters are refused by create and verify, where a
// typo would matter; other actions ignore them, so that a disk made
// before a parameter was dropped still attaches.
func ParseEnv(action string, environ []string) (*Request, error) {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	r := &Request{Action: action, Exclusive: true, Params: map[string]string{},
		Name: env["VOL_NAME"], Metadata: env["VOL_METADATA"], CName: env["VOL_CNAME"], UUID: env["VOL_UUID"],
		SnapshotName: env["VOL_SNAPSHOT_NAME"]}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrEnv}, args...)...))
	}
	known := map[string]bool{}
	for _, p := range Params {
		known[p.Name] = true
	}
	var unknown []string
	for k, v := range env {
		if name, ok := strings.CutPrefix(k, "EXTP_"); ok {
			name = strings.ToLower(name)
			r.Params[name] = v
			if !known[name] {
				unknown = append(unknown, name)
			}
		}
	}
	if len(unknown) > 0 && (action == "create" || action == "verify") {
		sort.Strings(unknown)
		var names []string
		for _, p := range Params {
			names = append(names, p.Name)
		}
		bad("unknown parameter(s) %s; the archip provider takes %s (see parameters.list)", strings.Join(unknown, ", "), strings.Join(names, ", "))
	}
	if action != "verify" {
		if r.Name == "" {
			bad("VOL_NAME is not set: run the action as Ganeti does, with VOL_NAME naming the disk")
		} else if err := catalog.ValidName(r.Name); err != nil {
			bad("VOL_NAME: %v", err)
		}
	}
	mib := func(name string, required bool) uint64 {
		s, ok := env[name]
		if !ok || s == "" {
			if required {
				bad("%s is not set: %s needs it (in mebibytes)", name, action)
			}
			return 0
		}
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 || n > 1<<43 {
			bad("%s=%q: want a size in mebibytes, at least 1", name, s)
			return 0
		}
		return n
	}
	switch action {
	case "create":
		r.SizeMiB = mib("VOL_SIZE", true)
	case "grow":
		r.SizeMiB = mib("VOL_SIZE", false)
		r.NewSizeMiB = mib("VOL_NEW_SIZE", true)
		if r.SizeMiB != 0 && r.NewSizeMiB != 0 && r.NewSizeMiB < r.SizeMiB {
			bad("VOL_NEW_SIZE=%d is less than VOL_SIZE=%d: grow never shrinks", r.NewSizeMiB, r.SizeMiB)
		}
	case "setinfo":
		if _, ok := env["VOL_METADATA"]; !ok {
			bad("VOL_METADATA is not set: setinfo stores it")
		}
	case "snapshot":
		if r.SnapshotName == "" {
			bad("VOL_SNAPSHOT_NAME is not set: snapshot names the snapshot after it")
		} else if err := catalog.ValidName(r.SnapshotName); err != nil {
			bad("VOL_SNAPSHOT_NAME: %v", err)
		}
		r.SnapshotSizeMiB = mib("VOL_SNAPSHOT_SIZE", false)
	case "open":
		switch s := strings.ToLower(env["VOL_OPEN_EXCLUSIVE"]); s {
		case "", "true", "1", "yes":
		case "false", "0", "no":
			r.Exclusive = false
		default:
			bad("VOL_OPEN_EXCLUSIVE=%q: want True or False", env["VOL_OPEN_EXCLUSIVE"])
		}
	}
	if o := r.Params["origin"]; o != "" {
		if err := catalog.ValidName(o); err != nil {
			bad("EXTP_ORIGIN: %v", err)
		}
	}
	return r, errors.Join(errs...)
}

// disk names the disk in messages: its name and, when Ganeti gave
// them, its Ganeti name and UUID.
func (r *Request) disk() string {
	var extra []string
	if r.CName != "" {
		extra = append(extra, r.CName)
	}
	if r.UUID != "" {
		extra = append(extra, "uuid "+r.UUID)
	}
	if len(extra) == 0 {
		return fmt.Sprintf("%q", r.Name)
	}
	return fmt.Sprintf("%q (%s)", r.Name, strings.Join(extra, ", "))
}
