package analyze

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// FanOut finds many calls from one parent to the same target operation of
// another service: the service-level N+1.
type FanOut struct {
	MinCalls int `yaml:"min_calls"`
	// A batch call must save at least MinSavingMS and MinSavingShare of the
	// parent's duration: ten concurrent calls that a batch would shorten by
	// 0.4 ms are how the code should look, not a finding.
	MinSavingMS    float64 `yaml:"min_saving_ms"`
	MinSavingShare float64 `yaml:"min_saving_share"`
}

// NewFanOut returns the detector with its defaults (docs/patterns.md).
func NewFanOut() *FanOut { return &FanOut{MinCalls: 5, MinSavingMS: 10, MinSavingShare: 0.05} }

func init() { Register(func() Detector { return NewFanOut() }) }

// Kind implements Detector.
func (*FanOut) Kind() string { return "fan_out" }

// FanOutEvidence is the evidence of a fan_out finding.
type FanOutEvidence struct {
	Target    string  `json:"target"`
	Operation string  `json:"operation"`
	Count     int     `json:"count"`
	Caller    SpanRef `json:"caller"`
	// Mode is "sequential", "concurrent" or "partly_concurrent".
	Mode           string  `json:"mode"`
	MaxConcurrency int     `json:"max_concurrency"`
	TotalMS        float64 `json:"total_ms"`
	CriticalMS     float64 `json:"critical_ms"`
	// BatchSavingMS is what one batch call (about as long as the slowest
	// single call) would save on the critical path. With CapacityBound it
	// is at most what the calls spent queueing at the callee.
	BatchSavingMS float64 `json:"batch_saving_ms"`
	// CapacityBound: the calls slow each other down at the callee (the
	// more run at once, the longer each takes), so the callee's capacity,
	// not the number of calls, bounds the saving. FastestCallMS is a call
	// with the least company, TypicalCallMS the median call, and
	// CalleeParallelism about how many calls the callee served at a time.
	CapacityBound     bool    `json:"capacity_bound,omitempty"`
	FastestCallMS     float64 `json:"fastest_call_ms,omitempty"`
	TypicalCallMS     float64 `json:"typical_call_ms,omitempty"`
	CalleeParallelism float64 `json:"callee_parallelism,omitempty"`
}

// Detect implements Detector. Groups whose batch saving is below the
// thresholds are no finding. Database calls are n_plus_one_query's and
// message publishing is not request/response, so both are left out; a
// group that is mostly one retry chain is retry_storm's. Severity by the
// batch saving (SeverityForImpact), at least warning when sequential.
func (d *FanOut) Detect(t *Trace, _ *Env) []Finding {
	var out []Finding
	keep := func(n *Node) bool {
		return !IsDB(n) && n.Span.Kind != model.KindProducer && n.Span.Attrs.Str("messaging.system") == ""
	}
	for _, p := range t.Nodes {
		if len(p.Children) < d.MinCalls {
			continue
		}
		for _, g := range groupCallsByTarget(t, p, keep) {
			g = beforeAnswer(p, g)
			if len(g) < d.MinCalls {
				continue
			}
			inRetries := 0
			for _, c := range retryChainsOf(g, 1e6) {
				inRetries += len(c)
			}
			if inRetries*2 >= len(g) {
				continue
			}
			if f, ok := d.finding(t, p, g); ok {
				out = append(out, f)
			}
		}
	}
	return out
}

