package jaeger

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/model"
)

// metricsQuery is what the Monitor tab sends (query-string sorts keys).
func metricsQuery(metric string, extra string) string {
	return "/api/metrics/" + metric + "?service=frontend&endTs=" + itoa(apitest.Now.UnixMilli()) +
		"&lookback=600000" + extra + "&ratePer=600000&spanKind=server&step=60000"
}

// points returns the values of one series by timestamp; nil for null.
func points(t *testing.T, series map[string]any) map[time.Time]*float64 {
	t.Helper()
	out := map[time.Time]*float64{}
	for _, p := range apitest.Arr(t, "metricPoints", series["metricPoints"]) {
		pm := apitest.WantKeys(t, "point", p, "gaugeValue", "timestamp")
		gv := apitest.WantKeys(t, "gaugeValue", pm["gaugeValue"], "doubleValue")
		ts, err := time.Parse(time.RFC3339Nano, pm["timestamp"].(string))
		if err != nil {
			t.Fatalf("timestamp %v: %v", pm["timestamp"], err)
		}
		if gv["doubleValue"] == nil {
			out[ts] = nil
			continue
		}
		f := gv["doubleValue"].(float64)
		out[ts] = &f
	}
	return out
}

func family(t *testing.T, st int, m map[string]any, name string) []any {
	t.Helper()
	if st != http.StatusOK {
		t.Fatalf("%s: status %d: %v", name, st, m)
	}
	f := apitest.WantKeys(t, "family", m, "name", "type", "help", "metrics")
	apitest.Eq(t, "name", f["name"], name)
	apitest.Eq(t, "type", f["type"], "GAUGE")
	return apitest.Arr(t, "metrics", f["metrics"])
}

func at(min int) time.Time { return apitest.T0.Add(time.Duration(min) * time.Minute) }

func near(t *testing.T, what string, got *float64, want float64) {
	t.Helper()
	if got == nil {
		t.Errorf("%s = null, want %v", what, want)
		return
	}
	if math.Abs(*got-want) > 1e-9 {
		t.Errorf("%s = %v, want %v", what, *got, want)
	}
}

func TestMetricsCalls(t *testing.T) {
	srv := newServer(t, Options{})
	st, m := apitest.GetJSON(t, srv, metricsQuery("calls", ""))
	ms := family(t, st, m, "service_call_rate")
	if len(ms) != 1 {
		t.Fatalf("series: %v", ms)
	}
	s := apitest.WantKeys(t, "series", ms[0], "labels", "metricPoints")
	apitest.Eq(t, "labels", s["labels"], []any{map[string]any{"name": "service_name", "value": "frontend"}})
	p := points(t, s)
	if len(p) != 11 {
		t.Errorf("want 11 points (lookback/step + 1), got %d", len(p))
	}
	near(t, "calls at 9:55", p[at(-5)], 0)
	near(t, "calls at 10:00 (span starting exactly then counts)", p[at(0)], 1.0/600)
	near(t, "calls at 10:02", p[at(2)], 2.0/600)
	near(t, "calls at 10:05", p[at(5)], 2.0/600)
}

func TestMetricsLatenciesGroupedByOperation(t *testing.T) {
	srv := newServer(t, Options{})
	st, m := apitest.GetJSON(t, srv, metricsQuery("latencies", "&groupByOperation=true&quantile=0.95"))
	ms := family(t, st, m, "service_operation_latencies")
	if len(ms) != 2 {
		t.Fatalf("series: %v", ms)
	}
	wantOps := []string{"GET /health", "GET /orders"}
	wantMS := []float64{2, 120}
	for i, x := range ms {
		s := x.(map[string]any)
		apitest.Eq(t, "labels", s["labels"], []any{
			map[string]any{"name": "service_name", "value": "frontend"},
			map[string]any{"name": "operation", "value": wantOps[i]},
		})
		p := points(t, s)
		near(t, wantOps[i]+" latency at 10:05", p[at(5)], wantMS[i])
		if p[at(-5)] != nil {
			t.Errorf("%s: a step without spans must be null, got %v", wantOps[i], *p[at(-5)])
		}
	}

	// Ungrouped, p50 over {2ms, 120ms} interpolates to 61 ms.
	st, m = apitest.GetJSON(t, srv, metricsQuery("latencies", "&quantile=0.5"))
	ms = family(t, st, m, "service_latencies")
	near(t, "p50 at 10:05", points(t, ms[0].(map[string]any))[at(5)], 61)
}

