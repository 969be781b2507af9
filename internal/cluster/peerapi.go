package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store"
)

// The peer query API, served on each node's HTTP address. It answers for
// what only this node holds: its head and its recently committed blocks,
// minus the blocks the asking node says it has loaded.
const (
	pathTrace  = "/internal/cluster/v1/trace"
	pathSearch = "/internal/cluster/v1/search"
	// pathTraces answers many traces by id in one request.
	pathTraces = "/internal/cluster/v1/traces"
	// PeerHeader marks requests between nodes: a node answers them from
	// its own data only, never by asking its peers again.
	PeerHeader = "X-Tracedx-Peer"
)

// Local is what a node serves to its peers (the storage engine).
type Local interface {
	PeerTrace(ctx context.Context, id model.TraceID, exclude map[string]bool) ([]model.Span, error)
	PeerSearch(ctx context.Context, q store.Query, exclude map[string]bool) ([]model.TraceSummary, error)
	RecentBlocks(d time.Duration) []string
	PeerWindow() time.Duration
}

type traceRequest struct {
	TraceID model.TraceID `json:"trace_id"`
	Exclude []string      `json:"exclude"`
}

type tracesRequest struct {
	TraceIDs []model.TraceID `json:"trace_ids"`
	Exclude  []string        `json:"exclude"`
}

// maxPeerTraceIDs bounds the trace ids of one request to pathTraces (a
// request body of ~35 KB; the root-cause ranking reads up to 500 traces
// a window).
const maxPeerTraceIDs = 1000

type searchRequest struct {
	Query   store.Query `json:"query"`
	Exclude []string    `json:"exclude"`
}

func toSet(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// maxPeerRequest bounds a peer request body (a query and some block ids).
const maxPeerRequest = 1 << 20

// RegisterPeerRoutes mounts the peer query API on mux; only callers with
// sec's peer token get through.
func RegisterPeerRoutes(mux *http.ServeMux, local Local, sec Security, log *slog.Logger) {
	mux.Handle("POST "+pathTrace, sec.requirePeer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req traceRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, maxPeerRequest)).Decode(&req); err != nil {
			http.Error(w, "bad peer trace request: "+err.Error(), http.StatusBadRequest)
			return
		}
		spans, err := local.PeerTrace(r.Context(), req.TraceID, toSet(req.Exclude))
		if errors.Is(err, store.ErrNotFound) {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if err != nil {
			log.Error("peer trace query failed", "trace_id", req.TraceID, "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeSpans(w, spans)
	})))
	mux.Handle("POST "+pathTraces, sec.requirePeer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req tracesRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, maxPeerRequest)).Decode(&req); err != nil {
			http.Error(w, "bad peer traces request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(req.TraceIDs) > maxPeerTraceIDs {
			http.Error(w, fmt.Sprintf("bad peer traces request: %d trace ids, at most %d", len(req.TraceIDs), maxPeerTraceIDs), http.StatusBadRequest)
			return
		}
		exclude := toSet(req.Exclude)
		var all []model.Span
		for _, id := range req.TraceIDs {
			spans, err := local.PeerTrace(r.Context(), id, exclude)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				log.Error("peer trace query failed", "trace_id", id, "err", err)
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			all = append(all, spans...)
		}
		writeSpans(w, all)
	})))
	mux.Handle("POST "+pathSearch, sec.requirePeer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req searchRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, maxPeerRequest)).Decode(&req); err != nil {
			http.Error(w, "bad peer search request: "+err.Error(), http.StatusBadRequest)
			return
		}
		res, err := local.PeerSearch(r.Context(), req.Query, toSet(req.Exclude))
		if err != nil {
			log.Error("peer search failed", "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if res == nil {
			res = []model.TraceSummary{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(res)
	})))
}

// writeSpans answers spans as OTLP protobuf.
func writeSpans(w http.ResponseWriter, spans []model.Span) {
	var m ptrace.ProtoMarshaler
	body, err := m.MarshalTraces(otlpconv.ToTraces(spans))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(body)
}

// peerClient calls the peer query API of one node.
type peerClient struct {
	peer Peer
	http *peerHTTP
}

func (c *peerClient) post(ctx context.Context, path string, req any) (*http.Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := c.http.newRequest(ctx, http.MethodPost, c.peer, path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	return c.http.do(hr)
}

func (c *peerClient) trace(ctx context.Context, id model.TraceID, exclude []string) ([]model.Span, error) {
	resp, err := c.post(ctx, pathTrace, traceRequest{TraceID: id, Exclude: exclude})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	return c.readSpans(resp)
}

// traces hands add the peer's spans of the traces ids, a request of at
// most maxPeerTraceIDs ids at a time. A peer without pathTraces (an older
// build: 404 or 405 for the path) is asked trace by trace.
func (c *peerClient) traces(ctx context.Context, ids []model.TraceID, exclude []string, add func([]model.Span)) error {
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), maxPeerTraceIDs)]
		ids = ids[len(chunk):]
		resp, err := c.post(ctx, pathTraces, tracesRequest{TraceIDs: chunk, Exclude: exclude})
		if err != nil {
			return err
		}
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			resp.Body.Close()
			for _, id := range append(chunk, ids...) {
				spans, err := c.trace(ctx, id, exclude)
				if err != nil {
					return err
				}
				add(spans)
			}
			return nil
		}
		spans, err := c.readSpans(resp)
		resp.Body.Close()
		if err != nil {
			return err
		}
		add(spans)
	}
	return nil
}

// readSpans decodes a peer's OTLP protobuf answer.
func (c *peerClient) readSpans(resp *http.Response) ([]model.Span, error) {
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("peer %s: %s: %s", c.peer.ID, resp.Status, bytes.TrimSpace(body))
	}
	var u ptrace.ProtoUnmarshaler
	td, err := u.UnmarshalTraces(body)
	if err != nil {
		return nil, fmt.Errorf("peer %s: decode trace: %w", c.peer.ID, err)
	}
	return otlpconv.FromTraces(td), nil
}

func (c *peerClient) search(ctx context.Context, q store.Query, exclude []string) ([]model.TraceSummary, error) {
	resp, err := c.post(ctx, pathSearch, searchRequest{Query: q, Exclude: exclude})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("peer %s: %s: %s", c.peer.ID, resp.Status, bytes.TrimSpace(body))
	}
	var out []model.TraceSummary
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("peer %s: decode search: %w", c.peer.ID, err)
	}
	return out, nil
}
