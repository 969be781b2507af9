package cluster

import (
	"encoding/json"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/findingstore"
)

// latencyFinding is one node's latency_regression finding of its share of
// an endpoint's requests, as the systemic detector stores it.
func latencyFinding(key string, at time.Time, requests int, impact float64, trace string) findingstore.Stored {
	ev, _ := json.Marshal(map[string]any{"service": "checkout", "operation": "GET /cart", "window_s": 600,
		"requests": requests, "p95_ms": 900, "baseline_p95_ms": 300, "factor": 3})
	return findingstore.Stored{Finding: analyze.Finding{Kind: "latency_regression", Severity: analyze.SeverityWarning,
		Title: "GET /cart is 3x slower", TraceID: trace, SpanIDs: []string{}, ImpactMS: impact, Evidence: json.RawMessage(ev),
		Culprit: &analyze.Culprit{Service: "checkout", Operation: "GET /cart"}},
		Time: at, Service: "checkout", Operation: "GET /cart", ExampleTraceIDs: []string{trace}, Key: key, Systemic: true}
}

func TestSystemicFindingsOfSeveralNodesJoined(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cart := "latency_regression/checkout/GET /cart"
	perTrace := stored("n_plus_one_query", t0)
	// Every node saw the regression in its third of the traffic, each at
	// its own evaluation tick; node b also saw another endpoint regress,
	// and node a saw /cart regress two hours earlier (another episode).
	a := findingsNode(t, []findingstore.Stored{latencyFinding(cart, t0, 40, 100, "a1"), perTrace,
		latencyFinding(cart, t0.Add(-2*time.Hour), 30, 50, "a0")}, nil)
	defer a.Close()
	b := findingsNode(t, []findingstore.Stored{latencyFinding(cart, t0.Add(20*time.Second), 35, 90, "b1"),
		latencyFinding("latency_regression/checkout/POST /pay", t0, 25, 70, "b2")}, nil)
	defer b.Close()
	self := findingsNode(t, []findingstore.Stored{latencyFinding(cart, t0.Add(-10*time.Second), 38, 120, "s1"), perTrace}, nil)
	defer self.Close()
	ring, err := NewRing([]Peer{
		{ID: "self", OTLPGRPC: "unused:1", HTTP: self.Listener.Addr().String()},
		{ID: "a", OTLPGRPC: "unused:2", HTTP: a.Listener.Addr().String()},
		{ID: "b", OTLPGRPC: "unused:3", HTTP: b.Listener.Addr().String()},
	}, "self")
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	MergeFindings(self.Config.Handler, ring, Security{}, quiet).ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/findings?limit=20", nil))
	var res findingstore.ListResponse
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &res) != nil {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var cartNow, pay []findingstore.Stored
	perTraceN := 0
	for _, f := range res.Findings {
		switch {
		case !f.Systemic:
			perTraceN++
		case f.Key == cart && f.Time.After(t0.Add(-time.Hour)):
			cartNow = append(cartNow, f)
		case f.Key != cart:
			pay = append(pay, f)
		}
	}
	if len(res.Findings) != 5 || len(cartNow) != 1 || len(pay) != 1 || perTraceN != 2 {
		t.Fatalf("want the /cart regression once (joined), /pay once, the earlier /cart episode and both per-trace findings: %+v", res.Findings)
	}
	j := cartNow[0]
	if !slices.Equal(j.Nodes, []string{"a", "b", "self"}) || j.Joined != 3 {
		t.Fatalf("joined finding names nodes %v (joined %d), want a, b, self", j.Nodes, j.Joined)
	}
	if j.ImpactMS != 310 || !j.Time.Equal(t0.Add(20*time.Second)) {
		t.Fatalf("impact %v at %v, want the sum 310 at the latest detection", j.ImpactMS, j.Time)
	}
	ex := slices.Clone(j.ExampleTraceIDs)
	slices.Sort(ex)
	if !slices.Equal(ex, []string{"a1", "b1", "s1"}) {
		t.Fatalf("example traces %v", j.ExampleTraceIDs)
	}
	var ev struct {
		Requests int     `json:"requests"`
		WindowS  float64 `json:"window_s"`
		P95MS    float64 `json:"p95_ms"`
	}
	if err := json.Unmarshal(mustJSON(t, j.Evidence), &ev); err != nil {
		t.Fatal(err)
	}
	// Windows: [t0-10s-600s, t0+20s] is their union.
	if ev.Requests != 40+35+38 || ev.WindowS != 630 || ev.P95MS != 900 {
		t.Fatalf("joined evidence %+v, want 113 requests over 630 s", ev)
	}
	if pay[0].Joined != 0 || !slices.Equal(pay[0].Nodes, []string{"b"}) {
		t.Fatalf("a condition one node saw is not joined: %+v", pay[0])
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
