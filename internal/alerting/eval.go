package alerting

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/red"
)

// REDReader is the RED metrics the rules read.
type REDReader interface {
	EntryOperationCounts(service string, start, end time.Time, slowerMS float64) ([]red.EntryCounts, error)
}

// FindingsReader is the findings store, read once at start to count the
// findings of the rules' windows.
type FindingsReader interface {
	List(ctx context.Context, q findingstore.Query) ([]findingstore.Stored, error)
}

// sample is one instance of a rule's condition that holds now.
type sample struct {
	labels  map[string]string // instance labels: service, operation, kind
	value   float64
	culprit analyze.Culprit
	impact  string
	summary string
	// traceID is an example trace.
	traceID string
	// service/operation of a comparison link (RED and SLO alerts).
	compareService, compareOperation string
	compareSelection                 string
}

// evaluator runs the conditions of rules against the sources, caching the
// RED reads of one evaluation so rules sharing a window share the scan.
type evaluator struct {
	red    REDReader
	window *findingsWindow
	now    time.Time
	cache  map[redKey][]red.EntryCounts
	// long keeps the reads of long windows across evaluations (see counts).
	long *longWindows
	// rank, when set, is the root-cause ranking's top cause of an endpoint.
	rank func(service, operation string) (analyze.Culprit, bool)
}

type redKey struct {
	service    string
	start, end int64
	slowerMS   float64
}

// longWindows caches the counts of windows of 30 minutes and more for a
// sixtieth of the window: a 6 h window moved by 6 min changes by under 2%,
// a burn rate over it no more, and the scan of 6 h of minutes was 80% of
// an evaluation's cost (BenchmarkEvaluateDefaultRules).
type longWindows struct {
	mu sync.Mutex
	m  map[longKey]longCounts
}

// longKey names a window ending now (windows ending at the start of the
// minute, those of rate drops, are not kept).
type longKey struct {
	service  string
	window   time.Duration
	slowerMS float64
}

type longCounts struct {
	at     time.Time
	counts []red.EntryCounts
}

const longWindow = 30 * time.Minute

func (e *evaluator) counts(service string, start, end time.Time, slowerMS float64) ([]red.EntryCounts, error) {
	k := redKey{service, start.UnixNano(), end.UnixNano(), slowerMS}
	if c, ok := e.cache[k]; ok {
		return c, nil
	}
	if e.red == nil {
		return nil, nil
	}
	window := end.Sub(start)
	lk := longKey{service, window, slowerMS}
	keep := e.long != nil && window >= longWindow && end.Equal(e.now)
	if keep {
		e.long.mu.Lock()
		lc, ok := e.long.m[lk]
		e.long.mu.Unlock()
		if ok && e.now.Sub(lc.at) < window/60 && !e.now.Before(lc.at) {
			e.cache[k] = lc.counts
			return lc.counts, nil
		}
	}
	c, err := e.red.EntryOperationCounts(service, start, end, slowerMS)
	if err != nil {
		return nil, err
	}
	e.cache[k] = c
	if keep {
		e.long.mu.Lock()
		e.long.m[lk] = longCounts{at: e.now, counts: c}
		e.long.mu.Unlock()
	}
	return c, nil
}

func (e *evaluator) eval(r *Rule) ([]sample, error) {
	var out []sample
	var err error
	switch {
	case r.RED != nil:
		out, err = e.evalRED(r.RED)
	case r.SLO != nil:
		out, err = e.evalSLO(r.SLO)
	case r.Findings != nil:
		return e.evalFindings(r.Findings), nil
	default:
		return e.evalCrossTrace(r.CrossTrace), nil
	}
	if err != nil {
		return nil, err
	}
	// RED and SLO alerts name the operation; the top finding of the
	// service in the window usually knows better where to fix it.
	for i := range out {
		e.blame(&out[i])
	}
	return out, nil
}

func opLabels(c red.EntryCounts) map[string]string {
	return map[string]string{"service": c.Service, "operation": c.Operation}
}

