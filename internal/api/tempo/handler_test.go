package tempo

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

func TestEchoAndBuildInfo(t *testing.T) {
	h := newTestHandler(t, Options{})
	rec := do(t, h, "/api/echo")
	if rec.Code != 200 || body(rec) != "echo" {
		t.Fatalf("echo: %d %q", rec.Code, body(rec))
	}
	bi := getJSON(t, h, "/api/status/buildinfo")
	for _, k := range []string{"version", "revision", "branch", "buildUser", "buildDate", "goVersion"} {
		if _, ok := bi[k].(string); !ok {
			t.Errorf("buildinfo.%s missing or not a string: %v", k, bi[k])
		}
	}
	if bi["version"] != "2.9.0" {
		t.Errorf("version %v", bi["version"])
	}
}

func TestTraceByIDJSON(t *testing.T) {
	h := newTestHandler(t, Options{})
	v1 := getJSON(t, h, "/api/traces/"+traceA)
	if _, ok := v1["resourceSpans"]; ok {
		t.Fatal("v1 JSON uses Tempo's legacy batches key")
	}
	batches := path(t, v1, "batches").([]any)
	v2 := getJSON(t, h, "/api/v2/traces/"+traceA+"?start=1699999000&end=1700001000")
	if !reflect.DeepEqual(path(t, v2, "trace", "resourceSpans"), batches) {
		t.Fatal("v1 batches and v2 trace.resourceSpans differ")
	}
	if _, ok := v2["status"]; ok {
		t.Error("status COMPLETE is the proto3 default and is omitted")
	}
	if len(batches) != 2 {
		t.Fatalf("want 2 resources, got %d", len(batches))
	}
	// Find the cart resource and its POST /cart span.
	var cart map[string]any
	for _, b := range batches {
		attrs := path(t, b, "resource", "attributes").([]any)
		for _, a := range attrs {
			if path(t, a, "key") == "service.name" && path(t, a, "value", "stringValue") == "cart" {
				cart = b.(map[string]any)
			}
		}
	}
	if cart == nil {
		t.Fatal("cart resource missing")
	}
	if got := path(t, cart, "scopeSpans", 0, "scope", "name"); got != "otel-sql" {
		t.Errorf("scope name %v", got)
	}
	span := path(t, cart, "scopeSpans", 0, "spans", 0).(map[string]any)
	wantTID, _ := model.ParseTraceID(traceA)
	checks := map[string]any{
		"traceId":           base64.StdEncoding.EncodeToString(wantTID[:]),
		"spanId":            b64Span("00f067aa0ba902b9"),
		"parentSpanId":      b64Span("00f067aa0ba902b8"),
		"name":              "POST /cart",
		"kind":              "SPAN_KIND_SERVER",
		"startTimeUnixNano": "1700000000020000000",
		"endTimeUnixNano":   "1700000000290000000",
	}
	for k, want := range checks {
		if span[k] != want {
			t.Errorf("span.%s = %#v, want %#v", k, span[k], want)
		}
	}
	if got := path(t, span, "status"); !reflect.DeepEqual(got, map[string]any{"code": "STATUS_CODE_ERROR", "message": "boom"}) {
		t.Errorf("status %v", got)
	}
	if got := path(t, span, "attributes", 0); !reflect.DeepEqual(got, map[string]any{"key": "http.status_code", "value": map[string]any{"intValue": "500"}}) {
		t.Errorf("int attribute %v (64-bit ints are strings)", got)
	}
	// Root span: no parentSpanId; event and typed values elsewhere.
	sel := path(t, cart, "scopeSpans", 0, "spans", 1).(map[string]any)
	if ev := path(t, sel, "events", 0).(map[string]any); ev["timeUnixNano"] != "1700000000035000000" || ev["name"] != "retry" {
		t.Errorf("event %v", ev)
	}
	pay := getJSON(t, h, "/api/traces/"+traceB)
	ps := path(t, pay, "batches", 0, "scopeSpans", 0, "spans", 0).(map[string]any)
	if _, ok := ps["parentSpanId"]; ok {
		t.Error("root span has a parentSpanId")
	}
	attrs := ps["attributes"].([]any)
	if got := path(t, attrs[0], "value"); !reflect.DeepEqual(got, map[string]any{"doubleValue": 12.5}) {
		t.Errorf("double %v", got)
	}
	if got := path(t, attrs[1], "value"); !reflect.DeepEqual(got, map[string]any{"boolValue": true}) {
		t.Errorf("bool %v", got)
	}
	// (The model keeps arrays as JSON text, so numbers come back as doubles.)
	if got := path(t, attrs[2], "value", "arrayValue", "values", 0); !reflect.DeepEqual(got, map[string]any{"stringValue": "a"}) {
		t.Errorf("array %v", got)
	}
	if got := path(t, ps, "status", "code"); got != "STATUS_CODE_OK" {
		t.Errorf("status ok %v", got)
	}
	if got := path(t, ps, "links", 0, "spanId"); got != b64Span("00f067aa0ba902b7") {
		t.Errorf("link %v", got)
	}
}

