package jaeger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/tracedx/tracedx/internal/api/jaeger/jaegermetrics"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// The metrics response types live in jaegermetrics so that the RED
// component can produce them directly; these aliases keep this package's
// API whole.
type (
	MetricFamily = jaegermetrics.MetricFamily
	Metric       = jaegermetrics.Metric
	Label        = jaegermetrics.Label
	MetricPoint  = jaegermetrics.MetricPoint
	GaugeValue   = jaegermetrics.GaugeValue
)

// MetricsQuery is a parsed /api/metrics request.
type MetricsQuery struct {
	Services         []string
	SpanKinds        []model.SpanKind
	GroupByOperation bool
	End              time.Time
	Lookback         time.Duration
	Step             time.Duration
	RatePer          time.Duration
	// Quantile in [0,1], latencies only.
	Quantile float64
}

// MetricsSource answers the RED queries of the Monitor tab. A span-metrics
// component can implement it from pre-aggregated series; ScanMetrics is the
// always-correct fallback.
type MetricsSource interface {
	// Latencies: the quantile of span duration in milliseconds.
	Latencies(ctx context.Context, q MetricsQuery) (*MetricFamily, error)
	// CallRates: spans per second.
	CallRates(ctx context.Context, q MetricsQuery) (*MetricFamily, error)
	// ErrorRates: the share of spans with status ERROR, 0..1.
	ErrorRates(ctx context.Context, q MetricsQuery) (*MetricFamily, error)
}

// maxPoints per series, as Prometheus limits range queries.
const maxPoints = 11000

// ScanMetrics computes RED series by scanning the traces in the window. At
// each step t the value covers spans starting in (t-RatePer, t], like a
// Prometheus rate over RatePer evaluated at t.
type ScanMetrics struct {
	Store store.Store
	// MaxTraces bounds the scan (0: no bound).
	MaxTraces int
}

type seriesKey struct{ service, operation string }

type sample struct {
	t   uint64 // span start, unix ns
	dur uint64
	err bool
}

