package jaeger

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/api/apitest"
)

func TestServicesEnvelope(t *testing.T) {
	srv := newServer(t, Options{})
	st, m := apitest.GetJSON(t, srv, "/api/services")
	data := envelopeOK(t, "services", st, m)
	apitest.Eq(t, "services", data, []any{"frontend", "inventory", "worker"})
	apitest.Eq(t, "total", m["total"], 3.0)
	apitest.Eq(t, "errors", m["errors"], nil)
}

func TestServiceOperations(t *testing.T) {
	srv := newServer(t, Options{})
	st, m := apitest.GetJSON(t, srv, "/api/services/frontend/operations")
	apitest.Eq(t, "operations", envelopeOK(t, "ops", st, m), []any{"GET /health", "GET /orders", "GET /stock", "SELECT orders"})
	apitest.Eq(t, "total", m["total"], 4.0)

	st, m = apitest.GetJSON(t, srv, "/api/services/"+url.PathEscape("no such service")+"/operations")
	apitest.Eq(t, "unknown service operations", envelopeOK(t, "ops", st, m), []any{})
}

func TestOperationsWithKind(t *testing.T) {
	srv := newServer(t, Options{})
	st, m := apitest.GetJSON(t, srv, "/api/operations?service=frontend&spanKind=server")
	data := apitest.Arr(t, "data", envelopeOK(t, "operations", st, m))
	if len(data) != 2 {
		t.Fatalf("operations: %v", data)
	}
	for i, want := range []string{"GET /health", "GET /orders"} {
		op := apitest.WantKeys(t, "operation", data[i], "name", "spanKind")
		apitest.Eq(t, "name", op["name"], want)
		apitest.Eq(t, "spanKind", op["spanKind"], "server")
	}

	st, m = apitest.GetJSON(t, srv, "/api/operations?service=worker")
	data = apitest.Arr(t, "data", envelopeOK(t, "operations", st, m))
	got := map[string]any{}
	for _, x := range data {
		op := x.(map[string]any)
		got[op["name"].(string)] = op["spanKind"]
	}
	apitest.Eq(t, "worker operations", got, map[string]any{"ack": "internal", "process order": "consumer"})

	st, m = apitest.GetJSON(t, srv, "/api/operations?service=frontend&spanKind=sideways")
	msg := envelopeErr(t, "bad spanKind", st, m, http.StatusBadRequest)
	if !strings.Contains(msg, "spanKind") {
		t.Errorf("message %q does not name the parameter", msg)
	}
}