func b64Span(h string) string {
	id, _ := model.ParseSpanID(h)
	return base64.StdEncoding.EncodeToString(id[:])
}

func TestTraceByIDProtobuf(t *testing.T) {
	h := newTestHandler(t, Options{})
	var u ptrace.ProtoUnmarshaler

	rec := do(t, h, "/api/traces/"+traceA, "Accept", "application/protobuf")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/protobuf" {
		t.Fatalf("v1 proto: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	td, err := u.UnmarshalTraces(rec.Body.Bytes())
	if err != nil || td.SpanCount() != 4 {
		t.Fatalf("v1 proto decodes as tempopb.Trace/TracesData: %v, %d spans", err, td.SpanCount())
	}

	rec = do(t, h, "/api/v2/traces/"+traceA, "Accept", "application/protobuf")
	b := rec.Body.Bytes()
	// TraceByIDResponse: field 1 (trace), length-delimited.
	num, typ, n := protowire.ConsumeTag(b)
	if num != 1 || typ != protowire.BytesType || n <= 0 {
		t.Fatalf("v2 proto: first field %d/%d", num, typ)
	}
	inner, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		t.Fatalf("v2 proto: bad wrapper (%d+%d of %d)", n, m, len(b))
	}
	td, err = u.UnmarshalTraces(inner)
	if err != nil || td.SpanCount() != 4 {
		t.Fatalf("v2 inner trace: %v, %d spans", err, td.SpanCount())
	}
	if got := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).TraceID().String(); got != traceA {
		t.Errorf("trace id %s", got)
	}
}

func TestTraceByIDErrors(t *testing.T) {
	h := newTestHandler(t, Options{})
	for _, c := range []struct {
		target string
		code   int
	}{
		{"/api/traces/ffffffffffffffffffffffffffffffff", 404},
		{"/api/v2/traces/ffffffffffffffffffffffffffffffff", 404},
		{"/api/v2/traces/ffffffffffffffffffffffffffffffff?start=1&end=2", 404},
		{"/api/traces/not-hex", 400},
		{"/api/v2/traces/" + strings.Repeat("a", 40), 400},
		{"/api/v2/traces/" + traceA + "?start=abc", 400},
		{"/api/v2/traces/" + traceA + "?start=20&end=10", 400},
	} {
		rec := do(t, h, c.target, "Accept", "application/protobuf")
		if rec.Code != c.code {
			t.Errorf("%s: %d (%s), want %d", c.target, rec.Code, body(rec), c.code)
		}
	}
}

func TestSearchShape(t *testing.T) {
	h := newTestHandler(t, Options{})
	res := getJSON(t, h, "/api/search?q="+urlq(`{ status = error }`)+"&start=1699999000&end=1700001000")
	traces := path(t, res, "traces").([]any)
	if len(traces) != 1 {
		t.Fatalf("want 1 trace, got %d", len(traces))
	}
	tr := traces[0].(map[string]any)
	want := map[string]any{
		"traceID": traceA, "rootServiceName": "frontend", "rootTraceName": "GET /checkout",
		"startTimeUnixNano": "1700000000000000000", "durationMs": float64(1000),
	}
	for k, v := range want {
		if tr[k] != v {
			t.Errorf("trace.%s = %#v, want %#v", k, tr[k], v)
		}
	}
	ss := path(t, tr, "spanSets", 0).(map[string]any)
	if !reflect.DeepEqual(ss, tr["spanSet"]) {
		t.Error("spanSet must repeat the first of spanSets")
	}
	if ss["matched"] != float64(1) {
		t.Errorf("matched %v", ss["matched"])
	}
	sp := path(t, ss, "spans", 0).(map[string]any)
	wantSpan := map[string]any{
		"spanID": "00f067aa0ba902b9", "name": "POST /cart",
		"startTimeUnixNano": "1700000000020000000", "durationNanos": "270000000",
		"attributes": []any{map[string]any{"key": "status", "value": map[string]any{"stringValue": "error"}}},
	}
	if !reflect.DeepEqual(sp, wantSpan) {
		t.Errorf("span\n got  %#v\n want %#v", sp, wantSpan)
	}
	stats := path(t, tr, "serviceStats").(map[string]any)
	if !reflect.DeepEqual(stats, map[string]any{
		"frontend": map[string]any{"spanCount": float64(2)},
		"cart":     map[string]any{"spanCount": float64(2), "errorCount": float64(1)},
	}) {
		t.Errorf("serviceStats %v", stats)
	}
	if got := path(t, res, "metrics", "inspectedTraces"); got != float64(1) {
		t.Errorf("inspectedTraces %v", got)
	}
	if _, ok := path(t, res, "metrics", "inspectedBytes").(string); !ok {
		t.Error("inspectedBytes is a uint64, so a JSON string")
	}
}

