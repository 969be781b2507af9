package red

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/api/jaeger/jaegermetrics"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/red/tsdb"
)

// JaegerParams are the query parameters of Jaeger's
// /api/metrics/{latencies|calls|errors}.
type JaegerParams struct {
	Services         []string
	SpanKinds        []model.SpanKind // default: server
	GroupByOperation bool
	EndTs            time.Time
	Lookback         time.Duration // default 1h
	Step             time.Duration // default 1m (our resolution; smaller rounds up)
	RatePer          time.Duration // trailing window of each point, default 10m
	Quantile         float64       // latencies only, 0 < q ≤ 1
}

// ParseJaegerParams reads Jaeger's query string (times and durations in
// milliseconds, services and span kinds repeatable).
func ParseJaegerParams(v url.Values, now time.Time) (JaegerParams, error) {
	p := JaegerParams{EndTs: now, Lookback: time.Hour, Step: time.Minute, RatePer: 10 * time.Minute}
	p.Services = append(p.Services, v["service"]...)
	for _, s := range v["spanKind"] {
		k, ok := model.ParseSpanKind(s)
		if !ok {
			return p, fmt.Errorf("%w: unknown spanKind %q", ErrBadQuery, s)
		}
		p.SpanKinds = append(p.SpanKinds, k)
	}
	if s := v.Get("groupByOperation"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return p, fmt.Errorf("%w: groupByOperation must be true or false", ErrBadQuery)
		}
		p.GroupByOperation = b
	}
	ms := func(name string, dst *time.Duration) error {
		s := v.Get(name)
		if s == "" {
			return nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("%w: %s must be a positive number of milliseconds", ErrBadQuery, name)
		}
		*dst = time.Duration(n) * time.Millisecond
		return nil
	}
	if s := v.Get("endTs"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return p, fmt.Errorf("%w: endTs must be unix milliseconds", ErrBadQuery)
		}
		p.EndTs = time.UnixMilli(n)
	}
	for name, dst := range map[string]*time.Duration{"lookback": &p.Lookback, "step": &p.Step, "ratePer": &p.RatePer} {
		if err := ms(name, dst); err != nil {
			return p, err
		}
	}
	if s := v.Get("quantile"); s != "" {
		q, err := strconv.ParseFloat(s, 64)
		if err != nil || q <= 0 || q > 1 {
			return p, fmt.Errorf("%w: quantile must be in (0, 1]", ErrBadQuery)
		}
		p.Quantile = q
	}
	return p, nil
}

// Jaeger metric kinds (the path segment).
const (
	JaegerLatencies = "latencies"
	JaegerCalls     = "calls"
	JaegerErrors    = "errors"
)

