package jaeger

import (
	"math/big"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/api/apitest"
)

// TestJaegerUIReplay replays, byte for byte, the requests that the Jaeger UI
// (jaegertracing/jaeger-ui v2.20.0: src/api/jaeger.ts, src/api/v3/client.ts,
// src/actions/jaeger-api.ts, Monitor/ServicesView) sends for its pages, and
// checks each response against what the UI's code then reads (its zod
// schemas for api_v3, transformTraceData for traces, the metrics reducer for
// the Monitor tab). See docs/compatibility.md.
func TestJaegerUIReplay(t *testing.T) {
	srv := newServer(t, Options{})
	nowMS := apitest.Now.UnixMilli()
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	decimal := regexp.MustCompile(`^\d+$`)

	t.Run("search page: services and span names (api_v3)", func(t *testing.T) {
		st, m := apitest.GetJSON(t, srv, "/api/v3/services")
		if st != 200 {
			t.Fatal(st)
		}
		for _, s := range apitest.Arr(t, "services", m["services"]) {
			if _, ok := s.(string); !ok {
				t.Errorf("service %v is not a string", s)
			}
		}
		// client.ts: `${apiRoot}/operations?service=${encodeURIComponent(service)}`
		st, m = apitest.GetJSON(t, srv, "/api/v3/operations?service=frontend")
		if st != 200 {
			t.Fatal(st)
		}
		for _, o := range apitest.Arr(t, "operations", m["operations"]) {
			op := apitest.WantKeys(t, "operation", o, "name", "spanKind")
			if _, ok := op["name"].(string); !ok {
				t.Errorf("name %v", op["name"])
			}
			if _, ok := op["spanKind"].(string); !ok {
				t.Errorf("spanKind %v", op["spanKind"])
			}
		}
	})

	t.Run("search page: trace summaries (api_v3)", func(t *testing.T) {
		// fetchTraceSummaries builds URLSearchParams in this order; start/end
		// come from µs URL params via new Date(us/1000).toISOString(); tags
		// are the logfmt box converted to JSON.
		path := "/api/v3/trace-summaries?query.serviceName=frontend" +
			"&query.startTimeMin=2026-01-15T09%3A05%3A00.000Z" +
			"&query.startTimeMax=2026-01-15T10%3A05%3A00.000Z" +
			"&query.searchDepth=20&query.durationMin=100ms" +
			"&query.attributes=%7B%22error%22%3A%22true%22%7D"
		st, m := apitest.GetJSON(t, srv, path)
		if st != 200 {
			t.Fatal(st, m)
		}
		sums := apitest.Arr(t, "summaries", m["summaries"])
		if len(sums) != 1 {
			t.Fatalf("want the one failing slow trace, got %v", sums)
		}
		s := sums[0].(map[string]any)
		if !hex32.MatchString(s["traceId"].(string)) {
			t.Errorf("traceId %v fails the UI's /^[0-9a-f]{32}$/i", s["traceId"])
		}
		for _, k := range []string{"minStartTimeUnixNano", "maxEndTimeUnixNano"} {
			v, _ := s[k].(string)
			if !decimal.MatchString(v) {
				t.Errorf("%s %v is not a decimal int64 string", k, s[k])
			}
		}
		// The UI's own arithmetic: BigInt ns → µs start and duration.
		start, _ := new(big.Int).SetString(s["minStartTimeUnixNano"].(string), 10)
		end, _ := new(big.Int).SetString(s["maxEndTimeUnixNano"].(string), 10)
		apitest.Eq(t, "UI startTime µs", new(big.Int).Div(start, big.NewInt(1000)).Int64(), apitest.T0.UnixMicro())
		apitest.Eq(t, "UI duration µs", new(big.Int).Div(new(big.Int).Sub(end, start), big.NewInt(1000)).Int64(), int64(120000))
		for _, k := range []string{"spanCount", "errorSpanCount"} {
			if f, ok := s[k].(float64); !ok || f < 0 || f != float64(int64(f)) {
				t.Errorf("%s %v is not a non-negative integer", k, s[k])
			}
		}
		for _, sv := range apitest.Arr(t, "services", s["services"]) {
			if _, ok := sv.(map[string]any)["name"].(string); !ok {
				t.Errorf("service summary without name: %v", sv)
			}
		}
	})

	t.Run("trace page: v1 trace as transformTraceData reads it", func(t *testing.T) {
		// jaeger.ts fetchTrace: `${apiRoot}traces/${encodeURIComponent(id)}`
		for _, id := range []string{apitest.TraceA, apitest.TraceB64} {
			st, m := apitest.GetJSON(t, srv, "/api/traces/"+id)
			tr := apitest.Arr(t, "data", envelopeOK(t, "trace", st, m))[0].(map[string]any)
			checkTransformTraceData(t, tr)
		}
		// The "Trace JSON" buttons of the trace page.
		st, _ := apitest.GetJSON(t, srv, "/api/traces/"+apitest.TraceA+"?prettyPrint=true")
		apitest.Eq(t, "prettyPrint status", st, 200)
		st, _ = apitest.GetJSON(t, srv, "/api/traces/"+apitest.TraceA+"?raw=true&prettyPrint=true")
		apitest.Eq(t, "raw status", st, 200)
	})

	t.Run("legacy search page (jaeger-ui <= v2.19, Grafana): /api/traces", func(t *testing.T) {
		// queryString.stringify sorts keys; unset form fields were sent as
		// bare keys (minDuration without '=').
		end := apitest.Now.UnixMicro()
		start := apitest.Now.Add(-time.Hour).UnixMicro()
		path := "/api/traces?end=" + strconv.FormatInt(end, 10) + "&limit=20&lookback=1h&maxDuration&minDuration" +
			"&service=frontend&start=" + strconv.FormatInt(start, 10) + "&tags=%7B%22http.route%22%3A%22%2Forders%22%7D"
		st, m := apitest.GetJSON(t, srv, path)
		data := apitest.Arr(t, "data", envelopeOK(t, "legacy search", st, m))
		if len(data) != 1 {
			t.Fatalf("want 1 trace, got %d", len(data))
		}
		checkTransformTraceData(t, data[0].(map[string]any))
		// The compare page fetches several traces by id.
		st, m = apitest.GetJSON(t, srv, "/api/traces?traceID="+apitest.TraceA+"&traceID="+apitest.TraceC)
		apitest.Eq(t, "compare traces", len(apitest.Arr(t, "data", envelopeOK(t, "compare", st, m))), 2)
	})

	t.Run("monitor tab: services, server operations, RED metrics", func(t *testing.T) {
		st, m := apitest.GetJSON(t, srv, "/api/services")
		if len(apitest.Arr(t, "data", envelopeOK(t, "services", st, m))) == 0 {
			t.Fatal("Grafana's health check needs a non-empty service list")
		}
		// fetchServiceServerOps: query {service, spanKind:'server'}
		st, m = apitest.GetJSON(t, srv, "/api/operations?service=frontend&spanKind=server")
		for _, o := range apitest.Arr(t, "data", envelopeOK(t, "server ops", st, m)) {
			apitest.Eq(t, "spanKind", o.(map[string]any)["spanKind"], "server")
		}
		// ServicesView: {quantile:0.95, endTs, lookback, step:60000,
		// ratePer:600000, spanKind}; fetchMetrics prefixes service=...
		base := "endTs=" + strconv.FormatInt(nowMS, 10) + "&lookback=3600000"
		tail := "&ratePer=600000&spanKind=server&step=60000"
		all := []struct{ metric, query, name string }{
			{"latencies", base + "&quantile=0.5" + tail, "service_latencies"},
			{"latencies", base + "&quantile=0.75" + tail, "service_latencies"},
			{"latencies", base + "&quantile=0.95" + tail, "service_latencies"},
			{"calls", base + "&quantile=0.95" + tail, "service_call_rate"},
			{"errors", base + "&quantile=0.95" + tail, "service_error_rate"},
			{"latencies", "endTs=" + strconv.FormatInt(nowMS, 10) + "&groupByOperation=true&lookback=3600000&quantile=0.95" + tail, "service_operation_latencies"},
			{"calls", "endTs=" + strconv.FormatInt(nowMS, 10) + "&groupByOperation=true&lookback=3600000&quantile=0.95" + tail, "service_operation_call_rate"},
			{"errors", "endTs=" + strconv.FormatInt(nowMS, 10) + "&groupByOperation=true&lookback=3600000&quantile=0.95" + tail, "service_operation_error_rate"},
		}
		for _, c := range all {
			st, m := apitest.GetJSON(t, srv, "/api/metrics/"+c.metric+"?service=frontend&"+c.query)
			ms := family(t, st, m, c.name)
			if len(ms) == 0 {
				t.Fatalf("%s: no series", c.name)
			}
			for _, x := range ms {
				series := x.(map[string]any)
				labels := apitest.Arr(t, "labels", series["labels"])
				// fetchServiceMetricsDone: serviceName = metrics[0].labels[0].value
				apitest.Eq(t, c.name+" labels[0]", labels[0], map[string]any{"name": "service_name", "value": "frontend"})
				if c.name[:17] == "service_operation" {
					// fetchOpsMetricsDone looks for the label named "operation".
					if len(labels) != 2 || labels[1].(map[string]any)["name"] != "operation" {
						t.Errorf("%s labels %v lack operation", c.name, labels)
					}
				}
				pts := points(t, series)
				if len(pts) != 61 {
					t.Errorf("%s: %d points, want 61 (1h / 1m + 1)", c.name, len(pts))
				}
			}
		}
	})

	t.Run("system architecture: dependencies", func(t *testing.T) {
		// fetchDependencies(endTs = Date.now(), lookback = 1 week in ms)
		st, m := apitest.GetJSON(t, srv, "/api/dependencies?endTs="+strconv.FormatInt(nowMS, 10)+"&lookback=604800000")
		links := apitest.Arr(t, "data", envelopeOK(t, "dependencies", st, m))
		if len(links) != 1 {
			t.Fatalf("links %v", links)
		}
		apitest.WantKeys(t, "link", links[0], "parent", "child", "callCount")
	})
}

