package v1

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store/memstore"
)

// Fixture (testdata/traces.otlp.json, shared with the Jaeger API tests):
//
//	10:00:00 trace A 0af76519… frontend GET /orders (ERROR, 120 ms, 500) → SELECT orders,
//	         GET /stock (client, ERROR) → inventory GET /stock (503, ERROR, link to B)
//	10:01:00 trace B 00…4bf92f35… worker "process order" (consumer, OK) + orphan "ack"
//	10:02:00 trace C 5b8efff7… frontend GET /health (2 ms, 200)
const (
	traceA = "0af7651916cd43dd8448eb211c80319c"
	traceB = "00000000000000004bf92f3577b34da6"
	traceC = "5b8efff798038103d269b633813fc60c"
)

var (
	t0      = time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)
	testNow = time.Date(2026, 1, 15, 10, 5, 0, 0, time.UTC)
)

func loadFixture(t testing.TB) []model.Span {
	t.Helper()
	raw, err := os.ReadFile("testdata/traces.otlp.json")
	if err != nil {
		t.Fatal(err)
	}
	td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(raw)
	if err != nil {
		t.Fatal(err)
	}
	return otlpconv.FromTraces(td)
}

func newServer(t testing.TB, d Deps) *httptest.Server {
	t.Helper()
	st := memstore.New()
	if err := st.Write(context.Background(), loadFixture(t)); err != nil {
		t.Fatal(err)
	}
	d.Store = st
	if d.Now == nil {
		d.Now = func() time.Time { return testNow }
	}
	srv := httptest.NewServer(NewHandler(d))
	t.Cleanup(srv.Close)
	return srv
}

func get(t testing.TB, srv *httptest.Server, path string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("GET %s: %d, not a JSON object: %s", path, resp.StatusCode, body)
	}
	return resp.StatusCode, m
}

func wantKeys(t testing.TB, what string, v any, keys ...string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: want object, got %T", what, v)
	}
	got := make([]string, 0, len(m))
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	sort.Strings(keys)
	if !reflect.DeepEqual(got, keys) {
		t.Errorf("%s: fields %v, want %v", what, got, keys)
	}
	return m
}

