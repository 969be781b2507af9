package v1

import (
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/model"
)

// Three traces: "quick" (newest, 1 span, 10 ms), "wide" (6 spans, 50 ms,
// one finding) and "async" (oldest, a 20 ms request whose consumer span
// ends 5 s later).
func sortFixture(t *testing.T) (Deps, map[string]model.TraceID) {
	base := uint64(time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC).UnixNano())
	ids := map[string]model.TraceID{}
	var spans []model.Span
	mk := func(name string, n byte, start uint64, rootMS uint64, kids int, kidEnd uint64) {
		id := model.TraceID{n}
		id[15] = n
		ids[name] = id
		root := model.Span{TraceID: id, SpanID: model.SpanID{n, 1}, Name: "GET /" + name, Service: "front", Kind: model.KindServer,
			StartUnixNano: start, EndUnixNano: start + rootMS*1e6}
		spans = append(spans, root)
		for k := 0; k < kids; k++ {
			spans = append(spans, model.Span{TraceID: id, SpanID: model.SpanID{n, byte(2 + k)}, ParentSpanID: root.SpanID, Name: "child",
				Service: "back", StartUnixNano: start + 1e6, EndUnixNano: start + kidEnd})
		}
	}
	mk("async", 3, base, 20, 1, 5e9)
	mk("wide", 2, base+60e9, 50, 5, 40e6)
	mk("quick", 1, base+120e9, 10, 0, 0)
	d := Deps{Store: apitest.NewStore(t, spans), Now: func() time.Time { return time.Unix(0, int64(base)).Add(10 * time.Minute) },
		Findings: storedFindings{ids["wide"]: {{Kind: "n_plus_one_query", Severity: analyze.SeverityWarning, Title: "N+1",
			SpanIDs: []string{model.SpanID{2, 3}.String()}, ImpactMS: 30}}}}
	return d, ids
}

func TestSearchSortAndFindingBadges(t *testing.T) {
	d, ids := sortFixture(t)
	srv := apitest.Serve(t, NewHandler(d))
	order := func(q string) []string {
		st, m := apitest.GetJSON(t, srv, "/api/v1/search?start=1h&"+q)
		if st != 200 {
			t.Fatalf("%s: %d %v", q, st, m)
		}
		var out []string
		for _, x := range apitest.Arr(t, "traces", m["traces"]) {
			out = append(out, x.(map[string]any)["trace_id"].(string))
		}
		return out
	}
	s := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, ids[n].String())
		}
		return out
	}
	apitest.Eq(t, "newest", order("limit=3"), s("quick", "wide", "async"))
	apitest.Eq(t, "longest first: the 5 s trace, though oldest and with limit 1", order("sort=longest&limit=1"), s("async"))
	apitest.Eq(t, "most spans", order("sort=spans&limit=2"), s("wide", "async"))
	apitest.Eq(t, "most impact", order("sort=impact&limit=1"), s("wide"))

	st, m := apitest.GetJSON(t, srv, "/api/v1/search?start=1h&findings=true")
	if st != 200 {
		t.Fatal(st, m)
	}
	wide := apitest.Arr(t, "traces", m["traces"])[1].(map[string]any)
	apitest.Eq(t, "impact", wide["impact_ms"], 30.0)
	f := apitest.Arr(t, "findings", wide["findings"])
	apitest.Eq(t, "badge", f[0].(map[string]any)["kind"], "n_plus_one_query")
	apitest.Eq(t, "badge span", f[0].(map[string]any)["span_id"], model.SpanID{2, 3}.String())
	apitest.Eq(t, "no findings: empty list", apitest.Arr(t, "findings", apitest.Arr(t, "traces", m["traces"])[0].(map[string]any)["findings"]), []any{})

	st, m = apitest.GetJSON(t, srv, "/api/v1/search?sort=worst")
	wantError(t, "bad sort", st, m, 400, "sort")
}

func TestDurationsPlotEndpointMeasure(t *testing.T) {
	d, ids := sortFixture(t)
	srv := apitest.Serve(t, NewHandler(d))
	st, m := apitest.GetJSON(t, srv, "/api/v1/search/durations?start=1h&limit=1")
	if st != 200 {
		t.Fatal(st, m)
	}
	apitest.Eq(t, "total, not capped by limit", m["total"], 3.0)
	pts := apitest.Arr(t, "points", m["points"])
	apitest.Eq(t, "points", len(pts), 3)
	for _, p := range pts {
		p := p.(map[string]any)
		if p["trace_id"] == ids["async"].String() {
			apitest.Eq(t, "async trace duration", p["duration_ms"], 5000.0)
			apitest.Eq(t, "async endpoint duration: the root span", p["endpoint_ms"], 20.0)
		}
	}
	st, m = apitest.GetJSON(t, srv, "/api/v1/search/durations?points=0")
	wantError(t, "bad points", st, m, 400, "limit")
}

func TestSamplePointsKeepsOutliers(t *testing.T) {
	sums := make([]model.TraceSummary, 1000)
	for i := range sums {
		sums[i] = model.TraceSummary{StartUnixNano: uint64(1000 - i), EndUnixNano: uint64(1000-i) + 10}
	}
	sums[500].EndUnixNano += 1e9
	sums[900].EndUnixNano += 2e9
	got := samplePoints(sums, 100)
	if len(got) != 100 {
		t.Fatalf("%d points, want 100", len(got))
	}
	has := map[int]bool{}
	for _, i := range got {
		has[i] = true
	}
	if !has[500] || !has[900] {
		t.Error("outliers dropped from the sample")
	}
	if !has[0] || got[len(got)-1] < 900 {
		t.Errorf("sample does not span the range: first %d last %d", got[0], got[len(got)-1])
	}
}

func TestResolveShortIDs(t *testing.T) {
	d, ids := sortFixture(t)
	srv := apitest.Serve(t, NewHandler(d))
	full := ids["wide"].String()
	st, m := apitest.GetJSON(t, srv, "/api/v1/traceids?prefix="+full[:16])
	if st != 200 {
		t.Fatal(st, m)
	}
	apitest.Eq(t, "resolved", m["trace_ids"], []any{full})
	_, m = apitest.GetJSON(t, srv, "/api/v1/traceids?prefix="+full[16:])
	apitest.Eq(t, "low half", m["trace_ids"], []any{full})
	st, m = apitest.GetJSON(t, srv, "/api/v1/traceids?prefix=xyz")
	wantError(t, "bad prefix", st, m, 400, "hex")
}
