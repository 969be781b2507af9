package analyze

import (
	"encoding/json"
	"sort"

	"github.com/tracedx/tracedx/internal/model"
)

// Explain builds the result of a trace around findings decided earlier
// (the ones the server stored when it analysed the trace): the critical
// path and the why chain come from the spans, the findings are taken as
// they are. A trace then has one answer, however the baselines have moved
// since; Analyze is what today's baselines would say.
func Explain(spans []model.Span, findings []Finding, h History) Result {
	if h == nil {
		h = NoHistory{}
	}
	t := NewTrace(spans)
	res := Result{TraceID: t.ID.String(), SpanCount: len(spans), DurationMS: NS(t.Duration()), Findings: make([]Finding, 0, len(findings))}
	if root := t.Root(); root != nil {
		res.RootService, res.RootOperation = root.Span.Service, root.Span.Name
	}
	for _, f := range findings {
		if f.SpanIDs == nil {
			f.SpanIDs = []string{}
		}
		res.Findings = append(res.Findings, withTypedEvidence(f))
	}
	sortFindings(res.Findings)
	res.CriticalPath = t.CriticalPath().Steps(t)
	if res.CriticalPath == nil {
		res.CriticalPath = []PathStep{}
	}
	res.Why = whyChain(t, res.Findings, h)
	return res
}

// sortFindings puts the most severe, then the costliest findings first.
func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Severity.Rank() != b.Severity.Rank() {
			return a.Severity.Rank() > b.Severity.Rank()
		}
		if a.ImpactMS != b.ImpactMS {
			return a.ImpactMS > b.ImpactMS
		}
		return a.Kind < b.Kind
	})
}

// withTypedEvidence restores the evidence type the why chain reads: after
// a round trip through storage, evidence is generic JSON.
func withTypedEvidence(f Finding) Finding {
	if f.Kind != (*ErrorOrigin)(nil).Kind() || f.Evidence == nil {
		return f
	}
	if _, ok := f.Evidence.(ErrorOriginEvidence); ok {
		return f
	}
	raw, err := json.Marshal(f.Evidence)
	if err != nil {
		return f
	}
	var ev ErrorOriginEvidence
	if json.Unmarshal(raw, &ev) == nil {
		f.Evidence = ev
	}
	return f
}
