package tempo

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/api/apiparam"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/traceql"
)

type metricsParams struct {
	query            *traceql.Query
	start, end, step uint64 // ns
}

// parseMetricsTime accepts unix seconds (up to 10 digits), unix
// nanoseconds (more digits), fractional seconds or RFC 3339, like Tempo.
func parseMetricsTime(s, name string) (uint64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		if len(strings.TrimLeft(s, "0")) > 10 {
			return uint64(n), nil
		}
		return uint64(n) * 1e9, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 && f < math.MaxInt64/1e9 {
		return uint64(f * 1e9), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		if err := apiparam.CheckTime(t); err != nil {
			return 0, badRequest{fmt.Sprintf("invalid %s: %v", name, err)}
		}
		return uint64(t.UnixNano()), nil
	}
	return 0, badRequest{fmt.Sprintf("invalid %s: %q is not unix seconds, unix nanoseconds or RFC 3339", name, s)}
}

// defaultStep picks a step giving ~240 points, rounded to a friendly value
// (Tempo's rule).
func defaultStep(start, end uint64) uint64 {
	base := (end - start) / 240
	if end-start < uint64(time.Minute) {
		s := base - base%uint64(50*time.Millisecond)
		return max(s, uint64(50*time.Millisecond))
	}
	for _, d := range []time.Duration{time.Hour, 5 * time.Minute, time.Minute, 15 * time.Second, 5 * time.Second, time.Second} {
		if uint64(d) < base {
			return base - base%uint64(d)
		}
	}
	return uint64(time.Second)
}

func (h *handler) parseMetrics(r *http.Request, instant bool) (*metricsParams, error) {
	v := r.URL.Query()
	text := v.Get("q")
	if text == "" {
		text = v.Get("query")
	}
	if strings.TrimSpace(text) == "" {
		return nil, badRequest{"missing q: a TraceQL metrics query such as {} | rate()"}
	}
	q, err := h.parse(text)
	if err != nil {
		return nil, err
	}
	if !q.IsMetrics() {
		return nil, badRequest{"not a metrics query: end it with a metrics function such as | rate(), | count_over_time() or | quantile_over_time(duration, .9)"}
	}
	if q.UsesFindings() && h.opts.Findings == nil {
		return nil, badRequest{"finding.kind is not available: this server runs no trace analysis"}
	}
	p := &metricsParams{query: q}
	now := uint64(h.opts.Now().UnixNano())
	p.end = now
	if s := v.Get("end"); s != "" {
		if p.end, err = parseMetricsTime(s, "end"); err != nil {
			return nil, err
		}
	}
	since := time.Hour
	if s := v.Get("since"); s != "" {
		if since, err = time.ParseDuration(s); err != nil || since <= 0 {
			return nil, badRequest{fmt.Sprintf("invalid since: %q is not a positive duration", s)}
		}
	}
	if uint64(since) < p.end {
		p.start = p.end - uint64(since)
	}
	if s := v.Get("start"); s != "" {
		if p.start, err = parseMetricsTime(s, "start"); err != nil {
			return nil, err
		}
	}
	if p.end <= p.start {
		return nil, badRequest{fmt.Sprintf("http parameter start must be before end. received start=%s end=%s", v.Get("start"), v.Get("end"))}
	}
	if instant {
		p.step = p.end - p.start
		return p, nil
	}
	p.step = defaultStep(p.start, p.end)
	if s := v.Get("step"); s != "" {
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			if f <= 0 || f > 1e9 {
				return nil, badRequest{fmt.Sprintf("invalid step: %q must be between 0 and 1e9 seconds", s)}
			}
			p.step = uint64(f * 1e9)
		} else if d, err := time.ParseDuration(s); err == nil && d > 0 {
			p.step = uint64(d)
		} else {
			return nil, badRequest{fmt.Sprintf("invalid step: %q is not seconds or a duration such as 30s", s)}
		}
	}
	return p, nil
}