func matchOp(c red.EntryCounts, service, op string) bool {
	return (service == "" || c.Service == service) && (op == "" || c.Operation == op)
}

func (e *evaluator) evalRED(c *REDCondition) ([]sample, error) {
	end := e.now
	if c.RateDropBelow > 0 {
		// The open minute is partial and would read as a drop.
		end = e.now.Truncate(time.Minute)
	}
	start := end.Add(-c.Window)
	cur, err := e.counts(c.Service, start, end, 0)
	if err != nil {
		return nil, err
	}
	var base map[[2]string]uint64
	if c.RateDropBelow > 0 {
		prev, err := e.counts(c.Service, start.Add(-c.Baseline), start, 0)
		if err != nil {
			return nil, err
		}
		base = map[[2]string]uint64{}
		for _, p := range prev {
			base[[2]string{p.Service, p.Operation}] = p.Count
		}
		// An operation that stopped entirely has no row in the window.
		seen := map[[2]string]bool{}
		for _, x := range cur {
			seen[[2]string{x.Service, x.Operation}] = true
		}
		for _, p := range prev {
			if !seen[[2]string{p.Service, p.Operation}] {
				cur = append(cur, red.EntryCounts{Service: p.Service, Operation: p.Operation})
			}
		}
	}
	var out []sample
	for _, x := range cur {
		if !matchOp(x, c.Service, c.Operation) {
			continue
		}
		s := sample{labels: opLabels(x), compareService: x.Service, compareOperation: x.Operation}
		switch {
		case c.ErrorRatioAbove > 0:
			if x.Count < uint64(c.MinRequests) || x.Count == 0 {
				continue
			}
			s.value = float64(x.Errors) / float64(x.Count)
			if s.value <= c.ErrorRatioAbove {
				continue
			}
			s.compareSelection = "error"
			s.summary = fmt.Sprintf("%s %s fails %.1f%% of requests (threshold %.1f%%)", x.Service, x.Operation, 100*s.value, 100*c.ErrorRatioAbove)
			s.impact = fmt.Sprintf("%d of %d requests failed in the last %s", x.Errors, x.Count, human(c.Window))
		case c.LatencyAboveMS > 0:
			if x.Count < uint64(c.MinRequests) || x.Count == 0 {
				continue
			}
			s.value = map[int]float64{50: x.P50MS, 95: x.P95MS, 99: x.P99MS}[c.Percentile]
			if s.value <= c.LatencyAboveMS {
				continue
			}
			s.compareSelection = "slow"
			s.summary = fmt.Sprintf("%s %s p%d latency is %.0f ms (threshold %.0f ms)", x.Service, x.Operation, c.Percentile, s.value, c.LatencyAboveMS)
			s.impact = fmt.Sprintf("p%d of %d requests in the last %s is %.0f ms", c.Percentile, x.Count, human(c.Window), s.value)
		default:
			b := base[[2]string{x.Service, x.Operation}]
			if b == 0 || b < uint64(c.MinRequests) {
				continue
			}
			rate := float64(x.Count) / c.Window.Seconds()
			baseRate := float64(b) / c.Baseline.Seconds()
			s.value = rate / baseRate
			if s.value >= c.RateDropBelow {
				continue
			}
			s.summary = fmt.Sprintf("%s %s gets %.0f%% of its usual requests", x.Service, x.Operation, 100*s.value)
			s.impact = fmt.Sprintf("%.2f req/s in the last %s against %.2f req/s in the %s before", rate, human(c.Window), baseRate, human(c.Baseline))
		}
		out = append(out, s)
	}
	return out, nil
}

