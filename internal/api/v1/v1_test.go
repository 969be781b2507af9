package v1

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/model"
)

func newServer(t testing.TB, d Deps) *httptest.Server {
	t.Helper()
	d.Store = apitest.NewStore(t, apitest.FixtureSpans(t))
	if d.Now == nil {
		d.Now = func() time.Time { return apitest.Now }
	}
	return apitest.Serve(t, NewHandler(d))
}

func wantError(t testing.TB, what string, st int, m map[string]any, status int, mention string) {
	t.Helper()
	if st != status {
		t.Fatalf("%s: status %d, want %d (%v)", what, st, status, m)
	}
	e := apitest.WantKeys(t, what, m, "error")
	msg, _ := e["error"].(string)
	if !strings.Contains(msg, mention) {
		t.Errorf("%s: error %q does not mention %q", what, msg, mention)
	}
}

var timeKeys = []string{"start_time", "start_unix_nano", "end_time", "end_unix_nano", "duration_ms"}

func withTimes(keys ...string) []string { return append(keys, timeKeys...) }

func TestTraceFieldByField(t *testing.T) {
	srv := newServer(t, Deps{})
	st, m := apitest.GetJSON(t, srv, "/api/v1/traces/"+apitest.TraceA)
	if st != 200 {
		t.Fatal(st, m)
	}
	tr := apitest.WantKeys(t, "trace", m, withTimes("trace_id", "span_count", "spans", "total_spans", "offset", "limit", "truncated")...)
	apitest.Eq(t, "total_spans", tr["total_spans"], 4.0)
	apitest.Eq(t, "truncated", tr["truncated"], false)
	apitest.Eq(t, "trace_id", tr["trace_id"], apitest.TraceA)
	apitest.Eq(t, "span_count", tr["span_count"], 4.0)
	apitest.Eq(t, "start_time", tr["start_time"], "2026-01-15T10:00:00Z")
	apitest.Eq(t, "start_unix_nano", tr["start_unix_nano"], float64(apitest.T0.UnixNano()))
	apitest.Eq(t, "end_time", tr["end_time"], "2026-01-15T10:00:00.12Z")
	apitest.Eq(t, "duration_ms", tr["duration_ms"], 120.0)
	spans := apitest.Arr(t, "spans", tr["spans"])
	spanKeys := withTimes("trace_id", "span_id", "parent_span_id", "trace_state", "flags", "name", "kind", "service",
		"status", "resource", "scope", "attributes", "events", "links",
		"dropped_attributes_count", "dropped_events_count", "dropped_links_count")

	root := apitest.WantKeys(t, "root", spans[0], spanKeys...)
	apitest.Eq(t, "root span_id", root["span_id"], "b7ad6b7169203331")
	apitest.Eq(t, "root parent_span_id", root["parent_span_id"], "")
	apitest.Eq(t, "root name", root["name"], "GET /orders")
	apitest.Eq(t, "root kind", root["kind"], "server")
	apitest.Eq(t, "root service", root["service"], "frontend")
	apitest.Eq(t, "root flags", root["flags"], 1.0)
	apitest.Eq(t, "root status", root["status"], map[string]any{"code": "error", "message": "upstream failed"})
	apitest.Eq(t, "root scope", root["scope"], map[string]any{"name": "io.opentelemetry.http", "version": "1.0.0"})
	apitest.Eq(t, "root resource", root["resource"], []any{
		map[string]any{"key": "service.name", "type": "string", "value": "frontend"},
		map[string]any{"key": "service.version", "type": "string", "value": "1.2.0"},
		map[string]any{"key": "host.name", "type": "string", "value": "web-1"},
	})
	apitest.Eq(t, "root attributes", root["attributes"], []any{
		map[string]any{"key": "http.request.method", "type": "string", "value": "GET"},
		map[string]any{"key": "http.route", "type": "string", "value": "/orders"},
		map[string]any{"key": "http.response.status_code", "type": "int", "value": 500.0},
	})
	ev := apitest.WantKeys(t, "event", apitest.Arr(t, "events", root["events"])[0], "name", "time", "time_unix_nano", "attributes")
	apitest.Eq(t, "event name", ev["name"], "exception")
	apitest.Eq(t, "event time", ev["time"], "2026-01-15T10:00:00.11Z")
	apitest.Eq(t, "event time_unix_nano", ev["time_unix_nano"], float64(apitest.T0.Add(110*time.Millisecond).UnixNano()))
	apitest.Eq(t, "root links", root["links"], []any{})

	inv := spans[3].(map[string]any)
	apitest.Eq(t, "inventory parent", inv["parent_span_id"], "53995c3f42cd8ad8")
	apitest.Eq(t, "inventory trace_state", inv["trace_state"], "rojo=00f067aa0ba902b7")
	apitest.Eq(t, "inventory dropped attrs", inv["dropped_attributes_count"], 2.0)
	apitest.Eq(t, "inventory scope", inv["scope"], map[string]any{"name": "io.opentelemetry.http", "version": ""})
	attrs := map[string]any{}
	for _, a := range apitest.Arr(t, "attributes", inv["attributes"]) {
		am := apitest.WantKeys(t, "attr", a, "key", "type", "value")
		attrs[am["key"].(string)] = []any{am["type"], am["value"]}
	}
	apitest.Eq(t, "double", attrs["stock.ratio"], []any{"double", 0.25})
	apitest.Eq(t, "bool", attrs["cache.hit"], []any{"bool", false})
	apitest.Eq(t, "array", attrs["stock.skus"], []any{"array", []any{"a", "b"}})
	link := apitest.WantKeys(t, "link", apitest.Arr(t, "links", inv["links"])[0], "trace_id", "span_id", "trace_state", "attributes")
	apitest.Eq(t, "link trace_id", link["trace_id"], apitest.TraceB128)
	apitest.Eq(t, "link span_id", link["span_id"], "a2fb4a1d1a96d312")
	apitest.Eq(t, "link attributes", link["attributes"], []any{map[string]any{"key": "link.kind", "type": "string", "value": "batch"}})

	// 16-char ids are 64-bit ids, left-padded.
	st, m = apitest.GetJSON(t, srv, "/api/v1/traces/4bf92f3577b34da6")
	apitest.Eq(t, "64-bit lookup", []any{st, m["trace_id"]}, []any{200, apitest.TraceB128})
}

