package daemon

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/lease"
)

// AdminHandler serves the daemon's admin API, on the address other nodes
// find in this node's leases:
//
//	POST lease.HandoffPath?volume=ID  flush volume ID and release its lease
//	GET  /v1/volumes                  the open volumes and their roles (JSON)
//	GET  /healthz                     "ok"
//	GET  /metrics                     the daemon's metrics (UseMetrics), for Prometheus
//
// With a token (RequireToken), every request but /healthz must carry it
// as "Authorization: Bearer TOKEN", or gets 401.
func (d *Daemon) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+lease.HandoffPath, func(w http.ResponseWriter, r *http.Request) {
		id, err := blockmap.ParseID(r.URL.Query().Get("volume"))
		if err != nil {
			http.Error(w, fmt.Sprintf("volume: %v", err), http.StatusBadRequest)
			return
		}
		// NB: the flush goes on if the asker gives up waiting: its next
		// request then finds the lease released sooner.
		released, err := d.Handoff(context.WithoutCancel(r.Context()), id)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]any{"volume": id, "released": released})
	})
	mux.HandleFunc("GET /v1/volumes", func(w http.ResponseWriter, r *http.Request) {
		st := d.Status()
		sort.Slice(st, func(i, j int) bool { return st[i].Name < st[j].Name })
		writeJSON(w, st)
	})
	if d.metrics != nil {
		mux.Handle("GET /metrics", d.metrics.Handler())
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	if d.adminToken == "" {
		return mux
	}
	want := []byte("Bearer " + d.adminToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if r.URL.Path != "/healthz" && subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="archip admin"`)
			http.Error(w, "daemon: this admin API requires the daemons' bearer token", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// RequireToken makes the admin API (AdminHandler) refuse requests that
// do not carry token. Call it before serving the admin API.
func (d *Daemon) RequireToken(token string) { d.adminToken = token }

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
