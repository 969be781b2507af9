// Package analyze is tracedx's diagnosis engine: a trace model with the span
// tree built once, detectors as small independent units over it (one file
// each, registered in init), the critical path and the "why" chain.
package analyze

import (
	"sort"

	"github.com/tracedx/tracedx/internal/model"
)

// Node is one span in the tree.
type Node struct {
	Span     *model.Span
	Index    int // index in Trace.Spans / Trace.Nodes
	Parent   *Node
	Children []*Node // sorted by start time, then end time
	Depth    int
	// Orphan is true when the span names a parent that is not in the trace.
	Orphan bool
}

// Start returns the span start in unix ns.
func (n *Node) Start() uint64 { return n.Span.StartUnixNano }

// End returns the span end in unix ns.
func (n *Node) End() uint64 { return n.Span.EndUnixNano }

// Duration returns the span duration in ns.
func (n *Node) Duration() uint64 { return n.Span.DurationNano() }

// Failed reports whether the span has status ERROR.
func (n *Node) Failed() bool { return n.Span.StatusCode == model.StatusError }

// Trace is one trace with its span tree.
type Trace struct {
	ID    model.TraceID
	Spans []model.Span
	Nodes []*Node
	// Roots are spans without a parent, then orphans (parent missing), each
	// group by start time. Roots[0] is the request as a user sees it.
	Roots []*Node
	ByID  map[model.SpanID]*Node

	cp *CriticalPath
	// memo holds what detectors derive once per trace (semconv.go): call
	// targets (normalising statements and URLs is costly) and an index of
	// the critical path for fast per-subtree lookups.
	memo *detectMemo
}

// NewTrace builds the tree. Spans are not copied; the caller must not modify
// them while the Trace is in use.
func NewTrace(spans []model.Span) *Trace {
	t := &Trace{Spans: spans, Nodes: make([]*Node, len(spans)), ByID: make(map[model.SpanID]*Node, len(spans))}
	if len(spans) > 0 {
		t.ID = spans[0].TraceID
	}
	backing := make([]Node, len(spans))
	for i := range spans {
		n := &backing[i]
		n.Span, n.Index = &spans[i], i
		t.Nodes[i] = n
		// Duplicate span ids (a client retrying an export) keep the first.
		if _, dup := t.ByID[spans[i].SpanID]; !dup {
			t.ByID[spans[i].SpanID] = n
		}
	}
	var roots, orphans []*Node
	for _, n := range t.Nodes {
		if n.Span.ParentSpanID.IsZero() {
			roots = append(roots, n)
			continue
		}
		p, ok := t.ByID[n.Span.ParentSpanID]
		if !ok || p == n {
			n.Orphan = true
			orphans = append(orphans, n)
			continue
		}
		n.Parent = p
		p.Children = append(p.Children, n)
	}
	byStart := func(ns []*Node) {
		sort.SliceStable(ns, func(i, j int) bool {
			if ns[i].Start() != ns[j].Start() {
				return ns[i].Start() < ns[j].Start()
			}
			return ns[i].End() < ns[j].End()
		})
	}
	byStart(roots)
	byStart(orphans)
	t.Roots = append(roots, orphans...)
	// Depths by an explicit stack: traces can be thousands of levels deep.
	stack := append([]*Node(nil), t.Roots...)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		byStart(n.Children)
		for _, c := range n.Children {
			c.Depth = n.Depth + 1
			stack = append(stack, c)
		}
	}
	return t
}

// Root returns the main root, or nil for an empty trace.
func (t *Trace) Root() *Node {
	if len(t.Roots) == 0 {
		return nil
	}
	return t.Roots[0]
}

// Duration returns the trace's wall-clock extent in ns.
func (t *Trace) Duration() uint64 {
	var lo, hi uint64
	for i := range t.Spans {
		s := &t.Spans[i]
		if lo == 0 || s.StartUnixNano < lo {
			lo = s.StartUnixNano
		}
		if s.EndUnixNano > hi {
			hi = s.EndUnixNano
		}
	}
	if hi < lo {
		return 0
	}
	return hi - lo
}

// Walk visits every node reachable from the roots, parents before children.
func (t *Trace) Walk(fn func(n *Node)) {
	stack := make([]*Node, 0, 64)
	for i := len(t.Roots) - 1; i >= 0; i-- {
		stack = append(stack, t.Roots[i])
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		fn(n)
		for i := len(n.Children) - 1; i >= 0; i-- {
			stack = append(stack, n.Children[i])
		}
	}
}

// IsAncestor reports whether a is a proper ancestor of n.
func IsAncestor(a, n *Node) bool {
	for p := n.Parent; p != nil; p = p.Parent {
		if p == a {
			return true
		}
	}
	return false
}

// NS converts nanoseconds to float milliseconds, the unit of our APIs.
func NS(ns uint64) float64 { return float64(ns) / 1e6 }
