package red

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/red/tsdb"
)

// Query selects RED series.
type Query struct {
	Service   string // "" = all services
	Operation string // "" = all operations
	// Kind: "" (all kinds), a span kind ("server", "client", …) or "entry"
	// (server and consumer spans: the requests a service handles).
	Kind       string
	Start, End time.Time
	// Step is rounded up to whole minutes (default: 1 minute).
	Step time.Duration
	// GroupByOperation returns one series per (service, operation, kind)
	// instead of one per service.
	GroupByOperation bool
}

// Point is one step of a series. Rate is requests per second over the
// part of the step covered by data (see covered); latencies are estimated
// from the histogram (±12%).
type Point struct {
	TimeMS    int64   `json:"time_ms"`
	Rate      float64 `json:"rate"`
	ErrorRate float64 `json:"error_rate"`
	P50MS     float64 `json:"p50_ms"`
	P95MS     float64 `json:"p95_ms"`
	P99MS     float64 `json:"p99_ms"`
	Count     uint64  `json:"count"`
	Errors    uint64  `json:"errors"`
}

// Series is the result for one service or operation.
type Series struct {
	Service   string  `json:"service"`
	Operation string  `json:"operation,omitempty"`
	Kind      string  `json:"kind,omitempty"`
	Points    []Point `json:"points"`
}

// ErrBadQuery wraps invalid query input (an HTTP 400).
var ErrBadQuery = errors.New("bad metrics query")

// MaxPoints bounds the points of one series.
const MaxPoints = 11000

type kindFilter struct {
	any   bool
	entry bool
	kind  model.SpanKind
}

func parseKind(s string) (kindFilter, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "any", "all":
		return kindFilter{any: true}, nil
	case "entry":
		return kindFilter{entry: true}, nil
	}
	k, ok := model.ParseSpanKind(s)
	if !ok {
		return kindFilter{}, fmt.Errorf("%w: unknown span kind %q", ErrBadQuery, s)
	}
	return kindFilter{kind: k}, nil
}

func (f kindFilter) match(k uint8) bool {
	switch {
	case f.any:
		return true
	case f.entry:
		return isEntry(k)
	}
	return k == uint8(f.kind)
}

// kinds is the filter as a list of kinds (nil: any), for a peer's Part.
func (f kindFilter) kinds() []uint8 {
	switch {
	case f.any:
		return nil
	case f.entry:
		return []uint8{uint8(model.KindServer), uint8(model.KindConsumer)}
	}
	return []uint8{uint8(f.kind)}
}

func isEntry(k uint8) bool {
	return k == uint8(model.KindServer) || k == uint8(model.KindConsumer)
}

type window struct {
	startMin, endMin, stepMin int64
	n                         int
}

func makeWindow(start, end time.Time, step time.Duration) (window, error) {
	if start.IsZero() || end.IsZero() {
		return window{}, fmt.Errorf("%w: start and end are required", ErrBadQuery)
	}
	if !end.After(start) {
		return window{}, fmt.Errorf("%w: end must be after start", ErrBadQuery)
	}
	w := window{startMin: tsdb.UnixMinute(start), endMin: tsdb.UnixMinute(end.Add(time.Minute - time.Nanosecond))}
	if step <= 0 {
		step = time.Minute
	}
	w.stepMin = int64((step + time.Minute - 1) / time.Minute)
	span := w.endMin - w.startMin
	w.n = int((span + w.stepMin - 1) / w.stepMin)
	if w.n > MaxPoints {
		return window{}, fmt.Errorf("%w: %d points exceed %d; use a larger step", ErrBadQuery, w.n, MaxPoints)
	}
	w.endMin = w.startMin + int64(w.n)*w.stepMin
	return w, nil
}

// stepSeconds is the covered time of each step of w.
func (w window) stepSeconds(m *Metrics, cov tsdb.Coverage) []float64 {
	out := make([]float64, w.n)
	for i := range out {
		from := w.startMin + int64(i)*w.stepMin
		out[i] = m.covered(cov, from, from+w.stepMin)
	}
	return out
}

