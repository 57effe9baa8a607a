package e2e

import (
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// TestAdminTokenHandoffs: with an admin token (ARCHIP_ADMIN_TOKEN, which
// the daemons and the CLI inherit), two daemons hand a volume back and
// forth, the CLI's snapshots ask a writing daemon to hand over, and the
// admin API refuses requests without the token.
func TestAdminTokenHandoffs(t *testing.T) {
	needLibnbd(t)
	t.Setenv("ARCHIP_ADMIN_TOKEN", "e2e-admin-token")
	e := newEnv(t)
	alternate(t, e)
	TestSnapshotWhileWriting(t) // the CLI's handoff requests
	d := e.serve("--node-id", "c")
	for _, path := range []string{"/metrics", "/v1/volumes"} {
		resp, err := http.Get("http://" + d.admin + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %s, want 401", path, resp.Status)
		}
	}
	d.scrape(t) // with it
}

// TestAdminBeyondLoopbackNeedsToken: serve refuses to start an admin API
// reachable beyond loopback without a token.
func TestAdminBeyondLoopbackNeedsToken(t *testing.T) {
	t.Setenv("ARCHIP_ADMIN_TOKEN", "")
	e := newEnv(t)
	cmd := exec.Command(archipBin, "--store", e.store, "serve", "--nbd-listen", "unix:"+e.path("x.sock"),
		"--admin-listen", "0.0.0.0:0", "--admin-advertise", "127.0.0.1:9")
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "token") {
		t.Fatalf("serve beyond loopback without a token: exit %d, %v: %s", code, err, out)
	}
}
