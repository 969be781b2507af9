package analyze

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// liveHistory is today's history: the statement now usually takes 1.1 s.
type liveHistory struct{ NoHistory }

func (liveHistory) StatementDuration(string, string) (Baseline, bool) {
	return Baseline{P50MS: 1100, P95MS: 1300, Count: 500}, true
}

func TestExplainBuildsTheWhyChainFromStoredFindings(t *testing.T) {
	tr := model.TraceID{1}
	entry := model.SpanID{1}
	stmt := "SELECT * FROM orders WHERE id = 7 FOR UPDATE"
	spans := []model.Span{
		{TraceID: tr, SpanID: entry, Service: "orders", Name: "GET /orders", Kind: model.KindServer, StartUnixNano: 1e9, EndUnixNano: 1e9 + 1120e6,
			StatusCode: model.StatusError, Attrs: model.Attrs{{Key: "http.route", Value: model.Str("/orders")}}},
		{TraceID: tr, SpanID: model.SpanID{2}, ParentSpanID: entry, Service: "orders", Name: "SELECT orders", Kind: model.KindClient,
			StartUnixNano: 1e9 + 10e6, EndUnixNano: 1e9 + 1110e6,
			Attrs: model.Attrs{{Key: "db.system", Value: model.Str("postgresql")}, {Key: "db.statement", Value: model.Str(stmt)}}},
	}
	// As read back from the findings store: evidence is generic JSON.
	generic := func(v any) any {
		raw, _ := json.Marshal(v)
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		return m
	}
	stored := []Finding{
		{Kind: "error_origin", Severity: SeverityWarning, Title: "orders failed", SpanIDs: []string{model.SpanID{1}.String()}, Fix: "handle the lock timeout",
			Evidence: generic(ErrorOriginEvidence{Origin: SpanRef{Service: "orders", Operation: "SELECT orders"}, RootFailed: true})},
		{Kind: "slow_query", Severity: SeverityCritical, Title: "postgresql query took 1100 ms (3.7x its usual 300 ms)", ImpactMS: 800,
			SpanIDs: []string{model.SpanID{2}.String()}, Fix: "EXPLAIN it",
			Evidence: generic(SlowQueryEvidence{Shape: NormalizeStatement(stmt), DBSystem: "postgresql", UsualMS: 300, UsualP95MS: 350})},
	}
	res := Explain(spans, stored, liveHistory{})
	if len(res.Findings) != 2 || res.Findings[0].Kind != "slow_query" || res.Findings[0].Severity != SeverityCritical {
		t.Fatalf("findings not the stored ones, most severe first: %+v", res.Findings)
	}
	why := strings.Join(res.Why, "\n")
	for _, want := range []string{"p50 300 ms", "The error started in orders SELECT orders", "Cause: postgresql query took 1100 ms (3.7x its usual 300 ms)"} {
		if !strings.Contains(why, want) {
			t.Errorf("why chain lacks %q:\n%s", want, why)
		}
	}
	if strings.Contains(why, "1100 ms)") && strings.Contains(why, "p50 1100") {
		t.Errorf("why chain uses today's usual time, not the stored one:\n%s", why)
	}
	if len(res.CriticalPath) == 0 || res.TraceID != tr.String() {
		t.Errorf("critical path %v, trace id %q", res.CriticalPath, res.TraceID)
	}
}