// part is w as a peer's Part, narrowed to the series filter selects.
func (w window) part(filter tsdb.Part) tsdb.Part {
	filter.StartMin, filter.EndMin, filter.StepMin = w.startMin, w.endMin, w.stepMin
	return filter
}

type groupKey struct {
	service, op string
	kind        int16 // -1 when kinds are merged
}

// collect aggregates matching records into per-group step buckets: this
// node's and, in a cluster, the other nodes' (filter narrows what they
// send; match must select within it). The coverage is the cluster's.
func (m *Metrics) collect(ctx context.Context, w window, filter tsdb.Part, match func(tsdb.Key) bool, group func(tsdb.Key) groupKey) (map[groupKey][]*tsdb.Agg, tsdb.Coverage, error) {
	out := map[groupKey][]*tsdb.Agg{}
	cov, err := m.st.Read(ctx, m.remote, w.part(filter), match, func(k tsdb.Key, r *tsdb.Rec) {
		g := group(k)
		aggs := out[g]
		if aggs == nil {
			aggs = make([]*tsdb.Agg, w.n)
			out[g] = aggs
		}
		i := (r.Minute - w.startMin) / w.stepMin
		if aggs[i] == nil {
			aggs[i] = new(tsdb.Agg)
		}
		aggs[i].AddRec(r)
	})
	return out, cov, err
}

func point(a *tsdb.Agg, tms int64, seconds float64) Point {
	p := Point{TimeMS: tms}
	if a == nil {
		return p
	}
	p.Count, p.Errors = a.Count, a.Errors
	if seconds > 0 {
		p.Rate = tsdb.Round6(float64(a.Count) / seconds)
	}
	p.ErrorRate = a.ErrorRate()
	p.P50MS, p.P95MS, p.P99MS = a.QuantileMS(0, 0.5), a.QuantileMS(0, 0.95), a.QuantileMS(0, 0.99)
	return p
}

// covered is the seconds of the minutes [startMin, endMin) that rates are
// averaged over: the one rule of every rate tracedx reports (RED, service
// map, Jaeger Monitor) — from the later of the range start and the first
// minute tracedx holds data for, to the earlier of the range end and now.
func (m *Metrics) covered(cov tsdb.Coverage, startMin, endMin int64) float64 {
	return cov.Seconds(startMin, endMin, m.now())
}

// DataSince is the first minute RED metrics hold data for (ok false while
// they hold none); the service map averages its rates from it too.
func (m *Metrics) DataSince() (time.Time, bool) {
	first, ok := m.st.FirstMinute()
	return time.Unix(first*60, 0), ok
}

// Query returns RED series per step. Steps without spans have zero values.
// A point covers [time, time+step); its rate divides by the part of the
// step covered by data, so neither the step holding "now" nor the one in
// which data begins reads low.
func (m *Metrics) Query(ctx context.Context, q Query) ([]Series, error) {
	kf, err := parseKind(q.Kind)
	if err != nil {
		return nil, err
	}
	w, err := makeWindow(q.Start, q.End, q.Step)
	if err != nil {
		return nil, err
	}
	match := func(k tsdb.Key) bool {
		return (q.Service == "" || k.A == q.Service) && (q.Operation == "" || k.B == q.Operation) && kf.match(k.K)
	}
	group := func(k tsdb.Key) groupKey {
		if q.GroupByOperation {
			return groupKey{k.A, k.B, int16(k.K)}
		}
		return groupKey{k.A, "", -1}
	}
	var filter tsdb.Part
	if q.Service != "" {
		filter.A = []string{q.Service}
	}
	filter.B, filter.K = q.Operation, kf.kinds()
	groups, cov, err := m.collect(ctx, w, filter, match, group)
	if err != nil && len(groups) == 0 {
		return nil, err
	}
	out := make([]Series, 0, len(groups))
	secs := w.stepSeconds(m, cov)
	for g, aggs := range groups {
		s := Series{Service: g.service, Operation: g.op, Points: make([]Point, w.n)}
		if g.kind >= 0 {
			s.Kind = model.SpanKind(g.kind).String()
		}
		for i, a := range aggs {
			s.Points[i] = point(a, (w.startMin+int64(i)*w.stepMin)*60000, secs[i])
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		if out[i].Operation != out[j].Operation {
			return out[i].Operation < out[j].Operation
		}
		return out[i].Kind < out[j].Kind
	})
	return out, err
}