func urlq(s string) string {
	r := strings.NewReplacer(" ", "%20", "{", "%7B", "}", "%7D", "=", "%3D", "\"", "%22", "&", "%26", "|", "%7C", ">", "%3E", "<", "%3C", "+", "%2B")
	return r.Replace(s)
}

func traceIDs(t *testing.T, h http.Handler, target string) []string {
	t.Helper()
	res := getJSON(t, h, target)
	var out []string
	for _, tr := range path(t, res, "traces").([]any) {
		out = append(out, tr.(map[string]any)["traceID"].(string))
	}
	return out
}

func TestSearchSemantics(t *testing.T) {
	h := newTestHandler(t, Options{})
	cases := []struct {
		target string
		want   []string
	}{
		{"/api/search", []string{traceB, traceA}}, // newest first
		{"/api/search?q=" + urlq("{}"), []string{traceB, traceA}},
		{"/api/search?q=" + urlq("{}") + "&limit=1", []string{traceB}},
		{"/api/search?q=" + urlq("{}") + "&start=1700000050&end=1700000200", []string{traceB}},
		{"/api/search?q=" + urlq("{}") + "&start=1699999000&end=1700000000", []string{traceA}},
		{"/api/search?q=" + urlq(`{ resource.service.name = "frontend" } >> { span.db.system = "postgres" }`), []string{traceA}},
		{"/api/search?q=" + urlq(`{ kind = server } | count() > 1`), []string{traceA}},
		{"/api/search?q=" + urlq(`{ span.amount > 10 && span.captured = true }`), []string{traceB}},
		{"/api/search?q=" + urlq(`{ traceDuration < 100ms }`), []string{traceB}},
		{"/api/search?q=" + urlq(`{ name = "nope" }`), nil},
		// legacy search
		{"/api/search?tags=" + urlq("service.name=cart"), []string{traceA}},
		{"/api/search?tags=" + urlq(`db.system=POSTGRES`), []string{traceA}}, // case-insensitive substring
		{"/api/search?tags=" + urlq(`name="GET /check"`), []string{traceA}},
		{"/api/search?minDuration=500ms", []string{traceA}},
		{"/api/search?maxDuration=500ms", []string{traceB}},
		{"/api/search?q=" + urlq("{}") + "&minDuration=10ms&maxDuration=2s", []string{traceB, traceA}},
	}
	for _, c := range cases {
		if got := traceIDs(t, h, c.target); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %v want %v", c.target, got, c.want)
		}
	}
}