// run scans the traces with matching spans in the range and accumulates.
func (h *handler) runMetrics(r *http.Request, p *metricsParams) ([]traceql.Series, uint64, uint64, bool, error) {
	m, err := p.query.NewMetricsEvaluator(traceql.MetricsRange{Start: p.start, End: p.end, Step: p.step})
	if err != nil {
		return nil, 0, 0, false, badRequest{err.Error()}
	}
	ctx := r.Context()
	sq := p.query.Pushdown()
	sq.Range = store.TimeRange{Start: p.start, End: p.end}
	var inspected, inspectedB uint64
	partial := false
	errLimit := errors.New("scan limit")
	err = h.st.ScanTraces(ctx, sq, func(spans []model.Span) error {
		if inspected >= uint64(h.opts.MaxScanTraces) {
			partial = true
			return errLimit
		}
		inspected++
		inspectedB += approxBytes(spans)
		return m.Observe(ctx, spans, h.opts.Findings)
	})
	if errors.Is(err, traceql.ErrTooManySeries) {
		return nil, 0, 0, false, badRequest{err.Error()}
	}
	if err != nil && !errors.Is(err, errLimit) {
		return nil, 0, 0, false, err
	}
	return m.Result(), inspected, inspectedB, partial, nil
}

func (h *handler) queryRange(w http.ResponseWriter, r *http.Request) {
	h.serveMetrics(w, r, false, func(j *jw, _ traceql.MetricsFunc, s traceql.Series) {
		j.sep()
		j.open('{')
		writeSeriesLabels(j, s.Labels)
		j.key("samples")
		j.open('[')
		for _, smp := range s.Samples {
			j.sep()
			j.open('{')
			j.key("timestampMs")
			j.b.WriteString(`"` + strconv.FormatInt(smp.TimestampMs, 10) + `"`)
			j.key("value")
			writeJSONFloat(j.b, smp.Value)
			j.close('}')
		}
		j.close(']')
		j.key("exemplars")
		j.b.WriteString("[]")
		j.close('}')
	})
}

// queryInstant answers /api/metrics/query: one value per series over the
// whole range.
func (h *handler) queryInstant(w http.ResponseWriter, r *http.Request) {
	h.serveMetrics(w, r, true, func(j *jw, f traceql.MetricsFunc, s traceql.Series) {
		if len(s.Samples) == 0 {
			return
		}
		j.sep()
		j.open('{')
		writeSeriesLabels(j, s.Labels)
		j.key("value")
		writeJSONFloat(j.b, instantValue(f, s.Samples))
		j.close('}')
	})
}

// instantValue is a series' value over the whole range. The range, aligned
// to the step, may span two buckets: counts (and rates, all over the same
// step) add up; for the other functions the last bucket holds the end.
func instantValue(f traceql.MetricsFunc, samples []traceql.Sample) float64 {
	switch f {
	case traceql.MetricsRate, traceql.MetricsCountOverTime, traceql.MetricsHistogramOverTime, traceql.MetricsCompare:
		var sum float64
		for _, s := range samples {
			sum += s.Value
		}
		return sum
	}
	return samples[len(samples)-1].Value
}

// serveMetrics runs a metrics query and writes {"series":[…],"metrics":…},
// each series rendered by one.
func (h *handler) serveMetrics(w http.ResponseWriter, r *http.Request, instant bool, one func(j *jw, f traceql.MetricsFunc, s traceql.Series)) {
	p, err := h.parseMetrics(r, instant)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	series, inspected, inspectedB, partial, err := h.runMetrics(r, p)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var b bytes.Buffer
	j := &jw{b: &b}
	j.open('{')
	j.key("series")
	j.open('[')
	for _, s := range series {
		one(j, p.query.Metrics.Func, s)
	}
	j.close(']')
	writeMetricsFooter(j, inspected, inspectedB, partial)
	j.close('}')
	b.WriteByte('\n')
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b.Bytes())
}

func writeSeriesLabels(j *jw, ls []traceql.Label) {
	writeLabelArray(j, "labels", ls) // even when empty: clients index it
	// promLabels is the Prometheus-style rendering older Grafana versions read.
	var pl strings.Builder
	pl.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			pl.WriteString(", ")
		}
		pl.WriteString(l.Key + "=" + strconv.Quote(l.Value.Text()))
	}
	pl.WriteByte('}')
	j.str("promLabels", pl.String())
}

func writeMetricsFooter(j *jw, inspected, inspectedB uint64, partial bool) {
	j.key("metrics")
	j.open('{')
	j.u32("inspectedTraces", uint32(min(inspected, math.MaxUint32)))
	j.u64("inspectedBytes", inspectedB)
	j.u32("completedJobs", 1)
	j.u32("totalJobs", 1)
	j.close('}')
	if partial {
		j.str("status", "PARTIAL")
		j.str("message", fmt.Sprintf("stopped after inspecting %d traces; narrow the time range or the query", inspected))
	}
}