// Summary is RED over a window.
type Summary struct {
	Rate      float64 `json:"rate"`
	ErrorRate float64 `json:"error_rate"`
	P50MS     float64 `json:"p50_ms"`
	P95MS     float64 `json:"p95_ms"`
	P99MS     float64 `json:"p99_ms"`
	Count     uint64  `json:"count"`
	Errors    uint64  `json:"errors"`
}

func summarize(a *tsdb.Agg, seconds float64) Summary {
	p := point(a, 0, seconds)
	return Summary{Rate: p.Rate, ErrorRate: p.ErrorRate, P50MS: p.P50MS, P95MS: p.P95MS, P99MS: p.P99MS, Count: p.Count, Errors: p.Errors}
}

// SparkPoint is one point of a service sparkline.
type SparkPoint struct {
	TimeMS    int64   `json:"time_ms"`
	Rate      float64 `json:"rate"`
	ErrorRate float64 `json:"error_rate"`
	P95MS     float64 `json:"p95_ms"`
}

// ServiceSummary is one row of the service overview.
type ServiceSummary struct {
	Service string `json:"service"`
	Summary
	// Basis says which spans the figures use: "entry" (server and consumer
	// spans, the requests the service handles) or "all" for services that
	// have no entry spans (batch jobs, clients only).
	Basis     string       `json:"basis"`
	Sparkline []SparkPoint `json:"sparkline"`
}

