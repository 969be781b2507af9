package traceql

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// MaxMetricsPoints bounds the buckets of one metrics query (Prometheus uses
// the same limit) so a tiny step over a long range cannot exhaust memory.
const MaxMetricsPoints = 11000

// MaxMetricsSeries bounds the series of one metrics query.
const MaxMetricsSeries = 10000

// MetricsRange is the time grid of a metrics query, in unix nanoseconds.
// Spans starting in [Start, End) are counted; buckets are Step wide and
// aligned to multiples of Step.
type MetricsRange struct {
	Start, End, Step uint64
}

// Series is one output time series.
type Series struct {
	Labels  []Label
	Samples []Sample
}

// Sample is one point of a series; TimestampMs is its bucket's start.
type Sample struct {
	TimestampMs int64
	Value       float64
}

// ErrTooManySeries is returned when by() produces more than MaxMetricsSeries series.
var ErrTooManySeries = errors.New("too many series")

// MetricsEvaluator accumulates a metrics query over traces.
type MetricsEvaluator struct {
	q       *Query
	r       MetricsRange
	start   uint64 // aligned
	buckets int
	series  map[string]*seriesAcc
	cmp     *compareAcc // compare() only
}

type seriesAcc struct {
	labels []Label
	count  []float64
	sum    []float64
	min    []float64
	max    []float64
	vals   [][]float64 // quantiles
}

// NewMetricsEvaluator prepares a metrics query over r.
func (q *Query) NewMetricsEvaluator(r MetricsRange) (*MetricsEvaluator, error) {
	if q.Metrics == nil {
		return nil, fmt.Errorf("not a metrics query: add a metrics function such as | rate()")
	}
	if r.Step == 0 {
		return nil, fmt.Errorf("step must be positive")
	}
	if r.End <= r.Start {
		return nil, fmt.Errorf("end must be after start")
	}
	start := r.Start - r.Start%r.Step
	n := (r.End - start + r.Step - 1) / r.Step
	if n > MaxMetricsPoints {
		return nil, fmt.Errorf("range and step give %d points, more than the maximum of %d; use a larger step", n, MaxMetricsPoints)
	}
	m := &MetricsEvaluator{q: q, r: r, start: start, buckets: int(n), series: map[string]*seriesAcc{}}
	if q.Metrics.Func == MetricsCompare {
		m.cmp = newCompareAcc()
	}
	return m, nil
}

// Observe evaluates the query's spanset part over one trace and counts the
// matching spans that start in the range.
func (m *MetricsEvaluator) Observe(ctx context.Context, spans []model.Span, findings FindingsLookup) error {
	sets, err := m.q.Eval(ctx, spans, findings)
	if err != nil || len(sets) == 0 {
		return err
	}
	tc := sets[0].tc
	seen := make(map[int32]bool)
	agg := m.q.Metrics
	var kb strings.Builder
	for _, ss := range sets {
		for _, i := range ss.idx {
			if seen[i] {
				continue
			}
			seen[i] = true
			s := &tc.spans[i]
			if s.StartUnixNano < m.r.Start || s.StartUnixNano >= m.r.End {
				continue
			}
			b := int((s.StartUnixNano - m.start) / m.r.Step)
			if b < 0 || b >= m.buckets {
				continue
			}
			if m.cmp != nil {
				if err := m.observeCompare(tc, i, b); err != nil {
					return err
				}
				continue
			}
			var val float64
			if agg.Field != nil {
				v := tc.eval(agg.Field, i)
				f, ok := v.number()
				if !ok {
					continue
				}
				if v.Type == TypeDuration {
					f /= 1e9 // Tempo reports durations in seconds
				}
				val = f
			}
			labels := make([]Label, 0, len(agg.By)+1)
			kb.Reset()
			for _, e := range agg.By {
				v := tc.eval(e, i)
				kb.WriteString(v.String())
				kb.WriteByte(0)
				if v.Type != TypeNil {
					labels = append(labels, Label{Key: e.String(), Value: v})
				}
			}
			if agg.Func == MetricsHistogramOverTime {
				ub := histogramBucket(val)
				fmt.Fprintf(&kb, "b%g", ub)
				labels = append(labels, Label{Key: "__bucket", Value: Value{Type: TypeFloat, F: ub}})
			}
			acc, err := m.seriesFor(kb.String(), labels)
			if err != nil {
				return err
			}
			acc.add(agg.Func, b, val)
		}
	}
	return nil
}

// histogramBucket returns the power-of-two upper bound of v's bucket.
func histogramBucket(v float64) float64 {
	if v <= 0 {
		return 0
	}
	return math.Pow(2, math.Ceil(math.Log2(v)))
}