func (d *FanOut) finding(t *Trace, p *Node, g []*Node) (Finding, bool) {
	var total, longest uint64
	for _, n := range g {
		total += n.Duration()
		longest = max(longest, n.Duration())
	}
	conc := maxConcurrency(g)
	mode := "sequential"
	switch {
	case conc >= len(g):
		mode = "concurrent"
	case conc > 1:
		mode = "partly_concurrent"
	}
	crit := critUnder(t, g...)
	saving := subSat(crit, longest)
	// Calls stretched by the burst itself: the longest one is no
	// estimate of a batch, which does the same work at the same callee.
	q, queued := calleeQueue(t, g, conc, crit)
	if queued {
		saving = q.waitNS
	}
	if NS(saving) < d.MinSavingMS || float64(saving) < d.MinSavingShare*float64(p.Duration()) {
		return Finding{}, false
	}
	svc, op := CallTarget(t, g[0])
	ids := make([]string, len(g))
	for i, n := range g {
		ids[i] = spanIDOf(t, n)
	}
	sev := SeverityForImpact(saving, critTotal(t))
	if mode == "sequential" && sev.Rank() < SeverityWarning.Rank() {
		sev = SeverityWarning
	}
	title := fmt.Sprintf("%d %s calls to %s %s from %s", len(g), mode, svc, opName(g[0], op), displayOp(p))
	if mode == "partly_concurrent" {
		title = fmt.Sprintf("%d calls (at most %d at once) to %s %s from %s", len(g), conc, svc, opName(g[0], op), displayOp(p))
	}
	ev := FanOutEvidence{
		Target: svc, Operation: op, Count: len(g), Caller: RefOf(t, p), Mode: mode, MaxConcurrency: conc,
		TotalMS: roundMS(total), CriticalMS: roundMS(crit), BatchSavingMS: roundMS(saving),
	}
	fix := "Add or use a batch endpoint on " + svc + " (one call with all ids), or cache the per-item answers; " +
		"if the calls must stay separate, run them concurrently with a bounded pool."
	if queued {
		ev.CapacityBound, ev.FastestCallMS, ev.TypicalCallMS = true, roundMS(q.fastestNS), roundMS(q.typicalNS)
		ev.CalleeParallelism = math.Round(q.parallel*10) / 10
		title += fmt.Sprintf(" slow each other down at %s (%.0f ms alone, %.0f ms typical, up to %d at once): %s's capacity, "+
			"not batching, bounds the saving, up to ~%.0f ms if one batch call costs about one call alone", svc, NS(q.fastestNS),
			NS(q.typicalNS), conc, svc, NS(saving))
		fix = fmt.Sprintf("Each call waits for the others at %s, which did about %.0f calls' work at a time: one batch call "+
			"(one query for all ids) saves the time only if it costs %s less work than the calls; otherwise raise %s's capacity "+
			"(workers, connection pools) or send fewer calls at once.", svc, max(1, q.parallel), svc, svc)
	} else {
		title += fmt.Sprintf("; a batch call would save ~%.0f ms", NS(saving))
	}
	return Finding{
		Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids, ImpactMS: roundMS(saving), Evidence: ev, Fix: fix,
	}, true
}

// queueAtCallee describes calls that slow each other down at the callee.
type queueAtCallee struct {
	fastestNS, typicalNS uint64
	// parallel is how many calls' worth of uncontended work the callee
	// did at a time over the burst.
	parallel float64
	// waitNS is the critical-path time beyond the calls served without
	// queueing, as many at once as the caller ran them.
	waitNS uint64
}

// calleeQueue reports whether the concurrent calls g (conc at most at
// once, crit on the critical path) stretch with concurrency: the typical
// call takes at least twice the fastest although they do the same work
// (the same statements and calls below each, when the callee is
// instrumented; else calls that start with more of the group already
// running take longer, rank correlation ≥ 0.5). The fastest call is then
// what the work costs without the burst, and a batch of such calls costs
// what the callee's capacity makes of the work, not the longest call.
func calleeQueue(t *Trace, g []*Node, conc int, crit uint64) (queueAtCallee, bool) {
	if conc < 2 || len(g) < 3 {
		return queueAtCallee{}, false
	}
	durs := make([]float64, len(g))
	sorted := make([]uint64, len(g))
	starts := make([]uint64, len(g))
	ends := make([]uint64, len(g))
	fastestAt := 0
	for i, n := range g {
		durs[i] = float64(n.Duration())
		sorted[i], starts[i], ends[i] = n.Duration(), n.Start(), n.End()
		if n.Duration() < g[fastestAt].Duration() {
			fastestAt = i
		}
	}
	slices.Sort(sorted)
	slices.Sort(starts)
	slices.Sort(ends)
	fastest, typical := sorted[0], sorted[len(sorted)/2]
	if fastest == 0 || typical < 2*fastest {
		return queueAtCallee{}, false
	}
	if work := workOf(t, g[fastestAt]); work != "" {
		same := 0
		for _, n := range g {
			if workOf(t, n) == work {
				same++
			}
		}
		if same*5 < len(g)*4 {
			return queueAtCallee{}, false // different work: a cache hit is not a queued miss
		}
	} else {
		// Company at start: calls of the group started by then and not ended.
		load := make([]float64, len(g))
		for i, n := range g {
			started, _ := slices.BinarySearch(starts, n.Start()+1)
			ended, _ := slices.BinarySearch(ends, n.Start()+1)
			load[i] = float64(started - ended)
		}
		if rankCorrelation(load, durs) < 0.5 {
			return queueAtCallee{}, false
		}
	}
	waves := uint64((len(g) + conc - 1) / conc)
	return queueAtCallee{fastestNS: fastest, typicalNS: typical, parallel: float64(len(g)) * float64(fastest) / float64(max(crit, 1)),
		waitNS: subSat(crit, waves*fastest)}, true
}

