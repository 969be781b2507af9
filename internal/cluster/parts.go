package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
)

// Every node aggregates only what it owns (RED records, service-graph
// edges, findings of its traces, the services in its head), so an
// aggregate answered for the whole cluster is merged from each node's
// part. A part is named; a node serves its own parts to its peers at
// pathPart+name, and the asking node merges them with its own. Parts
// carry mergeable data (counts, histogram buckets, sets), never rendered
// figures.
const pathPart = "/internal/cluster/v1/part/"

// Parts are the named parts this node serves to its peers.
type Parts struct {
	mu sync.RWMutex
	m  map[string]func(ctx context.Context, req []byte) (any, error)
}

// ServePart serves fn as part name: a peer posts a Req as JSON and gets
// the Resp as JSON.
func ServePart[Req, Resp any](p *Parts, name string, fn func(ctx context.Context, req Req) (Resp, error)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]func(context.Context, []byte) (any, error){}
	}
	p.m[name] = func(ctx context.Context, body []byte) (any, error) {
		var req Req
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, badPart{fmt.Errorf("decode %s request: %w", name, err)}
		}
		return fn(ctx, req)
	}
}

// badPart is a request a part cannot decode (a 400 to the peer).
type badPart struct{ error }

// RegisterPartRoutes mounts the parts on mux (next to the peer query API,
// under the same /internal/cluster/v1/ prefix).
// Like the rest of the peer API, only the cluster's peer token may ask.
func RegisterPartRoutes(mux *http.ServeMux, p *Parts, sec Security, log *slog.Logger) {
	mux.Handle("POST "+pathPart+"{name}", sec.requirePeer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		p.mu.RLock()
		fn := p.m[name]
		p.mu.RUnlock()
		if fn == nil {
			http.Error(w, "unknown cluster part "+name, http.StatusNotFound)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxPeerRequest))
		if err != nil {
			http.Error(w, "reading part request: "+err.Error(), http.StatusBadRequest)
			return
		}
		res, err := fn(r.Context(), body)
		if err != nil {
			code := http.StatusInternalServerError
			if _, bad := err.(badPart); bad {
				code = http.StatusBadRequest
			}
			log.Warn("serving a cluster part failed", "part", name, "err", err)
			http.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(res)
	})))
}

// AskPeers asks every other node for its part name of req, concurrently,
// and returns the answers of those that gave one. A node that fails is
// logged and counted (tracedx_cluster_peer_query_failures_total) and left
// out: the aggregate is answered without its share until it is back.
func AskPeers[Req, Resp any](ctx context.Context, s *Store, name string, req Req) []Resp {
	return AskPeersOr[Req, Resp](ctx, s, name, req, nil)
}

// askPart asks one peer for its part name of req.
func askPart[Req, Resp any](ctx context.Context, p *peerClient, name string, req Req) (Resp, error) {
	var r Resp
	resp, err := p.post(ctx, pathPart+name, req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return r, fmt.Errorf("peer %s: part %s: %s: %s", p.peer.ID, name, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("peer %s: decode part %s: %w", p.peer.ID, name, err)
	}
	return r, nil
}