func (m *ScanMetrics) collect(ctx context.Context, q MetricsQuery) (map[seriesKey][]sample, []time.Time, error) {
	steps, err := stepTimes(q)
	if err != nil {
		return nil, nil, err
	}
	first := steps[0].Add(-q.RatePer)
	sq := store.Query{
		Range: store.TimeRange{Start: uint64(max(first.UnixNano(), 1)), End: uint64(q.End.UnixNano()) + 1},
		Kinds: q.SpanKinds,
		Limit: m.MaxTraces,
	}
	if len(q.Services) == 1 {
		sq.Service = q.Services[0]
	}
	svcs := map[string]bool{}
	for _, s := range q.Services {
		svcs[s] = true
	}
	kinds := map[model.SpanKind]bool{}
	for _, k := range q.SpanKinds {
		kinds[k] = true
	}
	series := map[seriesKey][]sample{}
	err = m.Store.ScanTraces(ctx, sq, func(spans []model.Span) error {
		for i := range spans {
			s := &spans[i]
			if !svcs[s.Service] || (len(kinds) > 0 && !kinds[s.Kind]) {
				continue
			}
			if s.StartUnixNano < sq.Range.Start || s.StartUnixNano >= sq.Range.End {
				continue
			}
			k := seriesKey{service: s.Service}
			if q.GroupByOperation {
				k.operation = s.Name
			}
			series[k] = append(series[k], sample{t: s.StartUnixNano, dur: s.DurationNano(), err: s.StatusCode == model.StatusError})
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("scanning traces for metrics: %w", err)
	}
	for k := range series {
		ss := series[k]
		sort.Slice(ss, func(i, j int) bool { return ss[i].t < ss[j].t })
	}
	return series, steps, nil
}

func stepTimes(q MetricsQuery) ([]time.Time, error) {
	if q.Step <= 0 || q.Lookback <= 0 || q.RatePer <= 0 {
		return nil, badf("step, lookback and ratePer must be positive")
	}
	if n := q.Lookback / q.Step; n >= maxPoints {
		return nil, badf("lookback/step gives %d points, more than the maximum of %d per series; increase step", n+1, maxPoints)
	}
	start := q.End.Add(-q.Lookback)
	var out []time.Time
	for t := start; !t.After(q.End); t = t.Add(q.Step) {
		out = append(out, t)
	}
	return out, nil
}

// window returns the samples with t in (at-ratePer, at].
func window(ss []sample, at time.Time, ratePer time.Duration) []sample {
	hi := uint64(at.UnixNano())
	lo := uint64(max(at.Add(-ratePer).UnixNano(), 0))
	i := sort.Search(len(ss), func(i int) bool { return ss[i].t > lo })
	j := sort.Search(len(ss), func(i int) bool { return ss[i].t > hi })
	return ss[i:j]
}

func (m *ScanMetrics) family(ctx context.Context, q MetricsQuery, name, help string, value func(w []sample) *float64) (*MetricFamily, error) {
	series, steps, err := m.collect(ctx, q)
	if err != nil {
		return nil, err
	}
	if q.GroupByOperation {
		name = "service_operation_" + name
		help += " & operation"
	} else {
		name = "service_" + name
	}
	fam := &MetricFamily{Name: name, Type: "GAUGE", Help: help, Metrics: []Metric{}}
	keys := make([]seriesKey, 0, len(series))
	for k := range series {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].service != keys[j].service {
			return keys[i].service < keys[j].service
		}
		return keys[i].operation < keys[j].operation
	})
	for _, k := range keys {
		mt := Metric{Labels: []Label{{Name: "service_name", Value: k.service}}, MetricPoints: make([]MetricPoint, 0, len(steps))}
		if q.GroupByOperation {
			mt.Labels = append(mt.Labels, Label{Name: "operation", Value: k.operation})
		}
		for _, t := range steps {
			mt.MetricPoints = append(mt.MetricPoints, MetricPoint{
				GaugeValue: GaugeValue{DoubleValue: value(window(series[k], t, q.RatePer))},
				Timestamp:  t.UTC().Format(time.RFC3339Nano),
			})
		}
		fam.Metrics = append(fam.Metrics, mt)
	}
	return fam, nil
}

// Latencies implements MetricsSource.
func (m *ScanMetrics) Latencies(ctx context.Context, q MetricsQuery) (*MetricFamily, error) {
	help := fmt.Sprintf("%.2fth quantile latency, grouped by service", q.Quantile)
	return m.family(ctx, q, "latencies", help, func(w []sample) *float64 {
		if len(w) == 0 {
			return nil
		}
		d := make([]float64, len(w))
		for i := range w {
			d[i] = float64(w[i].dur) / 1e6
		}
		sort.Float64s(d)
		v := quantile(d, q.Quantile)
		return &v
	})
}

// CallRates implements MetricsSource.
func (m *ScanMetrics) CallRates(ctx context.Context, q MetricsQuery) (*MetricFamily, error) {
	return m.family(ctx, q, "call_rate", "calls/sec, grouped by service", func(w []sample) *float64 {
		v := float64(len(w)) / q.RatePer.Seconds()
		return &v
	})
}

// ErrorRates implements MetricsSource.
func (m *ScanMetrics) ErrorRates(ctx context.Context, q MetricsQuery) (*MetricFamily, error) {
	help := "error rate, computed as a fraction of errors/sec over calls/sec, grouped by service"
	return m.family(ctx, q, "error_rate", help, func(w []sample) *float64 {
		if len(w) == 0 {
			return nil
		}
		n := 0
		for i := range w {
			if w[i].err {
				n++
			}
		}
		v := float64(n) / float64(len(w))
		return &v
	})
}