func (e *evaluator) evalSLO(c *SLOCondition) ([]sample, error) {
	budget := 1 - c.Objective
	type burn struct {
		long, short float64
		count       uint64
	}
	hot := map[[2]string][]string{}
	worst := map[[2]string]burn{}
	for _, w := range c.Windows {
		long, err := e.counts(c.Service, e.now.Add(-w.Long), e.now, c.LatencyMS)
		if err != nil {
			return nil, err
		}
		short, err := e.counts(c.Service, e.now.Add(-w.Short), e.now, c.LatencyMS)
		if err != nil {
			return nil, err
		}
		shortBurn := map[[2]string]float64{}
		for _, x := range short {
			shortBurn[[2]string{x.Service, x.Operation}] = burnRate(x, c.LatencyMS, budget)
		}
		for _, x := range long {
			if !matchOp(x, c.Service, c.Operation) || x.Count == 0 || x.Count < uint64(c.MinRequests) {
				continue
			}
			k := [2]string{x.Service, x.Operation}
			lb, sb := burnRate(x, c.LatencyMS, budget), shortBurn[k]
			if lb < w.Factor || sb < w.Factor {
				continue
			}
			hot[k] = append(hot[k], fmt.Sprintf("%s/%s at %.1fx/%.1fx (threshold %gx)", human(w.Long), human(w.Short), lb, sb, w.Factor))
			if lb > worst[k].long {
				worst[k] = burn{lb, sb, x.Count}
			}
		}
	}
	what, sel := "availability", "error"
	if c.LatencyMS > 0 {
		what, sel = fmt.Sprintf("latency (< %g ms)", c.LatencyMS), "slow"
	}
	out := make([]sample, 0, len(hot))
	for k, pairs := range hot {
		b := worst[k]
		out = append(out, sample{
			labels: map[string]string{"service": k[0], "operation": k[1]},
			value:  b.long,
			summary: fmt.Sprintf("%s %s burns its %s error budget (SLO %g) %.1fx too fast",
				k[0], k[1], what, c.Objective, b.long),
			impact:         "burn rate " + strings.Join(pairs, "; "),
			compareService: k[0], compareOperation: k[1], compareSelection: sel,
		})
	}
	return out, nil
}

// burnRate is the bad ratio over the budget, rounded to 1e-6 so a burn
// exactly at a factor (15% bad of a 1% budget) is not lost to 1 - 0.99
// being 0.010000000000000009.
func burnRate(x red.EntryCounts, latencyMS, budget float64) float64 {
	return math.Round(badRatio(x, latencyMS)/budget*1e6) / 1e6
}

func badRatio(x red.EntryCounts, latencyMS float64) float64 {
	if x.Count == 0 {
		return 0
	}
	bad := x.Errors
	if latencyMS > 0 {
		bad = x.Slow
	}
	return float64(bad) / float64(x.Count)
}

// matchFindings selects the window's groups of a findings condition.
func matchFindings(kinds, service string, minSev analyze.Severity, systemic bool) func(findingGroup) bool {
	var want map[string]bool
	if list := splitList(kinds); len(list) > 0 {
		want = map[string]bool{}
		for _, k := range list {
			want[k] = true
		}
	}
	return func(g findingGroup) bool {
		return g.systemic == systemic && (want == nil || want[g.kind]) && (service == "" || g.service == service) &&
			g.severity.Rank() >= minSev.Rank()
	}
}

// better says whether finding a should be cited rather than b: the
// larger impact, the newer on ties.
func better(a, b *findingstore.Stored) bool {
	if a.ImpactMS != b.ImpactMS {
		return a.ImpactMS > b.ImpactMS
	}
	return a.Time.After(b.Time)
}

func (e *evaluator) evalFindings(c *FindingsCondition) []sample {
	type total struct {
		count  int
		impact float64
		top    findingstore.Stored
	}
	match := matchFindings(c.Kind, c.Service, c.MinSeverity, false)
	groups := map[[2]string]*total{}
	e.window.each(e.now.Add(-c.Window), func(g findingGroup, a *findingAgg) {
		if !match(g) {
			return
		}
		k := [2]string{g.kind, g.service}
		t := groups[k]
		if t == nil {
			t = &total{top: a.top}
			groups[k] = t
		} else if better(&a.top, &t.top) {
			t.top = a.top
		}
		t.count += a.count
		t.impact += a.impact
	})
	var out []sample
	for k, t := range groups {
		if t.count <= c.MoreThan {
			continue
		}
		s := sample{labels: map[string]string{"kind": k[0], "service": k[1]}, value: float64(t.count),
			summary: fmt.Sprintf("%d× %s in %s in the last %s: %s", t.count, k[0], k[1], human(c.Window), t.top.Title),
			impact:  fmt.Sprintf("%s affected, %.0f ms on their critical paths in the last %s", plural(t.count, "trace"), t.impact, human(c.Window))}
		setFinding(&s, t.top)
		out = append(out, s)
	}
	return out
}