// JaegerMetrics answers /api/metrics/{kind}: latencies (the quantile in ms),
// calls (requests per second) or errors (error share 0..1), one point per
// step over the lookback, each over a trailing RatePer window — as Jaeger's
// Prometheus reader evaluates rate(…[ratePer]), except that a call rate is
// averaged over the part of the window covered by data (Metrics.covered),
// as every other rate. Points without calls are null in latencies and
// errors (Prometheus would give NaN).
func (m *Metrics) JaegerMetrics(ctx context.Context, kind string, p JaegerParams) (*jaegermetrics.MetricFamily, error) {
	var fam jaegermetrics.MetricFamily
	fam.Type = "GAUGE"
	scope, scopeHelp := "service", "service"
	if p.GroupByOperation {
		scope, scopeHelp = "service_operation", "service & operation"
	}
	switch kind {
	case JaegerLatencies:
		if p.Quantile <= 0 || p.Quantile > 1 {
			return nil, fmt.Errorf("%w: quantile must be in (0, 1]", ErrBadQuery)
		}
		fam.Name = scope + "_latencies"
		fam.Help = fmt.Sprintf("%gth quantile latency, grouped by %s", p.Quantile, scopeHelp)
	case JaegerCalls:
		fam.Name = scope + "_call_rate"
		fam.Help = "calls/sec, grouped by " + scopeHelp
	case JaegerErrors:
		fam.Name = scope + "_error_rate"
		fam.Help = "error rate, computed as a fraction of errors/sec over calls/sec, grouped by " + scopeHelp
	default:
		return nil, fmt.Errorf("%w: unknown metric %q (latencies, calls, errors)", ErrBadQuery, kind)
	}
	if p.Lookback <= 0 {
		p.Lookback = time.Hour
	}
	stepMin := int64((p.Step + time.Minute - 1) / time.Minute)
	if stepMin < 1 {
		stepMin = 1
	}
	winMin := int64((p.RatePer + time.Minute - 1) / time.Minute)
	if winMin < 1 {
		winMin = 1
	}
	endMin := tsdb.UnixMinute(p.EndTs) + 1 // points include the minute holding endTs
	n := int(int64((p.Lookback+time.Minute-1)/time.Minute) / stepMin)
	if n < 1 {
		n = 1
	}
	if n > MaxPoints {
		return nil, fmt.Errorf("%w: lookback/step gives more than %d points", ErrBadQuery, MaxPoints)
	}
	firstEnd := endMin - int64(n-1)*stepMin
	w := window{startMin: firstEnd - winMin, stepMin: 1}
	w.endMin, w.n = endMin, int(endMin-(firstEnd-winMin))
	kinds := p.SpanKinds
	if len(kinds) == 0 {
		kinds = []model.SpanKind{model.KindServer}
	}
	svc := map[string]bool{}
	for _, s := range p.Services {
		svc[s] = true
	}
	match := func(k tsdb.Key) bool {
		if len(svc) > 0 && !svc[k.A] {
			return false
		}
		for _, kd := range kinds {
			if k.K == uint8(kd) {
				return true
			}
		}
		return false
	}
	filter := tsdb.Part{A: p.Services}
	for _, kd := range kinds {
		filter.K = append(filter.K, uint8(kd))
	}
	groups, cov, err := m.collect(ctx, w, filter, match, func(k tsdb.Key) groupKey {
		if p.GroupByOperation {
			return groupKey{k.A, k.B, -1}
		}
		return groupKey{k.A, "", -1}
	})
	if err != nil && len(groups) == 0 {
		return nil, err
	}
	keys := make([]groupKey, 0, len(groups))
	for g := range groups {
		keys = append(keys, g)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].service != keys[j].service {
			return keys[i].service < keys[j].service
		}
		return keys[i].op < keys[j].op
	})
	fam.Metrics = make([]jaegermetrics.Metric, 0, len(keys))
	for _, g := range keys {
		mins := groups[g]
		jm := jaegermetrics.Metric{Labels: []jaegermetrics.Label{{Name: "service_name", Value: g.service}}}
		if p.GroupByOperation {
			jm.Labels = append(jm.Labels, jaegermetrics.Label{Name: "operation", Value: g.op})
		}
		for i := 0; i < n; i++ {
			pe := firstEnd + int64(i)*stepMin // exclusive end minute of this point's window
			var a tsdb.Agg
			for mi := pe - winMin; mi < pe; mi++ {
				if x := mins[mi-w.startMin]; x != nil {
					a.Merge(x)
				}
			}
			// A step without calls has no latency or error share: its
			// value is null (the UI draws a gap), the step still listed.
			var gv jaegermetrics.GaugeValue
			switch {
			case kind == JaegerCalls:
				v := 0.0
				if secs := m.covered(cov, pe-winMin, pe); secs > 0 {
					v = tsdb.Round6(float64(a.Count) / secs)
				}
				gv = jaegermetrics.Gauge(v)
			case a.Count == 0:
			case kind == JaegerErrors:
				gv = jaegermetrics.Gauge(a.ErrorRate())
			case kind == JaegerLatencies:
				gv = jaegermetrics.Gauge(a.QuantileMS(0, p.Quantile))
			}
			ts := time.Unix(pe*60, 0).UTC()
			if ts.After(p.EndTs) {
				ts = p.EndTs.UTC()
			}
			jm.MetricPoints = append(jm.MetricPoints, jaegermetrics.MetricPoint{GaugeValue: gv, Timestamp: ts.Format(time.RFC3339Nano)})
		}
		if jm.MetricPoints == nil {
			jm.MetricPoints = []jaegermetrics.MetricPoint{}
		}
		fam.Metrics = append(fam.Metrics, jm)
	}
	return &fam, err
}

// JaegerMetricsFromQuery is ParseJaegerParams + JaegerMetrics for a
// handler: kind is the last path segment.
func (m *Metrics) JaegerMetricsFromQuery(ctx context.Context, kind string, v url.Values) (*jaegermetrics.MetricFamily, error) {
	p, err := ParseJaegerParams(v, m.now())
	if err != nil {
		return nil, err
	}
	return m.JaegerMetrics(ctx, strings.TrimSpace(kind), p)
}