func TestSearchSpssAndSelect(t *testing.T) {
	h := newTestHandler(t, Options{})
	res := getJSON(t, h, "/api/search?q="+urlq(`{ resource.service.name != "payment" } | select(span.db.system)`)+"&spss=2")
	ss := path(t, res, "traces", 0, "spanSets", 0).(map[string]any)
	if ss["matched"] != float64(4) || len(ss["spans"].([]any)) != 2 {
		t.Fatalf("spss: matched %v, %d spans", ss["matched"], len(ss["spans"].([]any)))
	}
	res = getJSON(t, h, "/api/search?q="+urlq(`{ span.db.system = "postgres" } | select(resource.service.name, statusMessage)`)+"&spss=0")
	sp := path(t, res, "traces", 0, "spanSets", 0, "spans", 0).(map[string]any)
	got := map[string]any{}
	for _, a := range sp["attributes"].([]any) {
		got[a.(map[string]any)["key"].(string)] = a.(map[string]any)["value"]
	}
	if !reflect.DeepEqual(got, map[string]any{
		"db.system":    map[string]any{"stringValue": "postgres"},
		"service.name": map[string]any{"stringValue": "cart"},
	}) {
		t.Errorf("selected attributes %v", got)
	}
	res = getJSON(t, h, "/api/search?q="+urlq(`{ } | by(resource.service.name) | count() > 1`))
	sets := path(t, res, "traces", 0, "spanSets").([]any)
	if len(sets) != 2 {
		t.Fatalf("by(): want 2 spansets for trace A, got %d", len(sets))
	}
	var groups []string
	for _, s := range sets {
		for _, a := range s.(map[string]any)["attributes"].([]any) {
			am := a.(map[string]any)
			if am["key"] == "by(resource.service.name)" {
				groups = append(groups, am["value"].(map[string]any)["stringValue"].(string))
			}
		}
	}
	sort.Strings(groups)
	if !reflect.DeepEqual(groups, []string{"cart", "frontend"}) {
		t.Errorf("groups %v", groups)
	}
}

func TestSearchErrors(t *testing.T) {
	h := newTestHandler(t, Options{})
	for _, c := range []struct{ target, contains string }{
		{"/api/search?q=" + urlq(`{ name = }`), "parse error at line 1, col 10"},
		{"/api/search?q=" + urlq(`{ .a = 1 }`) + "&tags=a=1", "can't specify tags and q"},
		{"/api/search?limit=0", "invalid limit"},
		{"/api/search?limit=x", "invalid limit"},
		{"/api/search?spss=-1", "invalid spss"},
		{"/api/search?start=10&end=5", "start must be before end"},
		{"/api/search?minDuration=fast", "invalid minDuration"},
		{"/api/search?minDuration=2s&maxDuration=1s", "maxDuration"},
		{"/api/search?tags=noval", "invalid tags"},
		{"/api/search?tags=" + urlq("a=1 a=2"), "duplicate key"},
		{"/api/search?q=" + urlq(`{ } | rate()`), "metrics"},
		{"/api/search?q=" + urlq(`{ finding.kind = "x" }`), "finding.kind is not available"},
	} {
		rec := do(t, h, c.target)
		if rec.Code != 400 || !strings.Contains(body(rec), c.contains) {
			t.Errorf("%s: %d %q, want 400 containing %q", c.target, rec.Code, body(rec), c.contains)
		}
	}
}

func TestSearchFindingKind(t *testing.T) {
	h := newTestHandler(t, Options{Findings: findingsFor("00f067aa0ba902ba", "n_plus_one_query")})
	got := traceIDs(t, h, "/api/search?q="+urlq(`{ finding.kind = "n_plus_one_query" }`))
	// The lookup returns the finding for every trace, but only trace A has that span.
	if !reflect.DeepEqual(got, []string{traceA}) {
		t.Fatalf("got %v", got)
	}
}

func TestFindingsFromAdapter(t *testing.T) {
	src := fakeFindings{fs: []analyze.Finding{
		{Kind: "n_plus_one_query", SpanIDs: []string{"00f067aa0ba902ba", "bad"}},
		{Kind: "slow_query", SpanIDs: []string{"00f067aa0ba902ba"}},
		{Kind: "n_plus_one_query", SpanIDs: []string{"00f067aa0ba902ba"}},
		{Kind: "timeout_cascade"},
	}}
	m, err := FindingsFrom(src).SpanFindingKinds(context.Background(), model.TraceID{1})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := model.ParseSpanID("00f067aa0ba902ba")
	if !reflect.DeepEqual(m[id], []string{"n_plus_one_query", "slow_query"}) || !reflect.DeepEqual(m[model.SpanID{}], []string{"timeout_cascade"}) {
		t.Fatalf("adapter %v", m)
	}
}

type fakeFindings struct{ fs []analyze.Finding }

func (f fakeFindings) TraceFindings(context.Context, model.TraceID) ([]analyze.Finding, bool, error) {
	return f.fs, true, nil
}

func TestSearchCancelled(t *testing.T) {
	h := newTestHandler(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest(http.MethodGet, "/api/search?q=%7B%7D", nil).WithContext(ctx)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code == http.StatusOK {
		t.Fatalf("cancelled request answered 200: %s", rec.Body.String())
	}
}