func TestTraceErrors(t *testing.T) {
	srv := newServer(t, Deps{})
	st, m := apitest.GetJSON(t, srv, "/api/v1/traces/1234567890abcdef1234567890abcdef")
	wantError(t, "missing", st, m, 404, "not found")
	st, m = apitest.GetJSON(t, srv, "/api/v1/traces/nothex")
	wantError(t, "bad id", st, m, 400, "nothex")
	st, m = apitest.GetJSON(t, srv, "/api/v1/traces/"+strings.Repeat("0", 32))
	wantError(t, "zero id", st, m, 400, "zeros")
	st, m = apitest.GetJSON(t, srv, "/api/v1/traces/"+apitest.TraceA+"?start=monday")
	wantError(t, "bad hint", st, m, 400, "start")
	st, m = apitest.GetJSON(t, srv, "/api/v1/nothing")
	wantError(t, "unknown endpoint", st, m, 404, "/api/v1/nothing")
}

func searchIDs(t *testing.T, srv *httptest.Server, q string) []string {
	t.Helper()
	st, m := apitest.GetJSON(t, srv, "/api/v1/search?"+q)
	if st != 200 {
		t.Fatalf("%s: %d %v", q, st, m)
	}
	body := apitest.WantKeys(t, "search", m, "traces", "count", "limit")
	ids := []string{}
	for _, x := range apitest.Arr(t, "traces", body["traces"]) {
		ids = append(ids, x.(map[string]any)["trace_id"].(string))
	}
	apitest.Eq(t, q+" count", body["count"], float64(len(ids)))
	return ids
}

