package analyze

import (
	"encoding/json"
	"sort"

	"github.com/tracedx/tracedx/internal/model"
)

// Explain builds the result of a trace around findings decided earlier
// (the ones the server stored when it analysed the trace): the critical
// path and the why chain come from the spans, the findings are taken as
// they are, and a statement's usual time in the chain is the one its
// stored slow_query finding recorded. A trace then has one answer, however the baselines have moved
// since; Analyze is what today's baselines would say.
func Explain(spans []model.Span, findings []Finding, h History) Result {
	if h == nil {
		h = NoHistory{}
	}
	t := NewTrace(model.WithInferredKinds(spans))
	res := Result{TraceID: t.ID.String(), SpanCount: len(t.Spans), DurationMS: NS(t.Duration()), Findings: make([]Finding, 0, len(findings))}
	if root := t.Root(); root != nil {
		res.RootService, res.RootOperation = root.Span.Service, root.Span.Name
	}
	for _, f := range findings {
		if f.SpanIDs == nil {
			f.SpanIDs = []string{}
		}
		res.Findings = append(res.Findings, withTypedEvidence(f))
	}
	// Findings stored before culprits existed get one by today's rules.
	assignCulprits(t, res.Findings)
	sortFindings(res.Findings)
	res.CriticalPath = t.CriticalPath().Steps(t)
	if res.CriticalPath == nil {
		res.CriticalPath = []PathStep{}
	}
	res.Why = whyChain(t, res.Findings, recorded(res.Findings, h))
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

// withTypedEvidence restores the evidence types Explain reads: after a
// round trip through storage, evidence is generic JSON.
func withTypedEvidence(f Finding) Finding {
	if f.Evidence == nil {
		return f
	}
	switch f.Kind {
	case (*ErrorOrigin)(nil).Kind():
		if _, ok := f.Evidence.(ErrorOriginEvidence); !ok {
			var ev ErrorOriginEvidence
			if retype(f.Evidence, &ev) {
				f.Evidence = ev
			}
		}
	case (*SlowQuery)(nil).Kind():
		if _, ok := f.Evidence.(SlowQueryEvidence); !ok {
			var ev SlowQueryEvidence
			if retype(f.Evidence, &ev) {
				f.Evidence = ev
			}
		}
	}
	return f
}

func retype(generic, typed any) bool {
	raw, err := json.Marshal(generic)
	return err == nil && json.Unmarshal(raw, typed) == nil
}

// recordedHistory answers the why chain's "usual time" of a statement from
// the stored slow_query findings, which recorded what was usual when the
// trace was analysed, so the chain cannot contradict them; other figures
// come from the live history.
type recordedHistory struct {
	History
	stmts map[[2]string]Baseline
}

func recorded(findings []Finding, h History) History {
	r := recordedHistory{History: h}
	for _, f := range findings {
		ev, ok := f.Evidence.(SlowQueryEvidence)
		if !ok {
			continue
		}
		if r.stmts == nil {
			r.stmts = map[[2]string]Baseline{}
		}
		// UsualMS 0: nothing was usual then, and today's figure must not
		// stand in for it.
		r.stmts[[2]string{ev.DBSystem, ev.Shape}] = Baseline{P50MS: ev.UsualMS, P95MS: ev.UsualP95MS}
	}
	return r
}

// StatementDuration implements History.
func (r recordedHistory) StatementDuration(dbSystem, shape string) (Baseline, bool) {
	if b, ok := r.stmts[[2]string{dbSystem, shape}]; ok {
		return b, b.P50MS > 0
	}
	return r.History.StatementDuration(dbSystem, shape)
}
