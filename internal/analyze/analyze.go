package analyze

import (
	"sort"

	"github.com/tracedx/tracedx/internal/model"
)

// Options configure one analysis.
type Options struct {
	// Detectors to run; nil runs DefaultDetectors().
	Detectors []Detector
	// History of earlier traces; nil means none (offline analysis).
	History History
}

// Analyze diagnoses one trace: it runs the detectors, orders the findings
// (most severe, then largest impact first) and adds the critical path and
// the why chain.
func Analyze(spans []model.Span, opts Options) Result {
	if opts.Detectors == nil {
		opts.Detectors = DefaultDetectors()
	}
	if opts.History == nil {
		opts.History = NoHistory{}
	}
	t := NewTrace(spans)
	res := Result{TraceID: t.ID.String(), SpanCount: len(spans), DurationMS: NS(t.Duration()), Findings: []Finding{}}
	if root := t.Root(); root != nil {
		res.RootService, res.RootOperation = root.Span.Service, root.Span.Name
	}
	env := &Env{History: opts.History}
	for _, d := range opts.Detectors {
		for _, f := range d.Detect(t, env) {
			f.TraceID = res.TraceID
			if f.SpanIDs == nil {
				f.SpanIDs = []string{}
			}
			res.Findings = append(res.Findings, f)
		}
	}
	sort.SliceStable(res.Findings, func(i, j int) bool {
		a, b := res.Findings[i], res.Findings[j]
		if a.Severity.Rank() != b.Severity.Rank() {
			return a.Severity.Rank() > b.Severity.Rank()
		}
		return a.ImpactMS > b.ImpactMS
	})
	res.CriticalPath = t.CriticalPath().Steps(t)
	if res.CriticalPath == nil {
		res.CriticalPath = []PathStep{}
	}
	res.Why = whyChain(t, res.Findings)
	return res
}