func (e *evaluator) evalCrossTrace(c *CrossTraceCondition) []sample {
	// One alert per finding: the detector's key tells findings apart (a
	// new error type names the type, a missing service its caller).
	match := matchFindings(c.Kind, c.Service, c.MinSeverity, true)
	latest := map[string]findingstore.Stored{}
	e.window.each(e.now.Add(-c.Window), func(g findingGroup, a *findingAgg) {
		if !match(g) {
			return
		}
		if l, ok := latest[g.key]; !ok || a.top.Time.After(l.Time) {
			latest[g.key] = a.top
		}
	})
	out := make([]sample, 0, len(latest))
	for k, f := range latest {
		// The finding's severity, unless the rule sets one.
		s := sample{labels: map[string]string{"kind": f.Kind, "service": f.Service, "operation": f.Operation, "finding_key": k,
			"severity": string(f.Severity)}, value: f.ImpactMS,
			summary: f.Title, impact: fmt.Sprintf("%.0f ms per affected request", f.ImpactMS)}
		if f.Operation != "" {
			s.compareService, s.compareOperation = f.Service, f.Operation
			s.compareSelection = "slow"
			if strings.Contains(f.Kind, "error") {
				s.compareSelection = "error"
			}
		}
		setFinding(&s, f)
		if s.traceID == "" && len(f.ExampleTraceIDs) > 0 {
			s.traceID = f.ExampleTraceIDs[0]
		}
		out = append(out, s)
	}
	return out
}

func culpritOf(f findingstore.Stored) analyze.Culprit {
	if f.Culprit != nil && f.Culprit.Service != "" {
		return *f.Culprit
	}
	return analyze.Culprit{Service: f.Service, Operation: f.Operation,
		Reason: fmt.Sprintf("the %s finding with the largest impact sits there", f.Kind)}
}

func setFinding(s *sample, f findingstore.Stored) {
	s.culprit = culpritOf(f)
	s.traceID = f.TraceID
	// Slow traces of the culprit's operation against its usual ones show
	// what the finding costs.
	if s.compareService == "" && s.culprit.Operation != "" {
		s.compareService, s.compareOperation, s.compareSelection = s.culprit.Service, s.culprit.Operation, "slow"
	}
}

// blameWindow is how far back RED and SLO alerts look for a culprit.
const blameWindow = 15 * time.Minute

// blame names the culprit of a RED or SLO alert: the top cause of the
// root-cause ranking of the endpoint over the last 15 minutes against the
// 15 before, else the culprit of the most severe, largest-impact finding of
// the service in those minutes, else the operation itself. The finding
// still gives the example trace and the comparison.
func (e *evaluator) blame(s *sample) {
	svc, op := s.labels["service"], s.labels["operation"]
	s.culprit = analyze.Culprit{Service: svc, Operation: op, Reason: "its own requests break the threshold; no finding points elsewhere"}
	var best *findingstore.Stored
	var bestRank int
	e.window.each(e.now.Add(-blameWindow), func(g findingGroup, a *findingAgg) {
		if g.service != svc {
			return
		}
		if r := g.severity.Rank(); best == nil || r > bestRank || r == bestRank && better(&a.top, best) {
			top := a.top
			best, bestRank = &top, r
		}
	})
	if best != nil {
		setFinding(s, *best)
	}
	if e.rank != nil {
		if c, ok := e.rank(svc, op); ok {
			s.culprit = c
		}
	}
}

// human writes a duration as people do: 10m, 1h30m, 45s.
func human(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