func TestSearchFilters(t *testing.T) {
	srv := newServer(t, Deps{})
	esc := url.QueryEscape
	cases := []struct {
		q    string
		want []string
	}{
		{"", []string{apitest.TraceC, apitest.TraceB128, apitest.TraceA}},
		{"service=frontend", []string{apitest.TraceC, apitest.TraceA}},
		{"service=frontend&limit=1", []string{apitest.TraceC}},
		{"operation=" + esc("GET /stock"), []string{apitest.TraceA}},
		{"kind=consumer", []string{apitest.TraceB128}},
		{"kind=consumer,client", []string{apitest.TraceB128, apitest.TraceA}},
		{"status=error", []string{apitest.TraceA}},
		{"status=ok", []string{apitest.TraceB128}},
		{"service=frontend&minDuration=100ms", []string{apitest.TraceA}},
		{"service=frontend&minDuration=100", []string{apitest.TraceA}}, // bare number: ms
		{"service=frontend&maxDuration=5ms", []string{apitest.TraceC}},
		{"attr=" + esc("http.route=/orders"), []string{apitest.TraceA}},
		{"attr=" + esc("http.response.status_code>=500"), []string{apitest.TraceA}},
		{"attr=" + esc("http.response.status_code<300"), []string{apitest.TraceC}},
		{"attr=" + esc("http.response.status_code!=200") + "&service=frontend", []string{apitest.TraceA}},
		{"attr=" + esc("http.route=~/(orders|stock)"), []string{apitest.TraceA}},
		{"attr=" + esc("resource.k8s.pod.name=inventory-7d9f"), []string{apitest.TraceA}},
		{"attr=" + esc("resource.http.route=/orders"), []string{}}, // span attribute, not resource
		{"attr=" + esc("span.host.name=web-1"), []string{}},        // resource attribute, not span
		{"attr=" + esc("host.name=web-1"), []string{apitest.TraceC, apitest.TraceA}},
		{"attr=messaging.system", []string{apitest.TraceB128}}, // presence
		{"attr=" + esc(`http.response.status_code="500"`), []string{apitest.TraceA}},
		// Two filters must hold on the same span.
		{"attr=" + esc("http.route=/orders") + "&attr=" + esc("http.response.status_code>=503"), []string{}},
		{"start=2026-01-15T10:00:30Z", []string{apitest.TraceC, apitest.TraceB128}},
		{"start=" + esc("2026-01-15T10:00:30Z") + "&end=" + esc("2026-01-15T10:01:30Z"), []string{apitest.TraceB128}},
		{"end=1768471230000", []string{apitest.TraceA}}, // unix ms
		{"start=3m30s", []string{apitest.TraceC}},       // 3.5 minutes ago (now 10:05)
		{"minTraceDuration=200ms", []string{apitest.TraceB128}},
	}
	for _, c := range cases {
		apitest.Eq(t, c.q, searchIDs(t, srv, c.q), c.want)
	}
}

func TestSearchSummaryShape(t *testing.T) {
	srv := newServer(t, Deps{})
	st, m := apitest.GetJSON(t, srv, "/api/v1/search?service=frontend&status=error")
	if st != 200 {
		t.Fatal(st)
	}
	apitest.Eq(t, "limit", m["limit"], 20.0)
	tr := apitest.WantKeys(t, "summary", apitest.Arr(t, "traces", m["traces"])[0],
		withTimes("trace_id", "root_service", "root_operation", "span_count", "error_count", "services")...)
	apitest.Eq(t, "trace_id", tr["trace_id"], apitest.TraceA)
	apitest.Eq(t, "root_service", tr["root_service"], "frontend")
	apitest.Eq(t, "root_operation", tr["root_operation"], "GET /orders")
	apitest.Eq(t, "start_time", tr["start_time"], "2026-01-15T10:00:00Z")
	apitest.Eq(t, "duration_ms", tr["duration_ms"], 120.0)
	apitest.Eq(t, "span_count", tr["span_count"], 4.0)
	apitest.Eq(t, "error_count", tr["error_count"], 3.0)
	apitest.Eq(t, "services", tr["services"], []any{
		map[string]any{"name": "frontend", "span_count": 3.0, "error_count": 2.0},
		map[string]any{"name": "inventory", "span_count": 1.0, "error_count": 1.0},
	})
}

