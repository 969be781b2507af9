package analyze

import (
	"fmt"

	"github.com/tracedx/tracedx/internal/model"
)

// TimeoutMismatch finds inverted timeout hierarchies: a child still running
// after its parent ended (the caller gave up, the callee kept working for
// nobody), with the inner call that waited longer than the caller's timeout
// when one is visible. (An inner wait longer than an outer timeout can only
// show up in a trace as a descendant outliving an ancestor, so both cases
// are found at the edge where the inversion starts.)
type TimeoutMismatch struct {
	// SkewToleranceMS absorbs clock skew between hosts: overruns up to this
	// are not reported.
	SkewToleranceMS float64 `yaml:"skew_tolerance_ms"`
}

// NewTimeoutMismatch returns the detector with defaults ("any" inversion
// in shared/patterns.md, beyond clock skew).
func NewTimeoutMismatch() *TimeoutMismatch { return &TimeoutMismatch{SkewToleranceMS: 2} }

func init() { Register(func() Detector { return NewTimeoutMismatch() }) }

// Kind implements Detector.
func (*TimeoutMismatch) Kind() string { return "timeout_mismatch" }

// TimeoutMismatchEvidence is the evidence of a timeout_mismatch finding.
type TimeoutMismatchEvidence struct {
	Parent SpanRef `json:"parent"`
	Child  SpanRef `json:"child"`
	// InvertedByMS is how long the child ran after the parent ended.
	InvertedByMS float64 `json:"inverted_by_ms"`
	// ParentWaitedMS is how long the parent waited before giving up.
	ParentWaitedMS float64 `json:"parent_waited_ms"`
	// InnerTimeout is the longest timed-out call below the child, when it
	// waited longer than the parent did: the inner timeout is longer than
	// the outer one.
	InnerTimeout  *SpanRef `json:"inner_timeout,omitempty"`
	InnerWaitedMS float64  `json:"inner_waited_ms,omitempty"`
}

// Detect implements Detector. Asynchronous children (a consumer under a
// producer) legitimately outlive their parent and are skipped. impact_ms is
// 0: the request had already ended; the cost is wasted work and load.
// Severity: warning when the inversion is ≥ 100 ms or an inner timeout is
// longer than the outer one, info below.
func (d *TimeoutMismatch) Detect(t *Trace, _ *Env) []Finding {
	tol := uint64(d.SkewToleranceMS * 1e6)
	var out []Finding
	for _, n := range t.Nodes {
		p := n.Parent
		if p == nil || asyncEdge(p, n) || n.End() <= p.End()+tol {
			continue
		}
		out = append(out, d.finding(t, p, n, n.End()-p.End()))
	}
	return out
}

func asyncEdge(p, c *Node) bool {
	return c.Span.Kind == model.KindConsumer || (p.Span.Kind == model.KindProducer && c.Span.Kind != model.KindClient)
}

// innerTimeout is the longest timed-out call in n's subtree.
func innerTimeout(n *Node) *Node {
	var best *Node
	stack := []*Node{n}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if IsCall(c) && Failed(c) && IsTimeoutLike(c.Span) && (best == nil || c.Duration() > best.Duration()) {
			best = c
		}
		stack = append(stack, c.Children...)
	}
	return best
}

func (d *TimeoutMismatch) finding(t *Trace, p, c *Node, over uint64) Finding {
	ev := TimeoutMismatchEvidence{Parent: RefOf(t, p), Child: RefOf(t, c), InvertedByMS: roundMS(over),
		ParentWaitedMS: roundMS(p.Duration())}
	ids := []string{p.Span.SpanID.String(), c.Span.SpanID.String()}
	title := fmt.Sprintf("%s kept running %.0f ms after its caller (%s) gave up after %.0f ms",
		spanLabel(t, c), NS(over), spanLabel(t, p), NS(p.Duration()))
	if in := innerTimeout(c); in != nil && in.Duration() > p.Duration() {
		r := RefOf(t, in)
		ev.InnerTimeout, ev.InnerWaitedMS = &r, roundMS(in.Duration())
		ids = append(ids, in.Span.SpanID.String())
		title += fmt.Sprintf("; its own call %s waited %.0f ms, longer than the caller's timeout", spanLabel(t, in), NS(in.Duration()))
	}
	sev := SeverityInfo
	if over >= 100e6 || ev.InnerTimeout != nil {
		sev = SeverityWarning
	}
	return Finding{
		Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids, ImpactMS: 0, Evidence: ev,
		Fix: "Propagate the caller's deadline (gRPC deadlines, context cancellation, a timeout header) so " + c.Span.Service +
			" stops when nobody waits for the answer, and keep every callee's timeout below its caller's.",
	}
}