func TestGetTraceFieldByField(t *testing.T) {
	srv := newServer(t, Options{})
	st, m := apitest.GetJSON(t, srv, "/api/traces/"+apitest.TraceA)
	data := apitest.Arr(t, "data", envelopeOK(t, "trace", st, m))
	if len(data) != 1 {
		t.Fatalf("want one trace, got %d", len(data))
	}
	tr := apitest.WantKeys(t, "trace", data[0], "traceID", "spans", "processes", "warnings")
	apitest.Eq(t, "traceID", tr["traceID"], apitest.TraceA)
	spans := apitest.Arr(t, "spans", tr["spans"])
	if len(spans) != 4 {
		t.Fatalf("spans: %d", len(spans))
	}
	spanKeys := []string{"traceID", "spanID", "flags", "operationName", "references", "startTime", "duration", "tags", "logs", "processID", "warnings"}

	// Root span: spans are ordered by start time.
	root := apitest.WantKeys(t, "root span", spans[0], spanKeys...)
	apitest.Eq(t, "root traceID", root["traceID"], apitest.TraceA)
	apitest.Eq(t, "root spanID", root["spanID"], "b7ad6b7169203331")
	apitest.Eq(t, "root flags", root["flags"], 1.0)
	apitest.Eq(t, "root operationName", root["operationName"], "GET /orders")
	apitest.Eq(t, "root references", root["references"], []any{})
	apitest.Eq(t, "root startTime (µs)", root["startTime"], usOf(apitest.T0))
	apitest.Eq(t, "root duration (µs)", root["duration"], 120000.0)
	apitest.Eq(t, "root warnings", root["warnings"], nil)
	tags := tagMap(t, root["tags"])
	tagIs(t, tags, "http.request.method", "string", "GET")
	tagIs(t, tags, "http.response.status_code", "int64", 500.0)
	tagIs(t, tags, "otel.scope.name", "string", "io.opentelemetry.http")
	tagIs(t, tags, "otel.scope.version", "string", "1.0.0")
	tagIs(t, tags, "span.kind", "string", "server")
	tagIs(t, tags, "otel.status_code", "string", "ERROR")
	tagIs(t, tags, "error", "bool", true)
	tagIs(t, tags, "otel.status_description", "string", "upstream failed")
	logs := apitest.Arr(t, "logs", root["logs"])
	if len(logs) != 1 {
		t.Fatalf("logs: %v", logs)
	}
	lg := apitest.WantKeys(t, "log", logs[0], "timestamp", "fields")
	apitest.Eq(t, "log timestamp", lg["timestamp"], usOf(apitest.T0.Add(110*time.Millisecond)))
	fields := tagMap(t, lg["fields"])
	tagIs(t, fields, "event", "string", "exception")
	tagIs(t, fields, "exception.type", "string", "IOError")
	tagIs(t, fields, "exception.message", "string", "inventory unavailable")

	// A client span without status: no status tags, no flags field.
	db := apitest.WantKeys(t, "db span", spans[1], "traceID", "spanID", "operationName", "references", "startTime", "duration", "tags", "logs", "processID", "warnings")
	apitest.Eq(t, "db references", db["references"], []any{map[string]any{"refType": "CHILD_OF", "traceID": apitest.TraceA, "spanID": "b7ad6b7169203331"}})
	dbTags := tagMap(t, db["tags"])
	tagIs(t, dbTags, "span.kind", "string", "client")
	for _, k := range []string{"error", "otel.status_code", "otel.status_description"} {
		if _, ok := dbTags[k]; ok {
			t.Errorf("db span has tag %q though its status is unset", k)
		}
	}
	apitest.Eq(t, "db processID", db["processID"], "p1")
	apitest.Eq(t, "db logs", db["logs"], []any{})

	// The inventory server span: second process, typed values, links.
	inv := spans[3].(map[string]any)
	apitest.Eq(t, "inventory spanID", inv["spanID"], "8f3c2a1b0e9d7c6a")
	apitest.Eq(t, "inventory processID", inv["processID"], "p2")
	apitest.Eq(t, "inventory references", inv["references"], []any{
		map[string]any{"refType": "CHILD_OF", "traceID": apitest.TraceA, "spanID": "53995c3f42cd8ad8"},
		map[string]any{"refType": "FOLLOWS_FROM", "traceID": apitest.TraceB64, "spanID": "a2fb4a1d1a96d312"},
	})
	it := tagMap(t, inv["tags"])
	tagIs(t, it, "stock.big_counter", "int64", "9007199254740993") // beyond 2^53: string
	tagIs(t, it, "http.response.status_code", "int64", 503.0)
	tagIs(t, it, "stock.ratio", "float64", 0.25)
	tagIs(t, it, "cache.hit", "bool", false)
	tagIs(t, it, "stock.skus", "string", `["a","b"]`)
	tagIs(t, it, "w3c.tracestate", "string", "rojo=00f067aa0ba902b7")
	tagIs(t, it, "otel.dropped_attributes_count", "int64", 2.0)
	tagIs(t, it, "otel.status_description", "string", "no stock backend")
	if _, ok := it["otel.scope.version"]; ok {
		t.Error("empty scope version must not become a tag")
	}

	procs := apitest.WantKeys(t, "processes", tr["processes"], "p1", "p2")
	p1 := apitest.WantKeys(t, "p1", procs["p1"], "serviceName", "tags")
	apitest.Eq(t, "p1 serviceName", p1["serviceName"], "frontend")
	apitest.Eq(t, "p1 tags", p1["tags"], []any{
		map[string]any{"key": "service.version", "type": "string", "value": "1.2.0"},
		map[string]any{"key": "host.name", "type": "string", "value": "web-1"},
	})
	p2 := procs["p2"].(map[string]any)
	apitest.Eq(t, "p2 serviceName", p2["serviceName"], "inventory")
	apitest.Eq(t, "p2 tags", p2["tags"], []any{map[string]any{"key": "k8s.pod.name", "type": "string", "value": "inventory-7d9f"}})
}

