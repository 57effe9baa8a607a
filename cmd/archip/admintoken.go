package main

import (
	"fmt"
	"os"
	"strings"
)

// adminToken is the bearer token of the daemons' admin API: the content
// of --admin-token-file, else ARCHIP_ADMIN_TOKEN, else none. archip
// serve requires it of admin requests; the other commands send it when
// they ask a daemon to hand a volume over. It is never a flag's value:
// command lines are visible to every user of the host.
func (g *globals) adminToken() (string, error) {
	if g.adminTokenFile == "" {
		return strings.TrimSpace(os.Getenv("ARCHIP_ADMIN_TOKEN")), nil
	}
	b, err := os.ReadFile(g.adminTokenFile)
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", usageError{fmt.Errorf("--admin-token-file %s is empty", g.adminTokenFile)}
	}
	return tok, nil
}