func eq(t testing.TB, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

func arr(t testing.TB, what string, v any) []any {
	t.Helper()
	a, ok := v.([]any)
	if !ok {
		t.Fatalf("%s: want array, got %T (%v)", what, v, v)
	}
	return a
}

func wantError(t testing.TB, what string, st int, m map[string]any, status int, mention string) {
	t.Helper()
	if st != status {
		t.Fatalf("%s: status %d, want %d (%v)", what, st, status, m)
	}
	e := wantKeys(t, what, m, "error")
	msg, _ := e["error"].(string)
	if !strings.Contains(msg, mention) {
		t.Errorf("%s: error %q does not mention %q", what, msg, mention)
	}
}

var timeKeys = []string{"start_time", "start_unix_nano", "end_time", "end_unix_nano", "duration_ms"}

func withTimes(keys ...string) []string { return append(keys, timeKeys...) }

func TestTraceFieldByField(t *testing.T) {
	srv := newServer(t, Deps{})
	st, m := get(t, srv, "/api/v1/traces/"+traceA)
	if st != 200 {
		t.Fatal(st, m)
	}
	tr := wantKeys(t, "trace", m, withTimes("trace_id", "span_count", "spans")...)
	eq(t, "trace_id", tr["trace_id"], traceA)
	eq(t, "span_count", tr["span_count"], 4.0)
	eq(t, "start_time", tr["start_time"], "2026-01-15T10:00:00Z")
	eq(t, "start_unix_nano", tr["start_unix_nano"], float64(t0.UnixNano()))
	eq(t, "end_time", tr["end_time"], "2026-01-15T10:00:00.12Z")
	eq(t, "duration_ms", tr["duration_ms"], 120.0)
	spans := arr(t, "spans", tr["spans"])
	spanKeys := withTimes("trace_id", "span_id", "parent_span_id", "trace_state", "flags", "name", "kind", "service",
		"status", "resource", "scope", "attributes", "events", "links",
		"dropped_attributes_count", "dropped_events_count", "dropped_links_count")

	root := wantKeys(t, "root", spans[0], spanKeys...)
	eq(t, "root span_id", root["span_id"], "b7ad6b7169203331")
	eq(t, "root parent_span_id", root["parent_span_id"], "")
	eq(t, "root name", root["name"], "GET /orders")
	eq(t, "root kind", root["kind"], "server")
	eq(t, "root service", root["service"], "frontend")
	eq(t, "root flags", root["flags"], 1.0)
	eq(t, "root status", root["status"], map[string]any{"code": "error", "message": "upstream failed"})
	eq(t, "root scope", root["scope"], map[string]any{"name": "io.opentelemetry.http", "version": "1.0.0"})
	eq(t, "root resource", root["resource"], []any{
		map[string]any{"key": "service.name", "type": "string", "value": "frontend"},
		map[string]any{"key": "service.version", "type": "string", "value": "1.2.0"},
		map[string]any{"key": "host.name", "type": "string", "value": "web-1"},
	})
	eq(t, "root attributes", root["attributes"], []any{
		map[string]any{"key": "http.request.method", "type": "string", "value": "GET"},
		map[string]any{"key": "http.route", "type": "string", "value": "/orders"},
		map[string]any{"key": "http.response.status_code", "type": "int", "value": 500.0},
	})
	ev := wantKeys(t, "event", arr(t, "events", root["events"])[0], "name", "time", "time_unix_nano", "attributes")
	eq(t, "event name", ev["name"], "exception")
	eq(t, "event time", ev["time"], "2026-01-15T10:00:00.11Z")
	eq(t, "event time_unix_nano", ev["time_unix_nano"], float64(t0.Add(110*time.Millisecond).UnixNano()))
	eq(t, "root links", root["links"], []any{})

	inv := spans[3].(map[string]any)
	eq(t, "inventory parent", inv["parent_span_id"], "53995c3f42cd8ad8")
	eq(t, "inventory trace_state", inv["trace_state"], "rojo=00f067aa0ba902b7")
	eq(t, "inventory dropped attrs", inv["dropped_attributes_count"], 2.0)
	eq(t, "inventory scope", inv["scope"], map[string]any{"name": "io.opentelemetry.http", "version": ""})
	attrs := map[string]any{}
	for _, a := range arr(t, "attributes", inv["attributes"]) {
		am := wantKeys(t, "attr", a, "key", "type", "value")
		attrs[am["key"].(string)] = []any{am["type"], am["value"]}
	}
	eq(t, "double", attrs["stock.ratio"], []any{"double", 0.25})
	eq(t, "bool", attrs["cache.hit"], []any{"bool", false})
	eq(t, "array", attrs["stock.skus"], []any{"array", []any{"a", "b"}})
	link := wantKeys(t, "link", arr(t, "links", inv["links"])[0], "trace_id", "span_id", "trace_state", "attributes")
	eq(t, "link trace_id", link["trace_id"], traceB)
	eq(t, "link span_id", link["span_id"], "a2fb4a1d1a96d312")
	eq(t, "link attributes", link["attributes"], []any{map[string]any{"key": "link.kind", "type": "string", "value": "batch"}})

	// 16-char ids are 64-bit ids, left-padded.
	st, m = get(t, srv, "/api/v1/traces/4bf92f3577b34da6")
	eq(t, "64-bit lookup", []any{st, m["trace_id"]}, []any{200, traceB})
}

func TestTraceErrors(t *testing.T) {
	srv := newServer(t, Deps{})
	st, m := get(t, srv, "/api/v1/traces/1234567890abcdef1234567890abcdef")
	wantError(t, "missing", st, m, 404, "not found")
	st, m = get(t, srv, "/api/v1/traces/nothex")
	wantError(t, "bad id", st, m, 400, "nothex")
	st, m = get(t, srv, "/api/v1/traces/"+strings.Repeat("0", 32))
	wantError(t, "zero id", st, m, 400, "zeros")
	st, m = get(t, srv, "/api/v1/traces/"+traceA+"?start=monday")
	wantError(t, "bad hint", st, m, 400, "start")
	st, m = get(t, srv, "/api/v1/nothing")
	wantError(t, "unknown endpoint", st, m, 404, "/api/v1/nothing")
}

func searchIDs(t *testing.T, srv *httptest.Server, q string) []string {
	t.Helper()
	st, m := get(t, srv, "/api/v1/search?"+q)
	if st != 200 {
		t.Fatalf("%s: %d %v", q, st, m)
	}
	body := wantKeys(t, "search", m, "traces", "count", "limit")
	ids := []string{}
	for _, x := range arr(t, "traces", body["traces"]) {
		ids = append(ids, x.(map[string]any)["trace_id"].(string))
	}
	eq(t, q+" count", body["count"], float64(len(ids)))
	return ids
}

func TestSearchFilters(t *testing.T) {
	srv := newServer(t, Deps{})
	esc := url.QueryEscape
	cases := []struct {
		q    string
		want []string
	}{
		{"", []string{traceC, traceB, traceA}},
		{"service=frontend", []string{traceC, traceA}},
		{"service=frontend&limit=1", []string{traceC}},
		{"operation=" + esc("GET /stock"), []string{traceA}},
		{"kind=consumer", []string{traceB}},
		{"kind=consumer,client", []string{traceB, traceA}},
		{"status=error", []string{traceA}},
		{"status=ok", []string{traceB}},
		{"service=frontend&minDuration=100ms", []string{traceA}},
		{"service=frontend&minDuration=100", []string{traceA}}, // bare number: ms
		{"service=frontend&maxDuration=5ms", []string{traceC}},
		{"attr=" + esc("http.route=/orders"), []string{traceA}},
		{"attr=" + esc("http.response.status_code>=500"), []string{traceA}},
		{"attr=" + esc("http.response.status_code<300"), []string{traceC}},
		{"attr=" + esc("http.response.status_code!=200") + "&service=frontend", []string{traceA}},
		{"attr=" + esc("http.route=~/(orders|stock)"), []string{traceA}},
		{"attr=" + esc("resource.k8s.pod.name=inventory-7d9f"), []string{traceA}},
		{"attr=" + esc("resource.http.route=/orders"), []string{}}, // span attribute, not resource
		{"attr=" + esc("span.host.name=web-1"), []string{}},        // resource attribute, not span
		{"attr=" + esc("host.name=web-1"), []string{traceC, traceA}},
		{"attr=messaging.system", []string{traceB}}, // presence
		{"attr=" + esc(`http.response.status_code="500"`), []string{traceA}},
		// Two filters must hold on the same span.
		{"attr=" + esc("http.route=/orders") + "&attr=" + esc("http.response.status_code>=503"), []string{}},
		{"start=2026-01-15T10:00:30Z", []string{traceC, traceB}},
		{"start=" + esc("2026-01-15T10:00:30Z") + "&end=" + esc("2026-01-15T10:01:30Z"), []string{traceB}},
		{"end=1768471230000", []string{traceA}}, // unix ms
		{"start=3m30s", []string{traceC}},       // 3.5 minutes ago (now 10:05)
		{"minTraceDuration=200ms", []string{traceB}},
	}
	for _, c := range cases {
		eq(t, c.q, searchIDs(t, srv, c.q), c.want)
	}
}

func TestSearchSummaryShape(t *testing.T) {
	srv := newServer(t, Deps{})
	st, m := get(t, srv, "/api/v1/search?service=frontend&status=error")
	if st != 200 {
		t.Fatal(st)
	}
	eq(t, "limit", m["limit"], 20.0)
	tr := wantKeys(t, "summary", arr(t, "traces", m["traces"])[0],
		withTimes("trace_id", "root_service", "root_operation", "span_count", "error_count", "services")...)
	eq(t, "trace_id", tr["trace_id"], traceA)
	eq(t, "root_service", tr["root_service"], "frontend")
	eq(t, "root_operation", tr["root_operation"], "GET /orders")
	eq(t, "start_time", tr["start_time"], "2026-01-15T10:00:00Z")
	eq(t, "duration_ms", tr["duration_ms"], 120.0)
	eq(t, "span_count", tr["span_count"], 4.0)
	eq(t, "error_count", tr["error_count"], 3.0)
	eq(t, "services", tr["services"], []any{
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
	} {
		st, m := get(t, srv, "/api/v1/search?"+q)
		wantError(t, q, st, m, 400, mention)
	}
}

func TestLists(t *testing.T) {
	srv := newServer(t, Deps{})
	_, m := get(t, srv, "/api/v1/services")
	eq(t, "services", wantKeys(t, "services", m, "services")["services"], []any{"frontend", "inventory", "worker"})

	_, m = get(t, srv, "/api/v1/services/worker/operations")
	wantKeys(t, "operations", m, "service", "operations")
	eq(t, "operations", m["operations"], []any{
		map[string]any{"name": "ack", "kind": "internal"},
		map[string]any{"name": "process order", "kind": "consumer"},
	})

	_, m = get(t, srv, "/api/v1/attributes?scope=resource")
	wantKeys(t, "attributes", m, "scope", "attributes")
	eq(t, "resource attributes", m["attributes"], []any{"host.name", "k8s.pod.name", "service.name", "service.version"})
	_, m = get(t, srv, "/api/v1/attributes?scope=span")
	names := arr(t, "span attributes", m["attributes"])
	if len(names) == 0 || names[0] != "cache.hit" {
		t.Errorf("span attributes %v", names)
	}
	for _, n := range names {
		if n == "service.name" {
			t.Error("span scope lists a resource attribute")
		}
	}

	_, m = get(t, srv, "/api/v1/attributes/http.response.status_code/values")
	wantKeys(t, "values", m, "key", "scope", "values")
	eq(t, "status values", m["values"], []any{
		map[string]any{"type": "int", "value": 200.0},
		map[string]any{"type": "int", "value": 500.0},
		map[string]any{"type": "int", "value": 503.0},
	})
	_, m = get(t, srv, "/api/v1/attributes/resource.service.name/values?limit=2")
	eq(t, "resource-prefixed values", []any{m["scope"], m["key"], m["values"]}, []any{"resource", "service.name", []any{
		map[string]any{"type": "string", "value": "frontend"},
		map[string]any{"type": "string", "value": "inventory"},
	}})

	st, m := get(t, srv, "/api/v1/attributes?scope=galaxy")
	wantError(t, "bad scope", st, m, 400, "scope")
	st, m = get(t, srv, "/api/v1/attributes/x/values?limit=-1")
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
	st, m := get(t, srv, "/api/v1/traces/"+traceA+"/analysis")
	if st != 200 {
		t.Fatal(st, m)
	}
	res := wantKeys(t, "analysis", m, "trace_id", "root_service", "root_operation", "duration_ms", "span_count", "findings", "critical_path", "why")
	eq(t, "trace_id", res["trace_id"], traceA)
	eq(t, "root_operation", res["root_operation"], "GET /orders")
	eq(t, "duration_ms", res["duration_ms"], 120.0)
	eq(t, "findings", res["findings"], []any{})
	path := arr(t, "critical_path", res["critical_path"])
	if len(path) == 0 {
		t.Fatal("empty critical path")
	}
	first := wantKeys(t, "step", path[0], "span_id", "service", "operation", "self_ms", "start_ms", "end_ms", "depth")
	eq(t, "path starts at the root", first["span_id"], "b7ad6b7169203331")

	// With an analyzer and stored findings: both reach the response, the
	// stored duplicate only once.
	id, _ := model.ParseTraceID(traceA)
	mine := analyze.Finding{Kind: "error_origin", Severity: analyze.SeverityCritical, Title: "inventory failed", SpanIDs: []string{"8f3c2a1b0e9d7c6a"}}
	cross := analyze.Finding{Kind: "error_rate_spike", Severity: analyze.SeverityWarning, Title: "errors up", SpanIDs: []string{}}
	var gotSpans int
	srv = newServer(t, Deps{
		Analyzer: func(spans []model.Span) analyze.Result {
			gotSpans = len(spans)
			r := CriticalPathOnly(spans)
			r.Findings = []analyze.Finding{mine}
			r.Why = []string{"GET /orders took 120 ms"}
			return r
		},
		Findings: storedFindings{id: {mine, cross}},
	})
	_, m = get(t, srv, "/api/v1/traces/"+traceA+"/analysis")
	eq(t, "analyzer saw the whole trace", gotSpans, 4)
	f := arr(t, "findings", m["findings"])
	if len(f) != 2 {
		t.Fatalf("findings %v", f)
	}
	eq(t, "finding kinds", []any{f[0].(map[string]any)["kind"], f[1].(map[string]any)["kind"]}, []any{"error_origin", "error_rate_spike"})
	eq(t, "why", m["why"], []any{"GET /orders took 120 ms"})

	st, m = get(t, srv, "/api/v1/traces/1234567890abcdef1234567890abcdef/analysis")
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
	_, m := get(t, srv, "/api/v1/ping")
	eq(t, "extra route", m["pong"], "yes")
	st, m := get(t, srv, "/api/v1/traces/"+traceA+"/analysis")
	wantError(t, "findings failure", st, m, 500, "findings index offline")
}
