package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"sync"

	"github.com/tracedx/tracedx/internal/findingstore"
)

// MergeFindings wraps the findings list (GET /api/v1/findings): each node
// stores the findings of the traces it owns (and its own systemic ones)
// on local disk, so the list asks every peer for the same query and
// merges the answers, newest first. Finding ids are per node. The
// cross-trace findings of one condition that several nodes saw in their
// shares of the traces are joined into one (findingstore.JoinSystemic).
func MergeFindings(next http.Handler, ring *Ring, sec Security, log *slog.Logger) http.Handler {
	return mergeFindings(next, ring, sec, log, nil)
}

func mergeFindings(next http.Handler, ring *Ring, sec Security, log *slog.Logger, fallback ListFallback) http.Handler {
	hc := newPeerHTTP(sec, peerTimeout)
	peers := ring.Others()
	log = log.With("component", "cluster")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(PeerHeader) != "" && sec.isPeer(r.Header.Get("Authorization")) {
			next.ServeHTTP(w, r)
			return
		}
		rec := &recorder{header: http.Header{}, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		var local findingstore.ListResponse
		if rec.status != http.StatusOK || json.Unmarshal(rec.body.Bytes(), &local) != nil {
			rec.replay(w)
			return
		}
		fromNode(local.Findings, ring.Self().ID)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, p := range peers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := peerFindings(r.Context(), hc, p, r.URL.RequestURI())
				if err != nil {
					peerListFailed(r, log, p, err, fallback, &mu, &local)
					return
				}
				mu.Lock()
				local.Findings = append(local.Findings, fromNode(res.Findings, p.ID)...)
				local.Truncated = local.Truncated || res.Truncated
				mu.Unlock()
			}()
		}
		wg.Wait()
		local.Findings = findingstore.JoinSystemic(local.Findings)
		sort.SliceStable(local.Findings, func(i, j int) bool { return local.Findings[i].Time.After(local.Findings[j].Time) })
		if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 && len(local.Findings) > n {
			local.Findings, local.Truncated = local.Findings[:n], true
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(local)
	})
}

// fromNode names node as the node of its cross-trace findings that name
// none (the others are already joined) and returns fs.
func fromNode(fs []findingstore.Stored, node string) []findingstore.Stored {
	for i := range fs {
		if fs[i].Systemic && len(fs[i].Nodes) == 0 {
			fs[i].Nodes = []string{node}
		}
	}
	return fs
}

func peerFindings(ctx context.Context, hc *peerHTTP, p Peer, uri string) (*findingstore.ListResponse, error) {
	req, err := hc.newRequest(ctx, http.MethodGet, p, uri, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var out findingstore.ListResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode findings: %w", err)
	}
	return &out, nil
}

// recorder keeps a handler's response to merge it.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *recorder) WriteHeader(code int)        { r.status = code }

func (r *recorder) replay(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body.Bytes())
}
