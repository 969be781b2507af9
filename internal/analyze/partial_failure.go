package analyze

import (
	"fmt"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// PartialFailure finds a parent that ran several branches concurrently,
// most of which succeeded, and failed as a whole because one did not: the
// healthy work was thrown away.
type PartialFailure struct {
	MinConcurrent int `yaml:"min_concurrent"` // siblings running together, the failed one included
	MaxFailed     int `yaml:"max_failed"`     // failed branches at most (more is an outage, not a partial failure)
}

// NewPartialFailure returns the detector with docs/patterns.md defaults.
func NewPartialFailure() *PartialFailure { return &PartialFailure{MinConcurrent: 2, MaxFailed: 1} }

func init() { Register(func() Detector { return NewPartialFailure() }) }

// Kind implements Detector.
func (*PartialFailure) Kind() string { return "partial_failure" }

// Branch is one concurrent child of the parent.
type Branch struct {
	SpanRef
	Target          string `json:"target"`
	TargetOperation string `json:"target_operation"`
	Error           string `json:"error,omitempty"`
}

// PartialFailureEvidence is the evidence of a partial_failure finding.
type PartialFailureEvidence struct {
	Parent  SpanRef  `json:"parent"`
	Failing []Branch `json:"failing"`
	Healthy []Branch `json:"healthy"`
	// WastedMS is the wall-clock time of the healthy branches' work that the
	// failure threw away.
	WastedMS float64 `json:"wasted_ms"`
}

// Detect implements Detector. Concurrent means the branch overlaps the
// failing one in time by more than the clocks' tolerance (timing.go):
// back-to-back calls on an SDK that rounds to whole ms touch or overlap by
// a millisecond and are not concurrent. Severity is critical when the failure reached the
// root (the user got an error), warning otherwise. impact_ms is the
// critical-path time spent in the failing branch.
func (d *PartialFailure) Detect(t *Trace, _ *Env) []Finding {
	var out []Finding
	for _, p := range t.Nodes {
		if len(p.Children) < 2 {
			continue
		}
		whole := failedAsWhole(p)
		if whole == nil {
			continue
		}
		var failed []*Node
		for _, c := range p.Children {
			if Failed(c) {
				failed = append(failed, c)
			}
		}
		if len(failed) == 0 || len(failed) > max(d.MaxFailed, 1) {
			continue
		}
		var healthy []*Node
		for _, c := range p.Children {
			if Failed(c) || c.Duration() == 0 {
				continue
			}
			for _, f := range failed {
				if concurrent(c, f) { // not merely touching on a rounded clock

					healthy = append(healthy, c)
					break
				}
			}
		}
		if len(healthy) < len(failed) || len(healthy)+len(failed) < d.MinConcurrent {
			continue
		}
		branch := func(n *Node, withErr bool) Branch {
			b := Branch{SpanRef: RefOf(t, n), Target: n.Span.Service, TargetOperation: n.Span.Name}
			if IsCall(n) {
				b.Target, b.TargetOperation = CallTarget(t, n)
			}
			if withErr {
				typ, msg := ExceptionOf(n.Span)
				b.Error = model.Clip(strings.Trim(typ+": "+msg, ": "), 200)
				if b.Error == "" {
					if code, ok := HTTPStatus(n.Span); ok {
						b.Error = fmt.Sprintf("HTTP %d", code)
					}
				}
			}
			return b
		}
		ev := PartialFailureEvidence{Parent: RefOf(t, p)}
		ids := []string{p.Span.SpanID.String()}
		var names []string
		for _, f := range failed {
			ev.Failing = append(ev.Failing, branch(f, true))
			ids = append(ids, f.Span.SpanID.String())
			names = append(names, ev.Failing[len(ev.Failing)-1].Target)
		}
		var lo, hi uint64
		for i, h := range healthy {
			ev.Healthy = append(ev.Healthy, branch(h, false))
			ids = append(ids, h.Span.SpanID.String())
			if i == 0 || h.Start() < lo {
				lo = h.Start()
			}
			hi = max(hi, h.End())
		}
		ev.WastedMS = roundMS(hi - lo)
		rootFailed := false
		for q := whole; q != nil; q = q.Parent {
			if !Failed(q) {
				break
			}
			rootFailed = q.Parent == nil
		}
		sev := SeverityWarning
		if rootFailed {
			sev = SeverityCritical
		}
		title := fmt.Sprintf("%s failed because %s failed while %d concurrent branch(es) succeeded",
			spanLabel(t, whole), strings.Join(uniqSorted(names), ", "), len(healthy))
		fix := "Degrade gracefully: answer with the healthy branches' results and mark the " +
			strings.Join(uniqSorted(names), ", ") + " part as unavailable (with a timeout and a default or cached value) instead of failing the whole request."
		out = append(out, Finding{Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids,
			ImpactMS: roundMS(critUnder(t, failed...)), Evidence: ev, Fix: fix})
	}
	return out
}

// failedAsWhole returns the span that failed as a whole because of p's
// children: p itself, or, when p is an in-process span (Express's
// "request handler") whose status nobody sets, the service entry above it
// that failed with no failure outside p's subtree, which is the error p's
// code answered with. nil when neither failed.
func failedAsWhole(p *Node) *Node {
	if Failed(p) {
		return p
	}
	if IsServiceEntry(p) || IsCall(p) {
		return nil
	}
	e := EntryOf(p)
	if e == nil || e.Span.Service != p.Span.Service || !Failed(e) {
		return nil
	}
	for q := p; q != e; q = q.Parent {
		for _, c := range q.Parent.Children {
			if c != q && failsWithin(c) {
				return nil
			}
		}
	}
	return e
}

// failsWithin reports whether n or a span under it failed.
func failsWithin(n *Node) bool {
	if Failed(n) {
		return true
	}
	for _, c := range n.Children {
		if failsWithin(c) {
			return true
		}
	}
	return false
}
