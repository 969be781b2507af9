package findingstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
)

// systemicFinding is a node's cross-trace finding of its share of the
// traffic, as the systemic detector stores it.
func systemicFinding(kind, key, svc string, at time.Time, impact float64, trace string) Stored {
	return Stored{Finding: analyze.Finding{Kind: kind, Severity: analyze.SeverityWarning, Title: kind + " on " + key,
		TraceID: trace, SpanIDs: []string{}, ImpactMS: impact, Evidence: map[string]any{"window_s": 600, "requests": 40}},
		Time: at, Service: svc, Operation: "GET /cart", ExampleTraceIDs: []string{trace}, Key: key, Systemic: true}
}

func withOp(f Stored, op string) Stored {
	f.Operation = op
	return f
}

// Three nodes found the same regression in their shares of the traffic;
// the cluster's summary counts it once, as the merged list shows it.
func TestMergedSummaryCountsAConditionOfSeveralNodesOnce(t *testing.T) {
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	ctx := context.Background()
	t0 := c.Now().Add(-30 * time.Minute)
	cart := "latency_regression/checkout/GET /cart"
	auth := "auth_expiry_race/payments"
	perNode := [][]Stored{
		{systemicFinding("latency_regression", cart, "checkout", t0, 100, "a1"), finding("n_plus_one_query", "checkout", tid(1), t0),
			systemicFinding("auth_expiry_race", auth, "web", t0, 10, "a2")},
		{systemicFinding("latency_regression", cart, "checkout", t0.Add(20*time.Second), 90, "b1"), finding("n_plus_one_query", "checkout", tid(2), t0),
			withOp(systemicFinding("latency_regression", "latency_regression/checkout/POST /pay", "checkout", t0, 70, "b2"), "POST /pay"),
			systemicFinding("auth_expiry_race", auth, "mobile,web", t0.Add(time.Second), 20, "b3")},
		{systemicFinding("latency_regression", cart, "checkout", t0.Add(-10*time.Second), 120, "c1"), finding("n_plus_one_query", "checkout", tid(3), t0)},
	}
	nodes := make([]*Store, len(perNode))
	for i, fs := range perNode {
		s, err := Open(Options{Dir: t.TempDir(), Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if err := s.Put(ctx, fs); err != nil {
			t.Fatal(err)
		}
		nodes[i] = s
	}
	nodes[0].SetPeerSummaries(func(ctx context.Context, q SummaryQuery) []Summary {
		var out []Summary
		for _, n := range nodes[1:] {
			s, err := n.Summarize(ctx, q)
			if err != nil {
				t.Error(err)
			}
			out = append(out, s)
		}
		return out
	})
	sum, err := nodes[0].clusterSummary(ctx, SummaryQuery{From: t0.Add(-time.Hour), To: c.Now(), Groups: 10})
	if err != nil {
		t.Fatal(err)
	}
	// 3 per-trace findings, /cart once, /pay once, the auth race once.
	if sum.Total != 6 || sum.BySeverity["warning"] != 6 {
		t.Fatalf("total %d (by severity %v), want 6", sum.Total, sum.BySeverity)
	}
	kinds := map[string]KindCount{}
	for _, k := range sum.Kinds {
		kinds[k.Kind] = k
	}
	if k := kinds["latency_regression"]; k.Count != 2 || k.ImpactMS != 380 {
		t.Fatalf("latency_regression %+v, want 2 findings of 380 ms", k)
	}
	groups := map[string]Group{}
	for _, g := range sum.Groups {
		groups[g.Kind+"/"+g.Service+"/"+g.Operation] = g
	}
	if g := groups["latency_regression/checkout/GET /cart"]; g.Count != 1 || g.ImpactMS != 310 || g.Traces != 3 {
		t.Fatalf("/cart group %+v, want 1 finding of 310 ms over 3 traces", g)
	}
	// The race's callers differ by node: one finding, under the callers of
	// the node that saw most of it, with all its impact.
	if g := groups["auth_expiry_race/mobile,web/GET /cart"]; g.Count != 1 || g.ImpactMS != 30 || len(sum.Groups) != 4 {
		t.Fatalf("auth race group %+v (groups %+v), want one finding of 30 ms", g, sum.Groups)
	}
	for _, s := range sum.Services {
		if s.Service == "web" {
			t.Fatalf("the auth race's member's service is still counted: %+v", sum.Services)
		}
	}
	if sum.Systemic != nil {
		t.Fatalf("the merged summary lists the findings it joined: %+v", sum.Systemic)
	}
	// Without the findings in the parts (a node of an older version) the
	// counts add up as before rather than fail.
	old := MergeSummaries([]Summary{{Total: 2}, {Total: 1}}, 10)
	if old.Total != 3 {
		t.Fatalf("parts without findings: total %d", old.Total)
	}
}

// The evidence of a joined finding: counts summed, rates recomputed from
// the sums, lists of callers joined, whatever form the evidence is in.
func TestJoinedEvidence(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	spike := func(at time.Time, requests, errors int, node string) Stored {
		f := systemicFinding("error_rate_spike", "error_rate_spike/cart/GET /cart", "cart", at, 10, node+"-t")
		// As the detector hands it over (a struct), or as a peer's answer
		// decodes it (a map).
		f.Evidence = struct {
			WindowS   float64 `json:"window_s"`
			Requests  int     `json:"requests"`
			Errors    int     `json:"errors"`
			ErrorRate float64 `json:"error_rate"`
		}{300, requests, errors, float64(errors) / float64(requests)}
		f.Nodes = []string{node}
		return f
	}
	race := func(at time.Time, callers []any, node string) Stored {
		f := systemicFinding("auth_expiry_race", "auth_expiry_race/payments", "web", at, 5, node+"-r")
		f.Evidence = map[string]any{"target": "payments", "callers": callers, "failures": 2.0, "successes": 7.0}
		f.Culprit = &analyze.Culprit{Service: callers[0].(string), Operation: "token refresh"}
		f.Nodes = []string{node}
		return f
	}
	in := []Stored{spike(t0, 30, 4, "a"), race(t0, []any{"web"}, "a"), spike(t0.Add(10*time.Second), 25, 5, "b"),
		race(t0.Add(time.Second), []any{"mobile", "web"}, "b"), finding("retry_storm", "cart", tid(1), t0),
		// Ten minutes later, outside the 5-minute window: another spike.
		spike(t0.Add(10*time.Minute), 40, 9, "c")}
	out := JoinSystemic(in)
	if len(out) != 4 {
		t.Fatalf("%d findings, want the spike, the race, the per-trace finding and the later spike: %+v", len(out), out)
	}
	ev := func(f Stored) map[string]any {
		m, err := evidenceMap(f.Evidence)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	s := ev(out[0])
	if s["requests"] != 55.0 || s["errors"] != 9.0 || s["error_rate"] != 0.1636 || s["window_s"] != 310.0 || out[0].Joined != 2 {
		t.Fatalf("joined spike evidence %v", s)
	}
	r := ev(out[1])
	if fmt.Sprint(r["callers"]) != "[web mobile]" || r["failures"] != 4.0 || len(out[1].Culprits) != 2 || fmt.Sprint(out[1].Nodes) != "[a b]" {
		t.Fatalf("joined race evidence %v, culprits %v, nodes %v", r, out[1].Culprits, out[1].Nodes)
	}
	if out[2].Kind != "retry_storm" || out[3].Joined != 0 || ev(out[3])["requests"] != 40.0 {
		t.Fatalf("per-trace finding or the later spike changed: %+v", out[2:])
	}
	if in[0].Joined != 0 || ev(in[0])["requests"] != 30.0 {
		t.Fatal("JoinSystemic changed its input")
	}
}