func TestGetTrace64BitIDAndOrphan(t *testing.T) {
	srv := newServer(t, Options{})
	for _, id := range []string{apitest.TraceB64, "0000000000000000" + apitest.TraceB64, strings.ToUpper(apitest.TraceB64)} {
		st, m := apitest.GetJSON(t, srv, "/api/traces/"+id)
		data := apitest.Arr(t, "data", envelopeOK(t, "trace "+id, st, m))
		tr := data[0].(map[string]any)
		// Jaeger prints 64-bit trace ids as 16 hex characters.
		apitest.Eq(t, "traceID of "+id, tr["traceID"], apitest.TraceB64)
		spans := apitest.Arr(t, "spans", tr["spans"])
		if len(spans) != 2 {
			t.Fatalf("spans: %d", len(spans))
		}
		consumer := spans[0].(map[string]any)
		tags := tagMap(t, consumer["tags"])
		tagIs(t, tags, "span.kind", "string", "consumer")
		tagIs(t, tags, "otel.status_code", "string", "OK")
		if _, ok := tags["error"]; ok {
			t.Error("status OK must not set error")
		}
		logs := apitest.Arr(t, "logs", consumer["logs"])
		// An "event" attribute wins over the event name.
		apitest.Eq(t, "log fields", logs[0].(map[string]any)["fields"], []any{
			map[string]any{"key": "event", "type": "string", "value": "custom-event"},
			map[string]any{"key": "attempt", "type": "int64", "value": 2.0},
		})
		ack := spans[1].(map[string]any)
		w := apitest.Arr(t, "ack warnings", ack["warnings"])
		if len(w) != 1 || !strings.Contains(w[0].(string), "ffffffffffffffff") {
			t.Errorf("orphan span warnings = %v", w)
		}
	}
}

func TestGetTraceErrors(t *testing.T) {
	srv := newServer(t, Options{})
	st, m := apitest.GetJSON(t, srv, "/api/traces/1234567890abcdef1234567890abcdef")
	apitest.Eq(t, "404 msg", envelopeErr(t, "missing trace", st, m, http.StatusNotFound), "trace not found")

	for _, bad := range []string{"xyz", strings.Repeat("a", 33), "12345678901234567890123456789gzz"} {
		st, m = apitest.GetJSON(t, srv, "/api/traces/"+bad)
		envelopeErr(t, "bad id "+bad, st, m, http.StatusBadRequest)
	}
	st, m = apitest.GetJSON(t, srv, "/api/traces/"+apitest.TraceA+"?start=yesterday")
	envelopeErr(t, "bad start", st, m, http.StatusBadRequest)
}

// searchIDs runs a v1 search and returns the trace ids, in order.
func searchIDs(t *testing.T, srvGet func(string) (int, map[string]any), query string) []string {
	t.Helper()
	st, m := srvGet("/api/traces?" + query)
	data := apitest.Arr(t, "data", envelopeOK(t, "search "+query, st, m))
	apitest.Eq(t, "total of "+query, m["total"], float64(len(data)))
	ids := []string{}
	for _, x := range data {
		ids = append(ids, apitest.WantKeys(t, "trace", x, "traceID", "spans", "processes", "warnings")["traceID"].(string))
	}
	return ids
}

