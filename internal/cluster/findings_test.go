package cluster

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/findingstore"
)

// findingsNode answers GET /api/v1/findings with fixed findings, and
// records whether it was asked as a peer.
func findingsNode(t *testing.T, list []findingstore.Stored, asPeer *atomic.Bool) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asPeer != nil {
			asPeer.Store(r.Header.Get(PeerHeader) != "")
		}
		json.NewEncoder(w).Encode(findingstore.ListResponse{Findings: list})
	}))
}

func stored(kind string, at time.Time) findingstore.Stored {
	return findingstore.Stored{Finding: analyze.Finding{Kind: kind}, Time: at}
}

func TestFindingsListMergedAcrossNodes(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var peerAsked atomic.Bool
	peer := findingsNode(t, []findingstore.Stored{stored("retry_storm", t0.Add(2*time.Minute)), stored("slow_query", t0.Add(-time.Minute))}, &peerAsked)
	defer peer.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // a node that is down: the list is answered without it
	local := findingsNode(t, []findingstore.Stored{stored("n_plus_one_query", t0)}, nil)
	defer local.Close()
	ring, err := NewRing([]Peer{
		{ID: "self", OTLPGRPC: "unused:1", HTTP: local.Listener.Addr().String()},
		{ID: "peer", OTLPGRPC: "unused:2", HTTP: peer.Listener.Addr().String()},
		{ID: "down", OTLPGRPC: "unused:3", HTTP: down.Listener.Addr().String()},
	}, "self")
	if err != nil {
		t.Fatal(err)
	}
	h := MergeFindings(local.Config.Handler, ring, Security{}, quiet)

	get := func(query string, header bool) findingstore.ListResponse {
		r := httptest.NewRequest("GET", "/api/v1/findings"+query, nil)
		if header {
			r.Header.Set(PeerHeader, "1")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var out findingstore.ListResponse
		if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &out) != nil {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		return out
	}
	res := get("?limit=10", false)
	var kinds []string
	for _, f := range res.Findings {
		kinds = append(kinds, f.Kind)
	}
	if len(kinds) != 3 || kinds[0] != "retry_storm" || kinds[1] != "n_plus_one_query" || kinds[2] != "slow_query" {
		t.Fatalf("merged list, newest first: %v", kinds)
	}
	if !peerAsked.Load() {
		t.Fatal("the peer was not asked as a peer (it would fan out again)")
	}
	if res := get("?limit=2", false); len(res.Findings) != 2 || !res.Truncated {
		t.Fatalf("limit over the merged list: %d findings, truncated=%v", len(res.Findings), res.Truncated)
	}
	// A peer's own request is answered from local findings only.
	if res := get("", true); len(res.Findings) != 1 {
		t.Fatalf("peer request fanned out: %d findings", len(res.Findings))
	}
}