// checkTransformTraceData applies the checks of jaeger-ui's
// transformTraceData: a traceID; spans with non-zero startTime (others are
// dropped); processID resolving in processes; parents found through the
// first CHILD_OF/FOLLOWS_FROM reference that resolves; one true root.
func checkTransformTraceData(t *testing.T, tr map[string]any) {
	t.Helper()
	if id, _ := tr["traceID"].(string); id == "" {
		t.Fatal("transformTraceData returns null without traceID")
	}
	procs := tr["processes"].(map[string]any)
	spans := apitest.Arr(t, "spans", tr["spans"])
	byID := map[string]map[string]any{}
	for _, x := range spans {
		s := x.(map[string]any)
		if st, _ := s["startTime"].(float64); st == 0 {
			t.Errorf("span %v has no startTime: the UI drops it", s["spanID"])
		}
		if _, ok := procs[s["processID"].(string)]; !ok {
			t.Errorf("span %v: processID %v not in processes (UI shows unknown-service)", s["spanID"], s["processID"])
		}
		byID[s["spanID"].(string)] = s
	}
	roots, orphans := 0, 0
	for _, s := range byID {
		refs := apitest.Arr(t, "references", s["references"])
		found := false
		for _, r := range refs {
			rm := r.(map[string]any)
			if rt := rm["refType"]; rt != "CHILD_OF" && rt != "FOLLOWS_FROM" {
				t.Errorf("unknown refType %v", rt)
			}
			if _, ok := byID[rm["spanID"].(string)]; ok {
				found = true
				break
			}
		}
		if !found {
			roots++
			if len(refs) > 0 {
				orphans++
			}
		}
	}
	// Trace A has one root; trace B has its root plus one orphan ("ack"),
	// which the UI counts in orphanSpanCount and our warning explains.
	if roots-orphans != 1 {
		t.Errorf("trace %v: %d true roots, want 1", tr["traceID"], roots-orphans)
	}
}