func TestSearch(t *testing.T) {
	srv := newServer(t, Options{})
	g := func(p string) (int, map[string]any) { return apitest.GetJSON(t, srv, p) }
	tagsJSON := url.QueryEscape(`{"http.response.status_code":"500"}`)
	start := usOf(apitest.T0.Add(-time.Minute))
	cases := []struct {
		query string
		want  []string
	}{
		{"service=frontend", []string{apitest.TraceC, apitest.TraceA}}, // newest first
		{"service=frontend&limit=1", []string{apitest.TraceC}},
		{"service=frontend&tags=" + tagsJSON, []string{apitest.TraceA}},
		{"service=inventory&tag=http.response.status_code:503", []string{apitest.TraceA}},
		{"service=frontend&tag=http.response.status_code:404", []string{}},
		{"tag=error:true", []string{apitest.TraceA}},
		{"service=worker&tag=error:true", []string{}},
		{"tags=" + url.QueryEscape(`{"span.kind":"consumer"}`), []string{apitest.TraceB64}},
		{"tags=" + url.QueryEscape(`{"otel.status_code":"OK"}`), []string{apitest.TraceB64}},
		{"service=inventory&operation=" + url.QueryEscape("GET /stock"), []string{apitest.TraceA}},
		{"service=frontend&minDuration=100ms", []string{apitest.TraceA}},
		{"service=frontend&maxDuration=5ms", []string{apitest.TraceC}},
		{"service=frontend&minDuration=1s", []string{}},
		// The UI sends µs start/end; the end is inclusive.
		{"start=" + ftoa(start) + "&end=" + ftoa(usOf(apitest.T0.Add(time.Minute))), []string{apitest.TraceB64, apitest.TraceA}},
		{"end=" + ftoa(usOf(apitest.T0)), []string{apitest.TraceA}},
		{"lookback=3m30s", []string{apitest.TraceC}}, {"lookback=1d", []string{apitest.TraceC, apitest.TraceB64, apitest.TraceA}}, // now is 10:05; lookback without start counts back from now
		{"service=frontend&minDuration=&maxDuration=", []string{apitest.TraceC, apitest.TraceA}},
	}
	for _, c := range cases {
		apitest.Eq(t, c.query, searchIDs(t, g, c.query), c.want)
	}
}

func ftoa(f float64) string { return strconv.FormatInt(int64(f), 10) }

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

func TestSearchByTraceIDs(t *testing.T) {
	srv := newServer(t, Options{})
	missing := "1234567890abcdef1234567890abcdef"
	st, m := apitest.GetJSON(t, srv, "/api/traces?traceID="+apitest.TraceA+"&traceID="+missing+"&traceID="+apitest.TraceB64)
	data := apitest.Arr(t, "data", envelopeOK(t, "by ids", st, m))
	if len(data) != 2 {
		t.Fatalf("want 2 traces, got %d", len(data))
	}
	apitest.Eq(t, "first", data[0].(map[string]any)["traceID"], apitest.TraceA)
	apitest.Eq(t, "second", data[1].(map[string]any)["traceID"], apitest.TraceB64)
	errs := apitest.Arr(t, "errors", m["errors"])
	if len(errs) != 1 {
		t.Fatalf("errors: %v", errs)
	}
	e := apitest.WantKeys(t, "error", errs[0], "msg", "traceID")
	apitest.Eq(t, "error msg", e["msg"], "trace not found")
	apitest.Eq(t, "error traceID", e["traceID"], missing)
}

func TestSearchBadParams(t *testing.T) {
	srv := newServer(t, Options{})
	for q, param := range map[string]string{
		"tags=" + url.QueryEscape("{not json"):     "tags",
		"tags=" + url.QueryEscape(`{"a":{"b":1}}`): "tags",
		"tag=nocolon":                   "tag",
		"minDuration=fast":              "minDuration",
		"maxDuration=-1s":               "maxDuration",
		"start=abc":                     "start",
		"end=1.5":                       "end",
		"limit=-3":                      "limit",
		"traceID=zz":                    "traceID",
		"minDuration=2s&maxDuration=1s": "maxDuration",
		"start=20&end=10":               "start",
	} {
		st, m := apitest.GetJSON(t, srv, "/api/traces?"+q)
		msg := envelopeErr(t, q, st, m, http.StatusBadRequest)
		if !strings.Contains(msg, param) {
			t.Errorf("%s: message %q does not name %s", q, msg, param)
		}
	}
}