func TestMetricsErrors(t *testing.T) {
	srv := newServer(t, Options{})
	st, m := apitest.GetJSON(t, srv, metricsQuery("errors", ""))
	ms := family(t, st, m, "service_error_rate")
	p := points(t, ms[0].(map[string]any))
	near(t, "error rate at 10:00", p[at(0)], 1)
	near(t, "error rate at 10:05", p[at(5)], 0.5)
	if p[at(-5)] != nil {
		t.Error("error rate without calls must be null")
	}
	// The worker's consumer span is not a server span: nothing for it
	// with the default kind, a series with spanKind=consumer.
	st, m = apitest.GetJSON(t, srv, "/api/metrics/errors?service=worker&endTs="+itoa(apitest.Now.UnixMilli())+"&lookback=600000&step=60000")
	apitest.Eq(t, "worker server series", family(t, st, m, "service_error_rate"), []any{})
	st, m = apitest.GetJSON(t, srv, "/api/metrics/errors?service=worker&spanKind=consumer&endTs="+itoa(apitest.Now.UnixMilli())+"&lookback=600000&step=60000")
	ms = family(t, st, m, "service_error_rate")
	near(t, "worker error rate", points(t, ms[0].(map[string]any))[at(5)], 0)
}

func TestMetricsBadParams(t *testing.T) {
	srv := newServer(t, Options{})
	for what, path := range map[string]string{
		"no service":   "/api/metrics/calls",
		"no quantile":  metricsQuery("latencies", ""),
		"bad quantile": metricsQuery("latencies", "&quantile=2"),
		"bad kind":     "/api/metrics/calls?service=a&spanKind=up",
		"bad step":     "/api/metrics/calls?service=a&step=fast",
		"bad group":    "/api/metrics/calls?service=a&groupByOperation=maybe",
		"too many pts": "/api/metrics/calls?service=a&lookback=86400000&step=1",
	} {
		st, m := apitest.GetJSON(t, srv, path)
		envelopeErr(t, what, st, m, http.StatusBadRequest)
	}
	st, m := apitest.GetJSON(t, srv, "/api/metrics/throughput?service=a")
	envelopeErr(t, "unknown metric", st, m, http.StatusNotFound)
}

func TestMetricsSourceIsPluggable(t *testing.T) {
	var got MetricsQuery
	var kinds []string
	one := 1.5
	srv := newServer(t, Options{Metrics: MetricsFunc(func(_ context.Context, kind string, q MetricsQuery) (*MetricFamily, error) {
		got, kinds = q, append(kinds, kind)
		return &MetricFamily{Name: "service_call_rate", Type: "GAUGE", Metrics: []Metric{{
			Labels:       []Label{{Name: "service_name", Value: "x"}},
			MetricPoints: []MetricPoint{{GaugeValue: GaugeValue{DoubleValue: &one}, Timestamp: "2026-01-15T10:00:00Z"}},
		}}}, nil
	})})
	st, m := apitest.GetJSON(t, srv, "/api/metrics/calls?service=x&service=y&spanKind=client&spanKind=producer&groupByOperation=1&endTs=1768471200000&lookback=120000&step=30000&ratePer=60000")
	ms := family(t, st, m, "service_call_rate")
	near(t, "value", points(t, ms[0].(map[string]any))[apitest.T0], 1.5)
	apitest.Eq(t, "kind", kinds, []string{"calls"})
	apitest.Eq(t, "parsed query", got, MetricsQuery{
		Services: []string{"x", "y"}, SpanKinds: []model.SpanKind{model.KindClient, model.KindProducer}, GroupByOperation: true,
		End: time.UnixMilli(1768471200000), Lookback: 2 * time.Minute, Step: 30 * time.Second, RatePer: time.Minute,
	})
}

func TestSourceErrors(t *testing.T) {
	srv := newServer(t, Options{
		Metrics: MetricsFunc(func(context.Context, string, MetricsQuery) (*MetricFamily, error) {
			return nil, BadRequest(errors.New("step below the 1m resolution"))
		}),
		Dependencies: DependencyFunc(func(context.Context, time.Time, time.Duration) ([]DependencyLink, error) {
			return nil, errors.New("graph unavailable")
		}),
	})
	st, m := apitest.GetJSON(t, srv, "/api/metrics/calls?service=a")
	if msg := envelopeErr(t, "source bad request", st, m, http.StatusBadRequest); !strings.Contains(msg, "1m resolution") {
		t.Errorf("message %q", msg)
	}
	st, m = apitest.GetJSON(t, srv, "/api/dependencies")
	envelopeErr(t, "source failure", st, m, http.StatusInternalServerError)
}
