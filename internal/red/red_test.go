package red

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tracedx/tracedx/internal/api/jaeger"
	"github.com/tracedx/tracedx/internal/api/jaeger/jaegermetrics"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

// workload is a generated stream with known properties.
type workload struct {
	spans []model.Span
	durs  map[string][]float64 // ms per service/op, for exact percentiles
}

var seq uint64

func mkSpan(service, op string, kind model.SpanKind, start time.Time, dur time.Duration, failed bool) model.Span {
	seq++
	var tid model.TraceID
	binary.BigEndian.PutUint64(tid[8:], seq)
	tid[0] = 1
	var sid model.SpanID
	binary.BigEndian.PutUint64(sid[:], seq)
	sp := model.Span{TraceID: tid, SpanID: sid, Name: op, Kind: kind, Service: service,
		StartUnixNano: uint64(start.UnixNano()), EndUnixNano: uint64(start.Add(dur).UnixNano())}
	if failed {
		sp.StatusCode = model.StatusError
	}
	return sp
}

// genWorkload: for each of `minutes` minutes before base, perMin spans of
// api "GET /users" (server, lognormal ~20 ms, errShare errors) and perMin/2
// of api "POST /orders" (server, ~100 ms, no errors), plus perMin client
// spans of api calling db (which must not count as api's entry traffic).
func genWorkload(base time.Time, minutes, perMin int, errShare float64, seed uint64) *workload {
	r := rand.New(rand.NewPCG(seed, seed+1))
	w := &workload{durs: map[string][]float64{}}
	for m := minutes; m >= 1; m-- {
		t0 := base.Add(-time.Duration(m) * time.Minute)
		for i := 0; i < perMin; i++ {
			st := t0.Add(time.Duration(i) * time.Minute / time.Duration(perMin))
			d := time.Duration(math.Exp(r.NormFloat64()*0.5+math.Log(20)) * float64(time.Millisecond))
			w.spans = append(w.spans, mkSpan("api", "GET /users", model.KindServer, st, d, r.Float64() < errShare))
			w.durs["api/GET /users"] = append(w.durs["api/GET /users"], float64(d)/1e6)
			w.spans = append(w.spans, mkSpan("api", "SELECT", model.KindClient, st, d/2, false))
			if i%2 == 0 {
				d2 := time.Duration(math.Exp(r.NormFloat64()*0.3+math.Log(100)) * float64(time.Millisecond))
				w.spans = append(w.spans, mkSpan("api", "POST /orders", model.KindServer, st, d2, false))
				w.durs["api/POST /orders"] = append(w.durs["api/POST /orders"], float64(d2)/1e6)
			}
		}
	}
	return w
}

func exactQ(v []float64, q float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[int(q*float64(len(s)-1))]
}

func within(got, want, rel float64) bool { return math.Abs(got-want) <= rel*math.Abs(want) }

