//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
)

// catOp is one CLI invocation of TestCatalogKill9 and what it answered.
type catOp struct {
	kind       string // create, rename, remove
	x, y       string
	start, end time.Time
	outcome    int    // catOK, catNone (refused), catUnknown (killed)
	id         string // create: the ID it printed
}

const (
	catOK = iota
	catNone
	catUnknown
)

// TestCatalogKill9: two groups of 8 concurrent archip invocations
// create, rename and remove random names on one file store, and each
// group is SIGKILLed as a whole at random moments (a host dying). An
// invocation that answered is in the model; one killed may or may not
// have happened. Afterwards the listing names each ID once, every name
// of it settles (the next command) without changing what is listed, each
// ID named was made by a create that succeeded or may have and is at a
// name renames can have brought it to, each ID whose create succeeded is
// named unless a remove can have removed it, and the count of names is
// within what the answers allow. Then, aged past the grace period,
// 'archip gc' leaves no object of a volume no record names, nor a hint,
// and every name still reads. ARCHIP_CATKILL_SECONDS sets how long the
// groups run (default 15).
func TestCatalogKill9(t *testing.T) {
	runFor := 15 * time.Second
	if s := os.Getenv("ARCHIP_CATKILL_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		runFor = time.Duration(n) * time.Second
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	e := newEnv(t)
	const (
		groups  = 2
		workers = 8
		pool    = 24
	)
	var mu sync.Mutex
	var log []catOp
	running := make([]map[*exec.Cmd]bool, groups)
	for g := range running {
		running[g] = map[*exec.Cmd]bool{}
	}
	deadline := time.Now().Add(runFor)
	var wg sync.WaitGroup
	kills := 0
	for g := range groups {
		wg.Add(1)
		go func() { // the group's killer
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(100+g)))
			for {
				time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
				if time.Now().After(deadline) {
					return
				}
				mu.Lock()
				for c := range running[g] {
					c.Process.Kill()
				}
				kills++
				mu.Unlock()
			}
		}()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(seed, uint64(g*workers+w)))
				for time.Now().Before(deadline) {
					op := catOp{x: fmt.Sprintf("n%02d", rng.IntN(pool)), y: fmt.Sprintf("n%02d", rng.IntN(pool))}
					var args []string
					switch k := rng.IntN(10); {
					case k < 4:
						op.kind = "create"
						args = []string{"--json", "volume", "create", op.x, "--size", "1M", "--block-size", "64K"}
					case k < 7:
						op.kind = "rename"
						args = []string{"volume", "rename", op.x, op.y}
					default:
						op.kind = "remove"
						args = []string{"volume", "remove", op.x}
					}
					var out, errb bytes.Buffer
					cmd := exec.Command(archipBin, append([]string{"--store", e.store}, args...)...)
					cmd.Stdout, cmd.Stderr = &out, &errb
					mu.Lock()
					op.start = time.Now()
					if err := cmd.Start(); err != nil {
						mu.Unlock()
						t.Error(err)
						return
					}
					running[g][cmd] = true
					mu.Unlock()
					err := cmd.Wait()
					mu.Lock()
					delete(running[g], cmd)
					op.end = time.Now()
					mu.Unlock()
					var ee *exec.ExitError
					switch {
					case err == nil:
						op.outcome = catOK
						if op.kind == "create" {
							var r struct {
								ID string `json:"id"`
							}
							if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.ID == "" {
								t.Errorf("create %s printed %q", op.x, out.String())
							}
							op.id = r.ID
						}
					case errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled():
						op.outcome = catUnknown
					case strings.Contains(errb.String(), "already in use") || strings.Contains(errb.String(), "no volume, snapshot or image of that name"):
						op.outcome = catNone
					case strings.Contains(errb.String(), "keep changing"):
						op.outcome = catUnknown
					default:
						t.Errorf("archip %s: %v: %s", strings.Join(args, " "), err, errb.String())
						op.outcome = catUnknown
					}
					mu.Lock()
					log = append(log, op)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	list := func() map[string]string {
		t.Helper()
		var p struct {
			Records []struct {
				Name string `json:"name"`
				ID   string `json:"id"`
			} `json:"records"`
			Next string `json:"next"`
		}
		if err := json.Unmarshal([]byte(e.archip("--json", "volume", "list")), &p); err != nil {
			t.Fatal(err)
		}
		names := map[string]string{}
		ids := map[string]string{}
		for _, r := range p.Records {
			if other, dup := ids[r.ID]; dup {
				t.Fatalf("%s listed as %q and %q", r.ID, other, r.Name)
			}
			ids[r.ID] = r.Name
			names[r.Name] = r.ID
		}
		return names
	}
	final := list()
	var ok, unknown int
	for _, op := range log {
		switch op.outcome {
		case catOK:
			ok++
		case catUnknown:
			unknown++
		}
	}
	t.Logf("%d invocations (%d done, %d killed or unknown), %d group kills, %d names at the end", len(log), ok, unknown, kills, len(final))
	checkCatalogModel(t, log, final)

	storeDir := strings.TrimPrefix(e.store, "file://")
	s, err := objstore.OpenFile(storeDir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	objects := func(prefix string) []string {
		var out []string
		if err := s.List(context.Background(), prefix, func(in objstore.Info) error {
			out = append(out, strings.TrimPrefix(in.Name, prefix))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		sort.Strings(out)
		return out
	}
	// The next command on each name settles what a killed rename left.
	for _, n := range objects("cat/name/") {
		_, errs, code := e.chaosRun("volume", "rename", n, n)
		if code != 1 || !strings.Contains(errs, "already in use") && !strings.Contains(errs, "no volume") {
			t.Fatalf("settling %q: exit %d: %s", n, code, errs)
		}
	}
	if settled := list(); fmt.Sprint(settled) != fmt.Sprint(final) {
		t.Fatalf("settling changed the names:\nbefore %v\nafter  %v", final, settled)
	}
	if raw := objects("cat/name/"); len(raw) != len(final) {
		t.Fatalf("%d records for %d names after settling: %v", len(raw), len(final), raw)
	}
	// Every process is dead or done: their holds on collections are
	// dead too (a collection would wait a minute to find that out).
	for _, h := range objects("gc/holds/") {
		s.Delete(context.Background(), "gc/holds/"+h)
	}
	ageTree(t, filepath.Join(storeDir, "obj"), 2*time.Hour)
	e.archip("gc")
	if after := list(); fmt.Sprint(after) != fmt.Sprint(final) {
		t.Fatalf("gc changed the names:\nbefore %v\nafter  %v", final, after)
	}
	ids := map[string]bool{}
	for n, id := range final {
		ids[id] = true
		e.archip("volume", "info", n)
	}
	for _, o := range objects("vol/") {
		if id, _, _ := strings.Cut(o, "/"); !ids[id] {
			t.Fatalf("gc left vol/%s, and no record names %s", o, id)
		}
	}
	for _, h := range objects("cat/id/") {
		if !ids[h] {
			t.Fatalf("gc left the hint cat/id/%s, and no record names it", h)
		}
	}
}

// checkCatalogModel checks the names left against the answers (see
// TestCatalogKill9). A remove prints no ID, so which ID a remove removed
// is not known: any ID that can be at its name then.
func checkCatalogModel(t *testing.T, log []catOp, final map[string]string) {
	t.Helper()
	created := map[string]catOp{}
	var unknownCreates []catOp
	okCreates, okRemoves, unknownRemoves := 0, 0, 0
	for _, op := range log {
		switch {
		case op.kind == "create" && op.outcome == catOK:
			created[op.id] = op
			okCreates++
		case op.kind == "create" && op.outcome == catUnknown:
			unknownCreates = append(unknownCreates, op)
		case op.kind == "remove" && op.outcome == catOK:
			okRemoves++
		case op.kind == "remove" && op.outcome == catUnknown:
			unknownRemoves++
		}
	}
	// reach: the earliest time from which an ID made by create can be at
	// each name, through renames that may have happened after it got
	// to their old name.
	reach := func(create catOp) map[string]time.Time {
		best := map[string]time.Time{create.x: create.start}
		for changed := true; changed; {
			changed = false
			for _, op := range log {
				if op.kind != "rename" || op.outcome == catNone {
					continue
				}
				t0, ok := best[op.x]
				if !ok || op.end.Before(t0) {
					continue
				}
				t1 := t0
				if op.start.After(t1) {
					t1 = op.start
				}
				if b, ok := best[op.y]; !ok || t1.Before(b) {
					best[op.y] = t1
					changed = true
				}
			}
		}
		return best
	}
	unknownNamed := 0
	for n, id := range final {
		if c, ok := created[id]; ok {
			if _, ok := reach(c)[n]; !ok {
				t.Fatalf("%q names %s, created as %q: no renames lead there", n, id, c.x)
			}
			continue
		}
		unknownNamed++
		found := false
		for _, c := range unknownCreates {
			if _, ok := reach(c)[n]; ok {
				found = true
				break
			}
		}
		if !found || unknownNamed > len(unknownCreates) {
			t.Fatalf("%q names %s, which no create that may have happened can have put there", n, id)
		}
	}
	for id, c := range created {
		named := false
		for _, fid := range final {
			named = named || fid == id
		}
		if named {
			continue
		}
		removable := false
		for n, t0 := range reach(c) {
			for _, op := range log {
				if op.kind == "remove" && op.outcome != catNone && op.x == n && !op.end.Before(t0) {
					removable = true
				}
			}
		}
		if !removable {
			t.Fatalf("%s, created as %q, is lost: no remove can have removed it", id, c.x)
		}
	}
	// Each remove that answered removed one ID, each create that
	// answered made one.
	lo := okCreates - okRemoves - unknownRemoves
	hi := okCreates + len(unknownCreates) - okRemoves
	if len(final) < lo || len(final) > hi {
		t.Fatalf("%d names at the end; the answers allow %d to %d (creates %d done %d unknown, removes %d done %d unknown)",
			len(final), lo, hi, okCreates, len(unknownCreates), okRemoves, unknownRemoves)
	}
}
