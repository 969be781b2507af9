package analyze

import (
	"fmt"
	"log/slog"

	"github.com/tracedx/tracedx/internal/model"
)

// Options configure one analysis.
type Options struct {
	// Detectors to run; nil runs DefaultDetectors().
	Detectors []Detector
	// History of earlier traces; nil means none (offline analysis).
	History History
	// MaxFindings caps the findings of one trace (0: DefaultMaxFindings,
	// negative: no cap). A pathological trace (200k spans, each overrunning
	// its parent) must not bury the one finding that matters.
	MaxFindings int
}

// DefaultMaxFindings is the per-trace cap when Options.MaxFindings is 0.
const DefaultMaxFindings = 100

// Analyze diagnoses one trace: it builds the span tree once, runs the
// detectors, stamps the trace id on their findings, orders them (most
// severe, then largest impact first) and adds the critical path and the
// why chain. A detector that panics on a malformed trace loses its
// findings for that trace instead of taking the caller down.
func Analyze(spans []model.Span, opts Options) Result {
	if opts.Detectors == nil {
		opts.Detectors = DefaultDetectors()
	}
	if opts.History == nil {
		opts.History = NoHistory{}
	}
	// Spans without a kind (converted exports) get one from the trace's
	// shape, or no call would be known as a call.
	spans = model.WithInferredKinds(spans)
	t := NewTrace(spans)
	res := Result{TraceID: t.ID.String(), SpanCount: len(t.Spans), DurationMS: NS(t.Duration()), Findings: []Finding{}}
	if root := t.Root(); root != nil {
		res.RootService, res.RootOperation = root.Span.Service, root.Span.Name
	}
	env := &Env{History: opts.History}
	for _, d := range opts.Detectors {
		for _, f := range runDetector(d, t, env) {
			f.TraceID = res.TraceID
			if f.SpanIDs == nil {
				f.SpanIDs = []string{}
			}
			res.Findings = append(res.Findings, f)
		}
	}
	res.Findings = mergeDuplicates(res.Findings)
	assignCulprits(t, res.Findings)
	sortFindings(res.Findings)
	limit := opts.MaxFindings
	if limit == 0 {
		limit = DefaultMaxFindings
	}
	if limit > 0 && len(res.Findings) > limit {
		// The order above puts the most severe and costliest first.
		res.FindingsOmitted = len(res.Findings) - limit
		res.Findings = res.Findings[:limit:limit]
	}
	res.CriticalPath = t.CriticalPath().Steps(t)
	if res.CriticalPath == nil {
		res.CriticalPath = []PathStep{}
	}
	res.Why = whyChain(t, res.Findings, opts.History)
	return res
}

func runDetector(d Detector, t *Trace, env *Env) (out []Finding) {
	defer func() {
		if r := recover(); r != nil {
			slog.Error("analyze: detector panicked; its findings for this trace are dropped",
				"kind", d.Kind(), "trace_id", t.ID.String(), "panic", fmt.Sprint(r))
			out = nil
		}
	}()
	return d.Detect(t, env)
}
