package analyze

import (
	"fmt"
	"slices"

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
	// single call) would save on the critical path.
	BatchSavingMS float64 `json:"batch_saving_ms"`
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
	title += fmt.Sprintf("; a batch call would save ~%.0f ms", NS(saving))
	return Finding{
		Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids, ImpactMS: roundMS(saving),
		Evidence: FanOutEvidence{
			Target: svc, Operation: op, Count: len(g), Caller: RefOf(t, p), Mode: mode, MaxConcurrency: conc,
			TotalMS: roundMS(total), CriticalMS: roundMS(crit), BatchSavingMS: roundMS(saving),
		},
		Fix: "Add or use a batch endpoint on " + svc + " (one call with all ids), or cache the per-item answers; " +
			"if the calls must stay separate, run them concurrently with a bounded pool.",
	}, true
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