func TestSearchBadParams(t *testing.T) {
	srv := newServer(t, Deps{})
	for q, mention := range map[string]string{
		"kind=sideways":                                       "kind",
		"status=broken":                                       "status",
		"minDuration=soon":                                    "minDuration",
		"maxDuration=-5":                                      "maxDuration",
		"minDuration=2s&maxDuration=1s":                       "maxDuration",
		"attr=" + url.QueryEscape("=x"):                       "attribute name",
		"attr=" + url.QueryEscape("a=~("):                     "regular expression",
		"attr=" + url.QueryEscape("a>"):                       "missing value",
		"attr=" + url.QueryEscape("a!x"):                      "operator",
		"start=yesterday":                                     "start",
		"start=2026-01-15T11:00:00Z&end=2026-01-15T10:00:00Z": "before",
		"limit=0":    "limit",
		"limit=many": "limit",
		// Out of what int64 nanoseconds hold: rejected, not wrapped.
		"start=9223372036854775807": "start",
		"end=2300-01-01T00:00:00Z":  "end",
		"minDuration=1e300":         "minDuration",
		"maxTraceDuration=NaN":      "maxTraceDuration",
	} {
		st, m := apitest.GetJSON(t, srv, "/api/v1/search?"+q)
		wantError(t, q, st, m, 400, mention)
	}
}

func TestHugeLimitsAreCapped(t *testing.T) {
	srv := newServer(t, Deps{MaxSearchLimit: 2})
	for _, q := range []string{"limit=99999999999999999999", "limit=1000000"} {
		st, m := apitest.GetJSON(t, srv, "/api/v1/search?"+q)
		if st != 200 {
			t.Fatalf("%s: status %d (%v)", q, st, m)
		}
		apitest.Eq(t, q+" limit", m["limit"], 2.0)
		apitest.Eq(t, q+" count", m["count"], 2.0)
	}
	// A duration ago reaching before 1970 starts at the epoch.
	st, m := apitest.GetJSON(t, srv, "/api/v1/search?start=2000000h")
	if st != 200 {
		t.Fatalf("start=2000000h: status %d (%v)", st, m)
	}
	apitest.Eq(t, "start=2000000h count", m["count"], 2.0)
}

func TestLists(t *testing.T) {
	srv := newServer(t, Deps{})
	_, m := apitest.GetJSON(t, srv, "/api/v1/services")
	apitest.Eq(t, "services", apitest.WantKeys(t, "services", m, "services")["services"], []any{"frontend", "inventory", "worker"})

	_, m = apitest.GetJSON(t, srv, "/api/v1/services/worker/operations")
	apitest.WantKeys(t, "operations", m, "service", "operations")
	apitest.Eq(t, "operations", m["operations"], []any{
		map[string]any{"name": "ack", "kind": "internal"},
		map[string]any{"name": "process order", "kind": "consumer"},
	})

	_, m = apitest.GetJSON(t, srv, "/api/v1/attributes?scope=resource")
	apitest.WantKeys(t, "attributes", m, "scope", "attributes")
	apitest.Eq(t, "resource attributes", m["attributes"], []any{"host.name", "k8s.pod.name", "service.name", "service.version"})
	_, m = apitest.GetJSON(t, srv, "/api/v1/attributes?scope=span")
	names := apitest.Arr(t, "span attributes", m["attributes"])
	if len(names) == 0 || names[0] != "cache.hit" {
		t.Errorf("span attributes %v", names)
	}
	for _, n := range names {
		if n == "service.name" {
			t.Error("span scope lists a resource attribute")
		}
	}

	_, m = apitest.GetJSON(t, srv, "/api/v1/attributes/http.response.status_code/values")
	apitest.WantKeys(t, "values", m, "key", "scope", "values")
	apitest.Eq(t, "status values", m["values"], []any{
		map[string]any{"type": "int", "value": 200.0},
		map[string]any{"type": "int", "value": 500.0},
		map[string]any{"type": "int", "value": 503.0},
	})
	_, m = apitest.GetJSON(t, srv, "/api/v1/attributes/resource.service.name/values?limit=2")
	apitest.Eq(t, "resource-prefixed values", []any{m["scope"], m["key"], m["values"]}, []any{"resource", "service.name", []any{
		map[string]any{"type": "string", "value": "frontend"},
		map[string]any{"type": "string", "value": "inventory"},
	}})

	st, m := apitest.GetJSON(t, srv, "/api/v1/attributes?scope=galaxy")
	wantError(t, "bad scope", st, m, 400, "scope")
	st, m = apitest.GetJSON(t, srv, "/api/v1/attributes/x/values?limit=-1")
	wantError(t, "bad limit", st, m, 400, "limit")
}