// workOf describes the work below a call: the statement shapes and the
// call targets under it, in order ("" when nothing below is a call).
// Pool spans (a connect, a session reset) carry no statement, so calls
// that waited differently for a connection still do the same work.
func workOf(t *Trace, n *Node) string {
	var b strings.Builder
	var walk func(*Node)
	walk = func(x *Node) {
		for _, c := range x.Children {
			switch {
			case IsDB(c) && c.Span.Attrs.Str("db.query.text", "db.statement") != "":
				b.WriteString(c.Span.Service + " " + DBShape(c.Span) + "\n")
			case IsCall(c) && !IsDB(c):
				svc, op := CallTarget(t, c)
				b.WriteString(c.Span.Service + " → " + svc + " " + op + "\n")
			}
			walk(c)
		}
	}
	walk(n)
	return b.String()
}

// rankCorrelation is Spearman's rank correlation of x and y (ties take
// their mean rank); 0 when either does not vary.
func rankCorrelation(x, y []float64) float64 {
	rx, ry := ranks(x), ranks(y)
	var mx, my float64
	for i := range rx {
		mx += rx[i]
		my += ry[i]
	}
	mx /= float64(len(rx))
	my /= float64(len(ry))
	var sxy, sxx, syy float64
	for i := range rx {
		dx, dy := rx[i]-mx, ry[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return 0
	}
	return sxy / math.Sqrt(sxx*syy)
}

func ranks(v []float64) []float64 {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(v[a], v[b]) })
	out := make([]float64, len(v))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && v[idx[j+1]] == v[idx[i]] {
			j++
		}
		r := float64(i+j)/2 + 1
		for k := i; k <= j; k++ {
			out[idx[k]] = r
		}
		i = j + 1
	}
	return out
}

// maxConcurrency of spans sorted by start: the most running at one
// instant, by a sweep over starts and sorted ends (n log n).
func maxConcurrency(g []*Node) int {
	ends := make([]uint64, len(g))
	for i, n := range g {
		ends[i] = n.End()
	}
	slices.Sort(ends)
	best, running, j := 0, 0, 0
	for _, n := range g {
		// A call that ended within the clock tolerance of this start ran
		// before it (timing.go).
		tol := max(uint64(1e6), n.Duration()/50)
		for j < len(ends) && ends[j] <= n.Start()+tol && running > 0 {
			j++
			running--
		}
		running++
		best = max(best, running)
	}
	return best
}

// beforeAnswer drops the calls that began after the request had answered
// (its service entry ended): no part of its latency, and most often not
// its calls at all. A client that queues requests for a free connection
// (an undici Agent with few connections, a mysql2 pool) can start a
// queued call in the context of whichever request opened the
// connection, so one old trace collects other requests' calls for
// seconds after it answered.
func beforeAnswer(p *Node, g []*Node) []*Node {
	e := EntryOf(p)
	if e == nil {
		return g
	}
	end := e.End() + timingTolerance(e, e)
	if !slices.ContainsFunc(g, func(c *Node) bool { return c.Start() > end }) {
		return g
	}
	return slices.DeleteFunc(slices.Clone(g), func(c *Node) bool { return c.Start() > end })
}