func TestDependencies(t *testing.T) {
	srv := newServer(t, Options{})
	end := apitest.Now.UnixMilli()
	st, m := apitest.GetJSON(t, srv, "/api/dependencies?endTs="+itoa(end)+"&lookback=3600000")
	data := apitest.Arr(t, "data", envelopeOK(t, "dependencies", st, m))
	if len(data) != 1 {
		t.Fatalf("dependencies: %v", data)
	}
	d := apitest.WantKeys(t, "link", data[0], "parent", "child", "callCount")
	apitest.Eq(t, "parent", d["parent"], "frontend")
	apitest.Eq(t, "child", d["child"], "inventory")
	apitest.Eq(t, "callCount", d["callCount"], 1.0)

	// A window after every trace has no edges.
	st, m = apitest.GetJSON(t, srv, "/api/dependencies?endTs="+itoa(end)+"&lookback=60000")
	apitest.Eq(t, "empty window", envelopeOK(t, "dependencies", st, m), []any{})

	st, m = apitest.GetJSON(t, srv, "/api/dependencies?endTs="+itoa(end)+"&lookback=3600000&service=worker")
	apitest.Eq(t, "filtered", envelopeOK(t, "dependencies", st, m), []any{})

	st, m = apitest.GetJSON(t, srv, "/api/dependencies?endTs=now")
	envelopeErr(t, "bad endTs", st, m, http.StatusBadRequest)
	st, m = apitest.GetJSON(t, srv, "/api/dependencies?lookback=0")
	envelopeErr(t, "bad lookback", st, m, http.StatusBadRequest)
}

// fixedDeps proves the DependencySource seam is used.
type fixedDeps []DependencyLink

func (f fixedDeps) Dependencies(_ context.Context, _ time.Time, _ time.Duration) ([]DependencyLink, error) {
	return f, nil
}

func TestDependencySourceIsPluggable(t *testing.T) {
	srv := newServer(t, Options{Dependencies: fixedDeps{{Parent: "a", Child: "b", CallCount: 7}}})
	st, m := apitest.GetJSON(t, srv, "/api/dependencies")
	apitest.Eq(t, "data", envelopeOK(t, "deps", st, m), []any{map[string]any{"parent": "a", "child": "b", "callCount": 7.0}})
}

// A trace over MaxTraceSpans comes back cut to its first spans by start,
// with a warning naming both counts; a trace under it comes back whole.
func TestTraceByIDIsCapped(t *testing.T) {
	srv := newServer(t, Options{MaxTraceSpans: 2})
	st, m := apitest.GetJSON(t, srv, "/api/traces/"+apitest.TraceA)
	tr := apitest.Arr(t, "data", envelopeOK(t, "trace", st, m))[0].(map[string]any)
	spans := apitest.Arr(t, "spans", tr["spans"])
	if len(spans) != 2 {
		t.Fatalf("%d spans, want the cap of 2", len(spans))
	}
	if w := apitest.Arr(t, "warnings", tr["warnings"]); len(w) != 1 || !strings.Contains(w[0].(string), "first 2 of 4 spans") {
		t.Errorf("warnings %v", w)
	}
	first := spans[0].(map[string]any)["startTime"].(float64)
	for _, s := range spans[1:] {
		if s.(map[string]any)["startTime"].(float64) < first {
			t.Errorf("kept spans are not the earliest")
		}
	}
	srv = newServer(t, Options{MaxTraceSpans: 4})
	st, m = apitest.GetJSON(t, srv, "/api/traces/"+apitest.TraceA)
	tr = apitest.Arr(t, "data", envelopeOK(t, "trace", st, m))[0].(map[string]any)
	if n := len(apitest.Arr(t, "spans", tr["spans"])); n != 4 || tr["warnings"] != nil {
		t.Errorf("a trace at the cap: %d spans, warnings %v", n, tr["warnings"])
	}
}
