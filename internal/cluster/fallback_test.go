package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tracedx/tracedx/internal/findingstore"
)

// downNode is the address of a node that is down.
func downNode(t *testing.T) string {
	s := httptest.NewServer(http.NotFoundHandler())
	s.Close()
	return s.Listener.Addr().String()
}

// A peer that is down is answered by the fallback (its copy in the
// bucket); one the fallback cannot answer either is left out.
func TestPartsOfADownPeerFromTheFallback(t *testing.T) {
	parts := &Parts{}
	ServePart(parts, "times", func(_ context.Context, n int) (int, error) { return n * 2, nil })
	mux := http.NewServeMux()
	RegisterPartRoutes(mux, parts, Security{}, quiet)
	up := httptest.NewServer(mux)
	defer up.Close()
	ring, err := NewRing([]Peer{
		{ID: "self", OTLPGRPC: "unused:1", HTTP: "unused:2"},
		{ID: "up", OTLPGRPC: "unused:3", HTTP: up.Listener.Addr().String()},
		{ID: "down", OTLPGRPC: "unused:4", HTTP: downNode(t)},
		{ID: "gone", OTLPGRPC: "unused:5", HTTP: downNode(t)},
	}, "self")
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(nil, nil, ring, Security{}, quiet)
	var mu sync.Mutex
	var asked []string
	fallback := func(_ context.Context, peer string, n int) (int, error) {
		mu.Lock()
		asked = append(asked, peer)
		mu.Unlock()
		if peer == "gone" {
			return 0, errors.New("nothing in the bucket")
		}
		return n * 100, nil
	}
	got := AskPeersOr(context.Background(), s, "times", 7, fallback)
	slices.Sort(got)
	slices.Sort(asked)
	if !slices.Equal(got, []int{14, 700}) {
		t.Fatalf("answers %v, want 14 from the peer and 700 from the fallback for the one down", got)
	}
	if !slices.Equal(asked, []string{"down", "gone"}) {
		t.Fatalf("fallback asked for %v, want the two nodes that are down", asked)
	}
	for _, peer := range []string{"down", "gone"} {
		if n := testutil.ToFloat64(s.failure.WithLabelValues(peer)); n != 1 {
			t.Fatalf("failures of %s: %v, want 1", peer, n)
		}
	}
}

// The merged findings list takes a down node's findings from the
// fallback and says which nodes did not answer and which of them came
// from the bucket.
func TestFindingsListOfADownNodeFromTheFallback(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	local := findingsNode(t, []findingstore.Stored{stored("n_plus_one_query", t0)}, nil)
	defer local.Close()
	ring, err := NewRing([]Peer{
		{ID: "self", OTLPGRPC: "unused:1", HTTP: local.Listener.Addr().String()},
		{ID: "down", OTLPGRPC: "unused:2", HTTP: downNode(t)},
		{ID: "gone", OTLPGRPC: "unused:3", HTTP: downNode(t)},
	}, "self")
	if err != nil {
		t.Fatal(err)
	}
	var query string
	fallback := func(peer string, r *http.Request) (*findingstore.ListResponse, error) {
		if peer == "gone" {
			return nil, errors.New("nothing in the bucket")
		}
		query = r.URL.RawQuery
		return &findingstore.ListResponse{Findings: []findingstore.Stored{stored("retry_storm", t0.Add(time.Minute))}}, nil
	}
	for _, tc := range []struct {
		name              string
		fallback          ListFallback
		kinds, fromBucket []string
	}{
		{"with the bucket", fallback, []string{"retry_storm", "n_plus_one_query"}, []string{"down"}},
		{"without", nil, []string{"n_plus_one_query"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			MergeFindingsOr(local.Config.Handler, ring, Security{}, quiet, tc.fallback).ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/findings?kind=x&limit=5", nil))
			var res findingstore.ListResponse
			if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &res) != nil {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			var kinds []string
			for _, f := range res.Findings {
				kinds = append(kinds, f.Kind)
			}
			if !slices.Equal(kinds, tc.kinds) || !slices.Equal(res.Unanswered, []string{"down", "gone"}) || !slices.Equal(res.FromBucket, tc.fromBucket) {
				t.Fatalf("findings %v, unanswered %v, from the bucket %v; want %v, [down gone], %v", kinds, res.Unanswered, res.FromBucket, tc.kinds, tc.fromBucket)
			}
			if tc.fallback != nil && query != "kind=x&limit=5" {
				t.Fatalf("fallback asked %q, want the client's query", query)
			}
		})
	}
}
