package cluster

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestPartsAskedOfEveryPeer(t *testing.T) {
	serve := func(factor int) *httptest.Server {
		parts := &Parts{}
		ServePart(parts, "times", func(_ context.Context, n int) (int, error) { return n * factor, nil })
		mux := http.NewServeMux()
		RegisterPartRoutes(mux, parts, Security{}, quiet)
		return httptest.NewServer(mux)
	}
	two, three := serve(2), serve(3)
	defer two.Close()
	defer three.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	ring, err := NewRing([]Peer{
		{ID: "self", OTLPGRPC: "unused:1", HTTP: "unused:2"},
		{ID: "two", OTLPGRPC: "unused:3", HTTP: two.Listener.Addr().String()},
		{ID: "three", OTLPGRPC: "unused:4", HTTP: three.Listener.Addr().String()},
		{ID: "down", OTLPGRPC: "unused:5", HTTP: down.Listener.Addr().String()},
	}, "self")
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(nil, nil, ring, Security{}, quiet)
	got := AskPeers[int, int](context.Background(), s, "times", 7)
	sum := 0
	for _, n := range got {
		sum += n
	}
	if len(got) != 2 || sum != 14+21 {
		t.Fatalf("answers %v, want 14 and 21 (the node that is down left out)", got)
	}
	if n := testutil.ToFloat64(s.failure.WithLabelValues("down")); n != 1 {
		t.Fatalf("failures of the node that is down: %v", n)
	}
	// A part no node serves: every peer fails, nothing is made up.
	if got := AskPeers[int, int](context.Background(), s, "unknown", 1); len(got) != 0 {
		t.Fatalf("unknown part answered: %v", got)
	}
	// A request the part cannot decode is the asker's fault.
	resp, err := http.Post(two.URL+pathPart+"times", "application/json", strings.NewReader(`"seven"`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("undecodable request: %s, want 400", resp.Status)
	}
}
