package server

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"meshbed.local/controlplanes/go/internal/resources"
)

// debugHandler serves the debug API:
//
//	GET /healthz               200 once the first Consul sync is done, else 503
//	GET /debug/pushes?since=T  pushes and ACK/NACKs newer than unix time T (meshbed's shape)
//	GET /debug/nodes           connected streams, per type what was sent and answered
//	GET /debug/state           the Consul view: instances, policies, watcher health
//	GET /debug/snapshot/<node> the node's resources and versions
func (cp *ControlPlane) debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if cp.source.Synced() {
			writeJSON(w, http.StatusOK, map[string]any{"ok": true})
			return
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ok": false, "reason": "first Consul sync not done"})
	})
	mux.HandleFunc("GET /debug/pushes", func(w http.ResponseWriter, r *http.Request) {
		since := 0.0
		if v := r.URL.Query().Get("since"); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]any{"error": "since must be a unix timestamp"})
				return
			}
			since = f
		}
		writeJSON(w, http.StatusOK, cp.pushlog.Since(since))
	})
	mux.HandleFunc("GET /debug/nodes", func(w http.ResponseWriter, _ *http.Request) {
		nodes := cp.streams.describe()
		sort.Slice(nodes, func(i, j int) bool {
			a, b := nodes[i], nodes[j]
			if a["node"] != b["node"] {
				return a["node"].(string) < b["node"].(string)
			}
			return a["stream"].(int64) < b["stream"].(int64)
		})
		writeJSON(w, http.StatusOK, nodes)
	})
	mux.HandleFunc("GET /debug/state", func(w http.ResponseWriter, _ *http.Request) {
		st := cp.source.State()
		writeJSON(w, http.StatusOK, map[string]any{
			"consul": cp.source.Stats(), "services": st.Services, "policies": st.Policies, "mesh": st.Mesh,
			"nodes": cp.nodeIDs(), "push_rounds": cp.pushRounds(),
		})
	})
	mux.HandleFunc("GET /debug/snapshot/{node}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("node")
		snap := cp.SnapshotOf(id)
		if snap == nil {
			writeJSON(w, http.StatusNotFound, map[string]any{"error": "no connected node " + strconv.Quote(id) + " (or not synced yet)"})
			return
		}
		out := map[string]any{"node": id}
		for _, t := range resources.TypeOrder {
			items := map[string]json.RawMessage{}
			for name, res := range snap.GetResources(t) {
				b, err := protojson.Marshal(res)
				if err != nil {
					b, _ = json.Marshal(err.Error())
				}
				items[name] = b
			}
			out[resources.Short[t]] = map[string]any{"version": snap.GetVersion(t), "resources": items,
				"resource_versions": snap.GetVersionMap(t)}
		}
		writeJSON(w, http.StatusOK, out)
	})
	return mux
}

func (cp *ControlPlane) pushRounds() int {
	cp.pushMu.Lock()
	defer cp.pushMu.Unlock()
	return cp.pushes
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	if err := enc.Encode(v); err != nil {
		_, _ = w.Write([]byte(strings.TrimSpace(`{"error":"encoding failed"}`)))
	}
}