// Services summarises every service over [start, end) with a sparkline of
// sparkPoints points (0 = none).
func (m *Metrics) Services(ctx context.Context, start, end time.Time, sparkPoints int) ([]ServiceSummary, error) {
	whole, err := makeWindow(start, end, end.Sub(start))
	if err != nil {
		return nil, err
	}
	// Entry and other spans are grouped apart in one pass; a service's
	// row uses its entry spans if it has any in the window, else all.
	const other, entry = 0, 1
	match := func(tsdb.Key) bool { return true }
	group := func(k tsdb.Key) groupKey {
		if isEntry(k.K) {
			return groupKey{k.A, "", entry}
		}
		return groupKey{k.A, "", other}
	}
	if sparkPoints < 1 {
		sparkPoints = 1
	}
	spanMin := whole.endMin - whole.startMin
	step := time.Duration((spanMin+int64(sparkPoints)-1)/int64(sparkPoints)) * time.Minute
	w, err := makeWindow(start, end, step)
	if err != nil {
		return nil, err
	}
	groups, cov, err := m.collect(ctx, w, tsdb.Part{}, match, group)
	if err != nil && len(groups) == 0 {
		return nil, err
	}
	hasEntry := map[string]bool{}
	for g, aggs := range groups {
		if g.kind == entry && total(aggs).Count > 0 {
			hasEntry[g.service] = true
		}
	}
	for g := range groups {
		if hasEntry[g.service] != (g.kind == entry) {
			delete(groups, g)
		}
	}
	out := make([]ServiceSummary, 0, len(groups))
	wholeSecs := m.covered(cov, w.startMin, w.endMin)
	stepSecs := w.stepSeconds(m, cov)
	for g, aggs := range groups {
		var tot tsdb.Agg
		spark := make([]SparkPoint, len(aggs))
		for i, a := range aggs {
			p := point(a, (w.startMin+int64(i)*w.stepMin)*60000, stepSecs[i])
			spark[i] = SparkPoint{TimeMS: p.TimeMS, Rate: p.Rate, ErrorRate: p.ErrorRate, P95MS: p.P95MS}
			if a != nil {
				tot.Merge(a)
			}
		}
		basis := "entry"
		if !hasEntry[g.service] {
			basis = "all"
		}
		out = append(out, ServiceSummary{Service: g.service, Summary: summarize(&tot, wholeSecs), Basis: basis, Sparkline: spark})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out, err
}

// OperationSummary is RED of one (service, operation, kind) over a window.
type OperationSummary struct {
	Service   string `json:"service"`
	Operation string `json:"operation"`
	Kind      string `json:"kind"`
	Summary
}

// Sort orders for Operations.
const (
	ByP95       = "p95"
	ByP99       = "p99"
	ByErrorRate = "error_rate"
	ByRate      = "rate"
	ByErrors    = "errors"
)

// Operations summarises operations over [start, end): of one service, or
// of all services when service is "" (top operations), optionally of one
// kind, sorted by sortBy (p95 by default) descending, at most limit rows
// (0 = all).
func (m *Metrics) Operations(ctx context.Context, service, kind string, start, end time.Time, sortBy string, limit int) ([]OperationSummary, error) {
	kf, err := parseKind(kind)
	if err != nil {
		return nil, err
	}
	less, err := sorter(sortBy)
	if err != nil {
		return nil, err
	}
	w, err := makeWindow(start, end, end.Sub(start))
	if err != nil {
		return nil, err
	}
	filter := tsdb.Part{K: kf.kinds()}
	if service != "" {
		filter.A = []string{service}
	}
	groups, cov, err := m.collect(ctx, w, filter, func(tsdb.Key) bool { return true },
		func(k tsdb.Key) groupKey { return groupKey{k.A, k.B, int16(k.K)} })
	if err != nil && len(groups) == 0 {
		return nil, err
	}
	secs := m.covered(cov, w.startMin, w.endMin)
	out := make([]OperationSummary, 0, len(groups))
	for g, aggs := range groups {
		out = append(out, OperationSummary{Service: g.service, Operation: g.op, Kind: model.SpanKind(g.kind).String(), Summary: summarize(total(aggs), secs)})
	}
	sort.Slice(out, func(i, j int) bool {
		if less(&out[i].Summary, &out[j].Summary) {
			return false
		}
		if less(&out[j].Summary, &out[i].Summary) {
			return true
		}
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		if out[i].Operation != out[j].Operation {
			return out[i].Operation < out[j].Operation
		}
		return out[i].Kind < out[j].Kind
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, err
}

func sorter(by string) (func(a, b *Summary) bool, error) {
	switch strings.ToLower(by) {
	case "", ByP95:
		return func(a, b *Summary) bool { return a.P95MS < b.P95MS }, nil
	case ByP99:
		return func(a, b *Summary) bool { return a.P99MS < b.P99MS }, nil
	case ByErrorRate:
		return func(a, b *Summary) bool {
			if a.ErrorRate != b.ErrorRate {
				return a.ErrorRate < b.ErrorRate
			}
			return a.Errors < b.Errors
		}, nil
	case ByRate:
		return func(a, b *Summary) bool { return a.Count < b.Count }, nil
	case ByErrors:
		return func(a, b *Summary) bool { return a.Errors < b.Errors }, nil
	}
	return nil, fmt.Errorf("%w: unknown sort %q (p95, p99, error_rate, rate, errors)", ErrBadQuery, by)
}

// ServiceStat is the node figure the service map shows.
type ServiceStat struct {
	Rate, ErrorRate, P95MS float64
}

// ServiceStats returns entry-span RED per service over [start, end); it is
// what servicegraph uses for node figures.
func (m *Metrics) ServiceStats(ctx context.Context, start, end time.Time) (map[string]ServiceStat, error) {
	ss, err := m.Services(ctx, start, end, 0)
	if err != nil {
		return nil, err
	}
	out := make(map[string]ServiceStat, len(ss))
	for _, s := range ss {
		out[s.Service] = ServiceStat{Rate: s.Rate, ErrorRate: s.ErrorRate, P95MS: s.P95MS}
	}
	return out, nil
}
