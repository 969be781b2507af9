package jaeger

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

func v3ErrorBody(t *testing.T, what string, st int, m map[string]any, want int) string {
	t.Helper()
	if st != want {
		t.Fatalf("%s: status %d, want %d (%v)", what, st, want, m)
	}
	e := apitest.WantKeys(t, what, m, "error")
	d := apitest.WantKeys(t, what+" error", e["error"], "httpCode", "message")
	apitest.Eq(t, what+" httpCode", d["httpCode"], float64(want))
	return d["message"].(string)
}

// getOTLP fetches an api_v3 trace response and decodes result as OTLP.
func getOTLP(t *testing.T, srvURL, path string) (int, ptrace.Traces, []byte) {
	t.Helper()
	resp, err := http.Get(srvURL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, ptrace.NewTraces(), body
	}
	var wrap map[string]json.RawMessage
	if err := json.Unmarshal(body, &wrap); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(wrap) != 1 || wrap["result"] == nil {
		t.Fatalf("%s: want only a result field, got %s", path, body)
	}
	td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(wrap["result"])
	if err != nil {
		t.Fatalf("%s: result is not OTLP JSON: %v", path, err)
	}
	return resp.StatusCode, td, body
}

func TestV3ServicesAndOperations(t *testing.T) {
	srv := newServer(t, Options{})
	st, m := apitest.GetJSON(t, srv, "/api/v3/services")
	if st != 200 {
		t.Fatal(st)
	}
	apitest.Eq(t, "services", apitest.WantKeys(t, "services", m, "services")["services"], []any{"frontend", "inventory", "worker"})

	st, m = apitest.GetJSON(t, srv, "/api/v3/operations?service=inventory")
	if st != 200 {
		t.Fatal(st)
	}
	apitest.Eq(t, "operations", apitest.WantKeys(t, "ops", m, "operations")["operations"], []any{map[string]any{"name": "GET /stock", "spanKind": "server"}})

	for _, q := range []string{"spanKind=client", "span_kind=client"} {
		_, m = apitest.GetJSON(t, srv, "/api/v3/operations?service=frontend&"+q)
		apitest.Eq(t, q, m["operations"], []any{
			map[string]any{"name": "GET /stock", "spanKind": "client"},
			map[string]any{"name": "SELECT orders", "spanKind": "client"},
		})
	}
	st, m = apitest.GetJSON(t, srv, "/api/v3/operations?service=frontend&spanKind=diagonal")
	v3ErrorBody(t, "bad kind", st, m, http.StatusBadRequest)
}

func TestV3GetTrace(t *testing.T) {
	srv := newServer(t, Options{})
	want := apitest.FixtureSpans(t)
	idBytes, _ := hex.DecodeString(apitest.TraceA)
	for _, id := range []string{apitest.TraceA, base64.StdEncoding.EncodeToString(idBytes), base64.RawURLEncoding.EncodeToString(idBytes)} {
		st, td, body := getOTLP(t, srv.URL, "/api/v3/traces/"+url.PathEscape(id)+"?start_time=2026-01-15T09:00:00Z&endTime=2026-01-15T11:00:00Z")
		if st != 200 {
			t.Fatalf("%s: %d %s", id, st, body)
		}
		got := otlpconv.FromTraces(td)
		if len(got) != 4 {
			t.Fatalf("%s: %d spans", id, len(got))
		}
		if td.ResourceSpans().Len() != 2 {
			t.Errorf("want spans grouped in 2 resources, got %d", td.ResourceSpans().Len())
		}
		// Every span survives the round trip field for field.
		byID := map[string]int{}
		for i := range want {
			byID[want[i].SpanID.String()] = i
		}
		for i := range got {
			w := want[byID[got[i].SpanID.String()]]
			g := got[i]
			apitest.Eq(t, "span "+g.SpanID.String(), g.Name+g.Kind.String()+g.StatusMessage+g.Service+g.TraceState, w.Name+w.Kind.String()+w.StatusMessage+w.Service+w.TraceState)
			apitest.Eq(t, "attrs of "+g.Name, g.Attrs, w.Attrs)
			apitest.Eq(t, "times of "+g.Name, [2]uint64{g.StartUnixNano, g.EndUnixNano}, [2]uint64{w.StartUnixNano, w.EndUnixNano})
			apitest.Eq(t, "links of "+g.Name, len(g.Links), len(w.Links))
			apitest.Eq(t, "events of "+g.Name, len(g.Events), len(w.Events))
		}
		// OTLP JSON ids are hex, not base64.
		if !strings.Contains(string(body), `"traceId":"`+apitest.TraceA+`"`) {
			t.Error("trace id is not hex in OTLP JSON")
		}
	}

	st, m := apitest.GetJSON(t, srv, "/api/v3/traces/1234567890abcdef1234567890abcdef")
	apitest.Eq(t, "404 message", v3ErrorBody(t, "missing", st, m, http.StatusNotFound), "No traces found")
	st, m = apitest.GetJSON(t, srv, "/api/v3/traces/not-an-id!")
	if msg := v3ErrorBody(t, "bad id", st, m, http.StatusBadRequest); !strings.Contains(msg, "trace_id") {
		t.Errorf("message %q", msg)
	}
	st, m = apitest.GetJSON(t, srv, "/api/v3/traces/"+apitest.TraceA+"?start_time=yesterday")
	v3ErrorBody(t, "bad start_time", st, m, http.StatusBadRequest)
}