func (m *MetricsEvaluator) seriesFor(key string, labels []Label) (*seriesAcc, error) {
	if acc, ok := m.series[key]; ok {
		return acc, nil
	}
	if len(m.series) >= MaxMetricsSeries {
		return nil, fmt.Errorf("%w: more than %d series; narrow the query or the by() clause", ErrTooManySeries, MaxMetricsSeries)
	}
	acc := &seriesAcc{labels: labels, count: make([]float64, m.buckets)}
	switch m.q.Metrics.Func {
	case MetricsMinOverTime, MetricsMaxOverTime, MetricsAvgOverTime, MetricsSumOverTime:
		acc.sum = make([]float64, m.buckets)
		acc.min = make([]float64, m.buckets)
		acc.max = make([]float64, m.buckets)
	case MetricsQuantileOverTime:
		acc.vals = make([][]float64, m.buckets)
	}
	m.series[key] = acc
	return acc, nil
}

func (a *seriesAcc) add(f MetricsFunc, b int, v float64) {
	first := a.count[b] == 0
	a.count[b]++
	switch f {
	case MetricsMinOverTime, MetricsMaxOverTime, MetricsAvgOverTime, MetricsSumOverTime:
		a.sum[b] += v
		if first || v < a.min[b] {
			a.min[b] = v
		}
		if first || v > a.max[b] {
			a.max[b] = v
		}
	case MetricsQuantileOverTime:
		a.vals[b] = append(a.vals[b], v)
	}
}

// Result returns the series, sorted by labels. Buckets without data are
// 0 for rate/count/histogram and absent for value functions.
func (m *MetricsEvaluator) Result() []Series {
	agg := m.q.Metrics
	stepSec := float64(m.r.Step) / 1e9
	ts := func(b int) int64 { return int64((m.start + uint64(b)*m.r.Step) / 1e6) }
	if m.cmp != nil {
		return m.compareResult(ts)
	}
	var out []Series
	for _, acc := range m.series {
		base := acc.labels
		if len(base) == 0 {
			base = []Label{{Key: "__name__", Value: Value{Type: TypeString, S: agg.Func.String()}}}
		}
		if agg.Func == MetricsQuantileOverTime {
			for _, q := range agg.Quantiles {
				s := Series{Labels: append(append([]Label(nil), base...), Label{Key: "p", Value: Value{Type: TypeFloat, F: q}})}
				for b, vals := range acc.vals {
					if len(vals) == 0 {
						continue
					}
					s.Samples = append(s.Samples, Sample{TimestampMs: ts(b), Value: quantile(vals, q)})
				}
				out = append(out, s)
			}
			continue
		}
		s := Series{Labels: base}
		for b := 0; b < m.buckets; b++ {
			c := acc.count[b]
			var v float64
			switch agg.Func {
			case MetricsRate:
				v = c / stepSec
			case MetricsCountOverTime, MetricsHistogramOverTime:
				v = c
			default:
				if c == 0 {
					continue
				}
				switch agg.Func {
				case MetricsMinOverTime:
					v = acc.min[b]
				case MetricsMaxOverTime:
					v = acc.max[b]
				case MetricsSumOverTime:
					v = acc.sum[b]
				case MetricsAvgOverTime:
					v = acc.sum[b] / c
				}
			}
			s.Samples = append(s.Samples, Sample{TimestampMs: ts(b), Value: v})
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return labelKey(out[i].Labels) < labelKey(out[j].Labels) })
	if agg.TopK > 0 || agg.BottomK > 0 {
		out = topK(out, agg.TopK, agg.BottomK)
	}
	return out
}

func labelKey(ls []Label) string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.Key)
		b.WriteByte('=')
		b.WriteString(l.Value.String())
		b.WriteByte(',')
	}
	return b.String()
}

// quantile interpolates linearly between closest ranks.
func quantile(vals []float64, q float64) float64 {
	sort.Float64s(vals)
	if len(vals) == 1 {
		return vals[0]
	}
	pos := q * float64(len(vals)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	if lo == hi {
		return vals[lo]
	}
	return vals[lo] + (vals[hi]-vals[lo])*(pos-float64(lo))
}

// topK keeps, at each timestamp, the k highest (or lowest) series values,
// as Prometheus' topk does; series left without samples are dropped.
func topK(in []Series, top, bottom int) []Series {
	k := top
	if k == 0 {
		k = bottom
	}
	type ref struct {
		series, sample int
		v              float64
	}
	byTS := map[int64][]ref{}
	for si, s := range in {
		for pi, p := range s.Samples {
			byTS[p.TimestampMs] = append(byTS[p.TimestampMs], ref{si, pi, p.Value})
		}
	}
	keep := make([]map[int]bool, len(in))
	for i := range keep {
		keep[i] = map[int]bool{}
	}
	for _, refs := range byTS {
		sort.SliceStable(refs, func(a, b int) bool {
			if top > 0 {
				return refs[a].v > refs[b].v
			}
			return refs[a].v < refs[b].v
		})
		for i := 0; i < len(refs) && i < k; i++ {
			keep[refs[i].series][refs[i].sample] = true
		}
	}
	var out []Series
	for si, s := range in {
		var samples []Sample
		for pi, p := range s.Samples {
			if keep[si][pi] {
				samples = append(samples, p)
			}
		}
		if len(samples) > 0 {
			out = append(out, Series{Labels: s.Labels, Samples: samples})
		}
	}
	return out
}