type storedFindings map[model.TraceID][]analyze.Finding

func (s storedFindings) TraceFindings(_ context.Context, id model.TraceID) ([]analyze.Finding, bool, error) {
	f, ok := s[id]
	return f, ok, nil
}

func TestAnalysis(t *testing.T) {
	// Without a wired analyzer: the critical path of the trace.
	srv := newServer(t, Deps{})
	st, m := apitest.GetJSON(t, srv, "/api/v1/traces/"+apitest.TraceA+"/analysis")
	if st != 200 {
		t.Fatal(st, m)
	}
	res := apitest.WantKeys(t, "analysis", m, "trace_id", "root_service", "root_operation", "duration_ms", "span_count", "findings",
		"critical_path", "why", "source", "rejudged", "total_findings", "total_critical_path", "truncated")
	apitest.Eq(t, "trace_id", res["trace_id"], apitest.TraceA)
	apitest.Eq(t, "root_operation", res["root_operation"], "GET /orders")
	apitest.Eq(t, "duration_ms", res["duration_ms"], 120.0)
	apitest.Eq(t, "findings", res["findings"], []any{})
	apitest.Eq(t, "source", res["source"], "computed")
	apitest.Eq(t, "rejudged", res["rejudged"], []any{})
	path := apitest.Arr(t, "critical_path", res["critical_path"])
	if len(path) == 0 {
		t.Fatal("empty critical path")
	}
	first := apitest.WantKeys(t, "step", path[0], "span_id", "service", "operation", "self_ms", "start_ms", "end_ms", "depth")
	apitest.Eq(t, "path starts at the root", first["span_id"], "b7ad6b7169203331")

	// Stored findings are the record: today's analyzer disagrees (it would
	// call the error origin a warning and add a slow query), but the answer
	// is what was stored, the why chain is built from it, and the
	// disagreement is reported beside it. The cross-trace finding is not
	// something the per-trace analyzer could produce, so it is not rejudged.
	id, _ := model.ParseTraceID(apitest.TraceA)
	stored := analyze.Finding{Kind: "error_origin", Severity: analyze.SeverityCritical, Title: "inventory failed", SpanIDs: []string{"8f3c2a1b0e9d7c6a"},
		ImpactMS: 60, Fix: "handle the empty stock", Evidence: map[string]any{"origin": map[string]any{"service": "inventory", "operation": "GET /stock"}, "root_failed": true}}
	cross := analyze.Finding{Kind: "error_rate_spike", Severity: analyze.SeverityWarning, Title: "errors up", SpanIDs: []string{}}
	today := stored
	today.Severity, today.Title = analyze.SeverityWarning, "inventory failed (as usual)"
	slow := analyze.Finding{Kind: "slow_query", Severity: analyze.SeverityInfo, Title: "query took 40 ms", SpanIDs: []string{"a1a2a3a4a5a6a7a8"}}
	var gotSpans int
	analyzer := func(spans []model.Span) analyze.Result {
		gotSpans = len(spans)
		r := CriticalPathOnly(spans)
		r.Findings = []analyze.Finding{today, slow}
		r.Why = []string{"today's why"}
		return r
	}
	srv = newServer(t, Deps{Analyzer: analyzer, Findings: storedFindings{id: {cross, stored}}})
	_, m = apitest.GetJSON(t, srv, "/api/v1/traces/"+apitest.TraceA+"/analysis")
	apitest.Eq(t, "analyzer saw the whole trace", gotSpans, 4)
	apitest.Eq(t, "source", m["source"], "stored")
	f := apitest.Arr(t, "findings", m["findings"])
	if len(f) != 2 {
		t.Fatalf("findings %v", f)
	}
	f0 := f[0].(map[string]any)
	apitest.Eq(t, "most severe stored finding first", []any{f0["kind"], f0["severity"], f0["title"]}, []any{"error_origin", "critical", "inventory failed"})
	apitest.Eq(t, "then the cross-trace one", f[1].(map[string]any)["kind"], "error_rate_spike")
	why := apitest.Arr(t, "why", m["why"])
	// The chain ends at the culprit the stored finding points to.
	if len(why) < 4 || why[len(why)-3] != "The error started in inventory GET /stock." || why[len(why)-2] != "Fix: handle the empty stock" ||
		!strings.HasPrefix(why[len(why)-1].(string), "Culprit: inventory GET /stock") {
		t.Errorf("why chain not built from the stored findings: %q", why)
	}
	apitest.Eq(t, "rejudged", m["rejudged"], []any{
		map[string]any{"kind": "error_origin", "span_ids": []any{"8f3c2a1b0e9d7c6a"}, "stored_severity": "critical", "now_severity": "warning",
			"now_title": "inventory failed (as usual)"},
		map[string]any{"kind": "slow_query", "span_ids": []any{"a1a2a3a4a5a6a7a8"}, "stored_severity": "none", "now_severity": "info",
			"now_title": "query took 40 ms"},
	})
	if note, _ := m["note"].(string); !strings.Contains(note, "2 finding(s)") {
		t.Errorf("note %q", m["note"])
	}

	// Nothing stored for the trace: computed now, and said so.
	srv = newServer(t, Deps{Analyzer: analyzer, Findings: storedFindings{}})
	_, m = apitest.GetJSON(t, srv, "/api/v1/traces/"+apitest.TraceA+"/analysis")
	apitest.Eq(t, "source", m["source"], "computed")
	apitest.Eq(t, "computed findings", len(apitest.Arr(t, "findings", m["findings"])), 2)
	apitest.Eq(t, "why", m["why"], []any{"today's why"})
	apitest.Eq(t, "no rejudging without a record", m["rejudged"], []any{})

	st, m = apitest.GetJSON(t, srv, "/api/v1/traces/1234567890abcdef1234567890abcdef/analysis")
	wantError(t, "missing", st, m, 404, "not found")
}

type failingFindings struct{}

func (failingFindings) TraceFindings(context.Context, model.TraceID) ([]analyze.Finding, bool, error) {
	return nil, false, errors.New("findings index offline")
}

func TestExtraRoutesAndInternalErrors(t *testing.T) {
	srv := newServer(t, Deps{
		Findings: failingFindings{},
		Routes: []func(*http.ServeMux){func(mux *http.ServeMux) {
			mux.HandleFunc("GET /api/v1/ping", func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 200, map[string]string{"pong": "yes"})
			})
		}},
	})
	_, m := apitest.GetJSON(t, srv, "/api/v1/ping")
	apitest.Eq(t, "extra route", m["pong"], "yes")
	st, m := apitest.GetJSON(t, srv, "/api/v1/traces/"+apitest.TraceA+"/analysis")
	wantError(t, "findings failure", st, m, 500, "findings index offline")
}
