package daemon

import (
	"context"
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
// It has no authentication: listen on an address only the hosts sharing
// the store can reach.
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
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