func newTestMetrics(t *testing.T, dir string, now time.Time) *Metrics {
	t.Helper()
	m, err := New(Options{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.now = func() time.Time { return now }
	return m
}

func feed(m *Metrics, spans []model.Span, batch int) {
	for i := 0; i < len(spans); i += batch {
		j := min(i+batch, len(spans))
		m.Observe(spans[i:j])
	}
}

func TestQueryRatesErrorsPercentiles(t *testing.T) {
	base := time.Now().Truncate(time.Minute)
	now := base.Add(10 * time.Second)
	m := newTestMetrics(t, "", now)
	w := genWorkload(base, 10, 120, 0.1, 1)
	feed(m, w.spans, 100)

	series, err := m.Query(context.Background(), Query{Service: "api", Kind: "server", Start: base.Add(-10 * time.Minute), End: base, Step: 5 * time.Minute, GroupByOperation: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 2 {
		t.Fatalf("want 2 server operations, got %+v", series)
	}
	byOp := map[string]Series{}
	for _, s := range series {
		byOp[s.Operation] = s
		if s.Kind != "server" || len(s.Points) != 2 {
			t.Fatalf("series %s: kind %q, %d points", s.Operation, s.Kind, len(s.Points))
		}
	}
	users := byOp["GET /users"]
	var cnt, errs uint64
	for _, p := range users.Points {
		cnt += p.Count
		errs += p.Errors
		if !within(p.Rate, 2.0, 1e-9) { // 120 per minute
			t.Errorf("rate %.3f/s, want 2", p.Rate)
		}
	}
	if cnt != 1200 {
		t.Fatalf("count %d, want 1200", cnt)
	}
	if share := float64(errs) / float64(cnt); math.Abs(share-0.1) > 0.03 {
		t.Errorf("error share %.3f, want ≈0.1", share)
	}
	whole, err := m.Operations(context.Background(), "api", "server", base.Add(-10*time.Minute), base, ByP95, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(whole) != 2 || whole[0].Operation != "POST /orders" {
		t.Fatalf("operations by p95: %+v", whole)
	}
	for _, o := range whole {
		d := w.durs["api/"+o.Operation]
		for _, c := range []struct {
			name      string
			got, want float64
		}{{"p50", o.P50MS, exactQ(d, 0.5)}, {"p95", o.P95MS, exactQ(d, 0.95)}, {"p99", o.P99MS, exactQ(d, 0.99)}} {
			if !within(c.got, c.want, 0.13) {
				t.Errorf("%s %s: %.2f ms, exact %.2f ms", o.Operation, c.name, c.got, c.want)
			}
		}
	}
	byErr, err := m.Operations(context.Background(), "", "", base.Add(-10*time.Minute), base, ByErrorRate, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(byErr) != 1 || byErr[0].Operation != "GET /users" {
		t.Fatalf("top by error rate: %+v", byErr)
	}
	if _, err := m.Query(context.Background(), Query{Kind: "sideways", Start: base.Add(-time.Minute), End: base}); err == nil {
		t.Error("bad kind must fail")
	}
	if _, err := m.Query(context.Background(), Query{Start: base, End: base.Add(-time.Minute)}); err == nil {
		t.Error("end before start must fail")
	}
}

func TestServicesUseEntrySpansAndSparkline(t *testing.T) {
	base := time.Now().Truncate(time.Minute)
	m := newTestMetrics(t, "", base.Add(5*time.Second))
	w := genWorkload(base, 6, 60, 0, 2)
	// A client-only service: its figures fall back to all spans.
	for i := 0; i < 30; i++ {
		w.spans = append(w.spans, mkSpan("cron", "tick", model.KindInternal, base.Add(-3*time.Minute+time.Duration(i)*time.Second), time.Millisecond, i < 3))
	}
	feed(m, w.spans, 64)
	ss, err := m.Services(context.Background(), base.Add(-6*time.Minute), base, 6)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 2 || ss[0].Service != "api" || ss[1].Service != "cron" {
		t.Fatalf("services: %+v", ss)
	}
	api, cron := ss[0], ss[1]
	// api: 60 + 30 server spans per minute; its 60 client spans excluded.
	if api.Basis != "entry" || api.Count != 6*90 || !within(api.Rate, 1.5, 1e-9) {
		t.Errorf("api summary: %+v", api.Summary)
	}
	if len(api.Sparkline) != 6 || !within(api.Sparkline[0].Rate, 1.5, 1e-9) {
		t.Errorf("api sparkline: %+v", api.Sparkline)
	}
	if cron.Basis != "all" || cron.Count != 30 || !within(cron.ErrorRate, 0.1, 1e-9) {
		t.Errorf("cron summary: %+v basis %s", cron.Summary, cron.Basis)
	}
}

func TestRestartRestoresSeries(t *testing.T) {
	dir := t.TempDir()
	base := time.Now().Truncate(time.Minute)
	now := base.Add(30 * time.Second)
	m := newTestMetrics(t, dir, now)
	m.Start(context.Background())
	w := genWorkload(base, 5, 60, 0.2, 3)
	feed(m, w.spans, 50)
	// One span in the still-open minute must survive Close too.
	m.Observe([]model.Span{mkSpan("api", "GET /users", model.KindServer, base.Add(time.Second), time.Millisecond, false)})
	q := Query{Service: "api", Kind: "server", Start: base.Add(-5 * time.Minute), End: base.Add(time.Minute), Step: 6 * time.Minute}
	before, err := m.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2 := newTestMetrics(t, dir, now)
	defer m2.Close()
	after, err := m2.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 1 || len(after) != 1 {
		t.Fatalf("before %d series, after %d", len(before), len(after))
	}
	if before[0].Points[0] != after[0].Points[0] || after[0].Points[0].Count != 5*90+1 {
		t.Fatalf("restart changed data: before %+v after %+v", before[0].Points[0], after[0].Points[0])
	}
}

// scrape returns the OpenMetrics exposition of the collector.
func scrape(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0; charset=utf-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		sb.WriteString(sc.Text())
		sb.WriteByte('\n')
	}
	return sb.String()
}

// promLine is one parsed sample line.
type promLine struct {
	name     string
	labels   map[string]string
	value    float64
	exemplar map[string]string
}

func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			break
		}
		k := strings.TrimLeft(s[:eq], ", ")
		rest := s[eq+1:]
		end := strings.Index(rest[1:], `"`) + 1
		out[k] = rest[1:end]
		s = rest[end+1:]
	}
	return out
}

func parseExposition(t *testing.T, text string) []promLine {
	t.Helper()
	var out []promLine
	for _, l := range strings.Split(text, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		var pl promLine
		main, ex, hasEx := strings.Cut(l, " # ")
		if hasEx {
			open, close := strings.IndexByte(ex, '{'), strings.IndexByte(ex, '}')
			pl.exemplar = parseLabels(ex[open+1 : close])
		}
		lb := strings.IndexByte(main, '{')
		rb := strings.LastIndexByte(main, '}')
		if lb < 0 {
			f := strings.Fields(main)
			pl.name = f[0]
			pl.value, _ = strconv.ParseFloat(f[1], 64)
		} else {
			pl.name = main[:lb]
			pl.labels = parseLabels(main[lb+1 : rb])
			v, err := strconv.ParseFloat(strings.Fields(main[rb+1:])[0], 64)
			if err != nil {
				t.Fatalf("bad line %q", l)
			}
			pl.value = v
		}
		out = append(out, pl)
	}
	return out
}

func TestPrometheusExpositionWithExemplars(t *testing.T) {
	base := time.Now().Truncate(time.Minute)
	m := newTestMetrics(t, "", base)
	w := genWorkload(base, 2, 50, 0.2, 4)
	feed(m, w.spans, 33)
	lines := parseExposition(t, scrape(t, m))
	var calls, errCalls float64
	var buckets []promLine
	var sawExemplar bool
	var count, size float64
	for _, l := range lines {
		if l.labels["service"] == "api" && l.labels["span_name"] == "GET /users" {
			if l.labels["span_kind"] != "SPAN_KIND_SERVER" {
				t.Fatalf("span_kind %q", l.labels["span_kind"])
			}
			switch l.name {
			case "traces_spanmetrics_calls_total":
				calls += l.value
				if l.labels["status_code"] == "STATUS_CODE_ERROR" {
					errCalls += l.value
				}
			case "traces_spanmetrics_latency_bucket":
				if l.labels["status_code"] == "STATUS_CODE_UNSET" {
					buckets = append(buckets, l)
				}
				if id := l.exemplar["traceID"]; id != "" {
					if _, err := model.ParseTraceID(id); err != nil || len(id) != 32 {
						t.Fatalf("exemplar trace_id %q", id)
					}
					sawExemplar = true
				}
			case "traces_spanmetrics_size_total":
				size += l.value
			case "traces_spanmetrics_latency_count":
				if l.labels["status_code"] == "STATUS_CODE_UNSET" {
					count = l.value
				}
			}
		}
	}
	if calls != 100 {
		t.Fatalf("calls_total %v, want 100", calls)
	}
	if errCalls == 0 || errCalls == calls {
		t.Fatalf("error calls %v of %v", errCalls, calls)
	}
	if !sawExemplar {
		t.Fatal("no exemplar with a traceID on latency buckets")
	}
	var wantSize uint64
	for i := range w.spans {
		if w.spans[i].Service == "api" && w.spans[i].Name == "GET /users" {
			wantSize += otlpconv.SpanSize(&w.spans[i])
		}
	}
	if size != float64(wantSize) || size < 100*40 {
		t.Fatalf("size_total %v, want %d", size, wantSize)
	}
	if len(buckets) < 10 {
		t.Fatalf("%d buckets", len(buckets))
	}
	prevLe, prevV := -1.0, -1.0
	for _, b := range buckets {
		le := math.Inf(1)
		if b.labels["le"] != "+Inf" {
			le, _ = strconv.ParseFloat(b.labels["le"], 64)
		}
		if le <= prevLe || b.value < prevV {
			t.Fatalf("buckets not monotonic at le=%v: %v after %v", le, b.value, prevV)
		}
		prevLe, prevV = le, b.value
	}
	if prevV != count || count != calls-errCalls {
		t.Fatalf("+Inf bucket %v, count %v, want %v", prevV, count, calls-errCalls)
	}
}

func TestHTTPHandlers(t *testing.T) {
	base := time.Now().Truncate(time.Minute)
	m := newTestMetrics(t, "", base.Add(time.Second))
	feed(m, genWorkload(base, 3, 60, 0.1, 5).spans, 100)
	mux := http.NewServeMux()
	m.RegisterRoutes(mux)
	get := func(path string) (int, map[string]any) {
		rr := httptest.NewRecorder()
		mux.ServeHTTP(rr, httptest.NewRequest("GET", path, nil))
		var out map[string]any
		_ = json.Unmarshal(rr.Body.Bytes(), &out)
		return rr.Code, out
	}
	start, end := strconv.FormatInt(base.Add(-3*time.Minute).Unix(), 10), strconv.FormatInt(base.Unix(), 10)
	code, out := get("/api/v1/metrics/services?start=" + start + "&end=" + end + "&points=3")
	svcs, _ := out["services"].([]any)
	if code != 200 || len(svcs) != 1 {
		t.Fatalf("services: %d %v", code, out)
	}
	s0 := svcs[0].(map[string]any)
	for _, k := range []string{"service", "rate", "error_rate", "p50_ms", "p95_ms", "p99_ms", "sparkline"} {
		if _, ok := s0[k]; !ok {
			t.Errorf("services row lacks %q: %v", k, s0)
		}
	}
	code, out = get("/api/v1/metrics/operations?service=api&sort=error_rate&start=" + start + "&end=" + end)
	if ops, _ := out["operations"].([]any); code != 200 || len(ops) != 3 {
		t.Fatalf("operations: %d %v", code, out)
	}
	code, out = get("/api/v1/metrics/series?service=api&operation=GET+/users&kind=server&step=60s&start=" + start + "&end=" + end)
	ser, _ := out["series"].([]any)
	if code != 200 || len(ser) != 1 || len(ser[0].(map[string]any)["points"].([]any)) != 3 {
		t.Fatalf("series: %d %v", code, out)
	}
	for _, bad := range []string{"/api/v1/metrics/series?start=abc", "/api/v1/metrics/series?kind=nope", "/api/v1/metrics/operations?sort=nope", "/api/v1/metrics/series?step=-5"} {
		if code, out := get(bad); code != 400 || out["error"] == nil {
			t.Errorf("%s: %d %v", bad, code, out)
		}
	}
}

// The Jaeger handler takes what JaegerMetrics returns as is: one type, no
// conversion in between (this fails to compile if the twins come back).
var _ jaeger.MetricsFunc = func(ctx context.Context, kind string, q jaeger.MetricsQuery) (*jaeger.MetricFamily, error) {
	return (*Metrics)(nil).JaegerMetrics(ctx, kind, JaegerParams{})
}

func TestJaegerMetricsShape(t *testing.T) {
	base := time.Now().Truncate(time.Minute)
	now := base.Add(-time.Second)
	// The clock is past the last span: rates are averaged up to the
	// earlier of the window end and now.
	m := newTestMetrics(t, "", base)
	feed(m, genWorkload(base, 20, 60, 0.25, 6).spans, 100)
	v := url.Values{"service": {"api"}, "spanKind": {"server"}, "endTs": {strconv.FormatInt(now.UnixMilli(), 10)},
		"lookback": {"600000"}, "step": {"60000"}, "ratePer": {"300000"}, "groupByOperation": {"true"}, "quantile": {"0.95"}}
	calls, err := m.JaegerMetricsFromQuery(context.Background(), "calls", v)
	if err != nil {
		t.Fatal(err)
	}
	if calls.Name != "service_operation_call_rate" || calls.Type != "GAUGE" || len(calls.Metrics) != 2 {
		t.Fatalf("calls family: %+v", calls)
	}
	users := calls.Metrics[0]
	if users.Labels[0] != (jaegermetrics.Label{Name: "service_name", Value: "api"}) || users.Labels[1] != (jaegermetrics.Label{Name: "operation", Value: "GET /users"}) {
		t.Fatalf("labels: %+v", users.Labels)
	}
	if len(users.MetricPoints) != 10 {
		t.Fatalf("%d points, want 10", len(users.MetricPoints))
	}
	for _, p := range users.MetricPoints {
		if !within(*p.GaugeValue.DoubleValue, 1.0, 1e-9) {
			t.Errorf("call rate %v, want 1/s", *p.GaugeValue.DoubleValue)
		}
		if _, err := time.Parse(time.RFC3339, p.Timestamp); err != nil {
			t.Errorf("timestamp %q", p.Timestamp)
		}
	}
	lat, err := m.JaegerMetricsFromQuery(context.Background(), "latencies", v)
	if err != nil {
		t.Fatal(err)
	}
	if p := *lat.Metrics[0].MetricPoints[0].GaugeValue.DoubleValue; p < 20 || p > 80 {
		t.Errorf("p95 of GET /users %v ms, want ≈45", p)
	}
	errs, err := m.JaegerMetricsFromQuery(context.Background(), "errors", v)
	if err != nil {
		t.Fatal(err)
	}
	if p := *errs.Metrics[0].MetricPoints[0].GaugeValue.DoubleValue; p < 0.1 || p > 0.4 {
		t.Errorf("error rate %v, want ≈0.25", p)
	}
	raw, _ := json.Marshal(errs)
	if !strings.Contains(string(raw), `"metricPoints":[{"gaugeValue":{"doubleValue":`) {
		t.Errorf("json shape: %s", raw[:min(len(raw), 300)])
	}
	v.Del("quantile")
	if _, err := m.JaegerMetricsFromQuery(context.Background(), "latencies", v); err == nil {
		t.Error("latencies without quantile must fail")
	}
	if _, err := m.JaegerMetricsFromQuery(context.Background(), "bogus", v); err == nil {
		t.Error("unknown metric must fail")
	}
}

// TestJaegerMetricsEmptyStepsAreNull: steps without calls stay in the
// series, 0 calls and null latency and error share, so every series of
// the Monitor tab has the same steps.
func TestJaegerMetricsEmptyStepsAreNull(t *testing.T) {
	base := time.Now().Truncate(time.Minute)
	now := base.Add(-time.Second)
	m := newTestMetrics(t, "", now)
	feed(m, genWorkload(base, 20, 60, 0.25, 6).spans, 100)
	v := url.Values{"service": {"api"}, "endTs": {strconv.FormatInt(now.UnixMilli(), 10)},
		"lookback": {"3600000"}, "step": {"60000"}, "ratePer": {"60000"}, "quantile": {"0.5"}}
	for _, kind := range []string{"calls", "latencies", "errors"} {
		fam, err := m.JaegerMetricsFromQuery(context.Background(), kind, v)
		if err != nil {
			t.Fatal(err)
		}
		if len(fam.Metrics) != 1 || len(fam.Metrics[0].MetricPoints) != 60 {
			t.Fatalf("%s: want 60 points in one series: %+v", kind, fam)
		}
		empty, full := 0, 0
		for _, p := range fam.Metrics[0].MetricPoints {
			switch {
			case p.GaugeValue.DoubleValue == nil:
				empty++
			case *p.GaugeValue.DoubleValue == 0 && kind == "calls":
				empty++
			default:
				full++
			}
		}
		if empty < 30 || full < 10 {
			t.Errorf("%s: %d empty, %d with data", kind, empty, full)
		}
		raw, _ := json.Marshal(fam)
		if kind != "calls" && !strings.Contains(string(raw), `{"gaugeValue":{"doubleValue":null},"timestamp":`) {
			t.Errorf("%s: no null step in %s", kind, raw[:min(len(raw), 300)])
		}
	}
}

func TestExemplarLabelIsConfigurable(t *testing.T) {
	base := time.Now().Truncate(time.Minute)
	m, err := New(Options{ExemplarLabel: "trace_id"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.now = func() time.Time { return base }
	feed(m, genWorkload(base, 1, 20, 0, 4).spans, 10)
	found := false
	for _, l := range parseExposition(t, scrape(t, m)) {
		if l.exemplar["traceID"] != "" {
			t.Fatalf("default label used: %+v", l)
		}
		found = found || l.exemplar["trace_id"] != ""
	}
	if !found {
		t.Fatal("no exemplar labelled trace_id")
	}
}