func TestV3FindTraces(t *testing.T) {
	srv := newServer(t, Options{})
	traceIDs := func(td ptrace.Traces) map[string]int {
		out := map[string]int{}
		for _, s := range otlpconv.FromTraces(td) {
			out[s.TraceID.String()]++
		}
		return out
	}
	for _, q := range []string{
		"query.service_name=worker&query.start_time_min=2026-01-15T09:00:00Z&query.start_time_max=2026-01-15T11:00:00Z",
		"query.serviceName=worker&query.startTimeMin=2026-01-15T09:00:00Z&query.startTimeMax=2026-01-15T11:00:00Z",
	} {
		st, td, body := getOTLP(t, srv.URL, "/api/v3/traces?"+q)
		if st != 200 {
			t.Fatalf("%s: %d %s", q, st, body)
		}
		apitest.Eq(t, q, traceIDs(td), map[string]int{"0000000000000000" + apitest.TraceB64: 2})
	}
	attrs := url.QueryEscape(`{"http.route":"/orders"}`)
	_, td, _ := getOTLP(t, srv.URL, "/api/v3/traces?query.attributes="+attrs)
	apitest.Eq(t, "by attribute", traceIDs(td), map[string]int{apitest.TraceA: 4})
	_, td, _ = getOTLP(t, srv.URL, "/api/v3/traces?query.service_name=frontend&query.duration_min=100ms")
	apitest.Eq(t, "by duration", traceIDs(td), map[string]int{apitest.TraceA: 4})
	_, td, _ = getOTLP(t, srv.URL, "/api/v3/traces?query.serviceName=frontend&query.searchDepth=1")
	apitest.Eq(t, "search depth keeps the newest", traceIDs(td), map[string]int{apitest.TraceC: 1})

	st, m := apitest.GetJSON(t, srv, "/api/v3/traces?query.service_name=nobody")
	apitest.Eq(t, "none", v3ErrorBody(t, "none", st, m, http.StatusNotFound), "No traces found")
	for q, param := range map[string]string{
		"query.startTimeMin=10am":   "query.startTimeMin",
		"query.start_time_min=10am": "query.start_time_min",
		"query.durationMin=long":    "query.durationMin",
		"query.attributes=nope":     "query.attributes",
		"query.searchDepth=x":       "query.searchDepth",
		"query.filter=%7B%7D":       "query.filter",
		"query.startTimeMin=2026-01-15T11:00:00Z&query.startTimeMax=2026-01-15T10:00:00Z": "query.startTimeMin",
	} {
		st, m := apitest.GetJSON(t, srv, "/api/v3/traces?"+q)
		if msg := v3ErrorBody(t, q, st, m, http.StatusBadRequest); !strings.Contains(msg, param) {
			t.Errorf("%s: message %q does not name %s", q, msg, param)
		}
	}
}

func TestV3TraceSummaries(t *testing.T) {
	srv := newServer(t, Options{})
	st, m := apitest.GetJSON(t, srv, "/api/v3/trace-summaries?query.serviceName=frontend&query.startTimeMin=2026-01-15T09:00:00Z&query.startTimeMax=2026-01-15T11:00:00Z")
	if st != 200 {
		t.Fatal(st, m)
	}
	sums := apitest.Arr(t, "summaries", apitest.WantKeys(t, "body", m, "summaries")["summaries"])
	if len(sums) != 2 {
		t.Fatalf("summaries: %v", sums)
	}
	apitest.Eq(t, "newest first", sums[0].(map[string]any)["traceId"], apitest.TraceC)
	s := apitest.WantKeys(t, "summary", sums[1], "traceId", "rootServiceName", "rootOperationName", "minStartTimeUnixNano",
		"maxEndTimeUnixNano", "spanCount", "errorSpanCount", "services")
	apitest.Eq(t, "traceId", s["traceId"], apitest.TraceA)
	apitest.Eq(t, "rootServiceName", s["rootServiceName"], "frontend")
	apitest.Eq(t, "rootOperationName", s["rootOperationName"], "GET /orders")
	apitest.Eq(t, "minStartTimeUnixNano", s["minStartTimeUnixNano"], itoa(apitest.T0.UnixNano()))
	apitest.Eq(t, "maxEndTimeUnixNano", s["maxEndTimeUnixNano"], itoa(apitest.T0.Add(120*time.Millisecond).UnixNano()))
	apitest.Eq(t, "spanCount", s["spanCount"], 4.0)
	apitest.Eq(t, "errorSpanCount", s["errorSpanCount"], 3.0)
	apitest.Eq(t, "services", s["services"], []any{
		map[string]any{"name": "frontend", "spanCount": 3.0, "errorSpanCount": 2.0},
		map[string]any{"name": "inventory", "spanCount": 1.0, "errorSpanCount": 1.0},
	})

	st, m = apitest.GetJSON(t, srv, "/api/v3/trace-summaries?query.serviceName=nobody")
	if st != 200 {
		t.Fatal(st)
	}
	apitest.Eq(t, "empty", m["summaries"], []any{})
	st, m = apitest.GetJSON(t, srv, "/api/v3/trace-summaries?query.durationMax=soon")
	v3ErrorBody(t, "bad durationMax", st, m, http.StatusBadRequest)
}