// quantile of sorted values with linear interpolation between closest ranks.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 1 {
		return sorted[0]
	}
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	frac := pos - float64(lo)
	return sorted[lo] + (sorted[hi]-sorted[lo])*frac
}

func (h *handler) parseMetricsQuery(r *http.Request, metric string) (MetricsQuery, error) {
	q := r.URL.Query()
	mq := MetricsQuery{}
	for _, s := range q["service"] {
		if s != "" {
			mq.Services = append(mq.Services, s)
		}
	}
	if len(mq.Services) == 0 {
		return mq, badParam("service", errors.New("please provide at least one service name"))
	}
	if v := q.Get("groupByOperation"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return mq, badParam("groupByOperation", fmt.Errorf("want true or false, got %q", v))
		}
		mq.GroupByOperation = b
	}
	if kinds, ok := q["spanKind"]; ok {
		for _, v := range kinds {
			k, set, err := parseKindFilter("spanKind", v)
			if err != nil {
				return mq, err
			}
			if set {
				mq.SpanKinds = append(mq.SpanKinds, k)
			}
		}
	} else {
		mq.SpanKinds = []model.SpanKind{model.KindServer}
	}
	var err error
	if mq.End, err = parseMillisTime(r, "endTs", h.opts.Now()); err != nil {
		return mq, err
	}
	if mq.Lookback, err = parseMillisDuration(r, "lookback", time.Hour); err != nil {
		return mq, err
	}
	if mq.Step, err = parseMillisDuration(r, "step", 5*time.Second); err != nil {
		return mq, err
	}
	if mq.RatePer, err = parseMillisDuration(r, "ratePer", 10*time.Minute); err != nil {
		return mq, err
	}
	if metric == "latencies" {
		v := q.Get("quantile")
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 || math.IsNaN(f) {
			return mq, badParam("quantile", fmt.Errorf("want a number between 0 and 1, got %q", v))
		}
		mq.Quantile = f
	}
	return mq, nil
}

func (h *handler) metrics(w http.ResponseWriter, r *http.Request) {
	metric := r.PathValue("metric")
	var get func(context.Context, MetricsQuery) (*MetricFamily, error)
	switch metric {
	case "latencies":
		get = h.opts.Metrics.Latencies
	case "calls":
		get = h.opts.Metrics.CallRates
	case "errors":
		get = h.opts.Metrics.ErrorRates
	default:
		writeJSON(w, r, http.StatusNotFound, envelope{Errors: []apiError{{Code: http.StatusNotFound,
			Msg: fmt.Sprintf("unknown metric %q: want latencies, calls or errors", metric)}}})
		return
	}
	mq, err := h.parseMetricsQuery(r, metric)
	if err != nil {
		h.writeErr(w, r, err)
		return
	}
	fam, err := get(r.Context(), mq)
	if err != nil {
		h.writeErr(w, r, fmt.Errorf("computing %s metrics: %w", metric, err))
		return
	}
	// Not wrapped in the envelope: Jaeger writes the MetricFamily itself.
	writeJSON(w, r, http.StatusOK, fam)
}

// MetricsFunc adapts one function to MetricsSource, for wiring a RED
// component: kind is "latencies", "calls" or "errors".
type MetricsFunc func(ctx context.Context, kind string, q MetricsQuery) (*MetricFamily, error)

// Latencies implements MetricsSource.
func (f MetricsFunc) Latencies(ctx context.Context, q MetricsQuery) (*MetricFamily, error) {
	return f(ctx, "latencies", q)
}

// CallRates implements MetricsSource.
func (f MetricsFunc) CallRates(ctx context.Context, q MetricsQuery) (*MetricFamily, error) {
	return f(ctx, "calls", q)
}

// ErrorRates implements MetricsSource.
func (f MetricsFunc) ErrorRates(ctx context.Context, q MetricsQuery) (*MetricFamily, error) {
	return f(ctx, "errors", q)
}
