// Package analyze is tracedx's diagnosis engine: a trace model with the span
// tree built once, detectors as small independent units over it (one file
// each, registered in init), the critical path and the "why" chain.
package analyze

import (
	"cmp"
	"slices"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/zipkin"
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
	// failed memoises Failed (0 not yet known, 1 no, 2 yes): detectors ask
	// it of the same spans again and again, and each answer reads several
	// attributes and the callers above.
	failed uint8
	// isDB memoises IsDB the same way: most detectors ask it of every span.
	isDB uint8
	// isCall and proxyHop memoise IsCall and isProxyHop the same way.
	isCall, proxyHop uint8
	// dbSystem memoises DBSystem of the span once dbSystemDone is set.
	dbSystem     string
	dbSystemDone bool
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

	// SkewShifted counts the spans whose times were moved to undo a clock
	// offset between hosts (see skewShift).
	SkewShifted int

	cp *CriticalPath
	// memo holds what detectors derive once per trace (semconv.go): call
	// targets (normalising statements and URLs is costly) and an index of
	// the critical path for fast per-subtree lookups.
	memo *detectMemo
}

// NewTrace builds the tree. Spans are not copied, unless clocks of two hosts
// disagree (skewShift), and then Trace.Spans is the corrected copy; the caller
// must not modify them while the Trace is in use.
func NewTrace(spans []model.Span) *Trace { return buildTrace(spans, true) }

func buildTrace(spans []model.Span, adjust bool) *Trace {
	t := &Trace{Spans: spans, Nodes: make([]*Node, len(spans)), ByID: make(map[model.SpanID]*Node, len(spans))}
	if len(spans) > 0 {
		t.ID = spans[0].TraceID
	}
	backing := make([]Node, len(spans))
	repeats := 0
	for i := range spans {
		n := &backing[i]
		n.Span, n.Index = &spans[i], i
		t.Nodes[i] = n
		// Duplicate span ids (a client retrying an export) keep the first,
		// except that a CLIENT owns an id it shares: Zipkin v1 data reports
		// the server half and timeless fragments under the client's id.
		o, dup := t.ByID[spans[i].SpanID]
		if dup && sameSpan(o.Span, n.Span) {
			repeats++
		}
		if !dup || n.Span.Kind == model.KindClient && o.Span.Kind != model.KindClient {
			t.ByID[spans[i].SpanID] = n
		}
	}
	if repeats > 0 {
		// A span delivered twice (an exporter or a collector retrying a
		// batch, at least once) is one span: counted twice it would double
		// a loop's queries and detach a copy of itself.
		return NewTrace(withoutRepeats(spans, repeats))
	}
	// A server half whose client half never arrived stands in for it:
	// the server's own spans name the shared id.
	var alias map[model.SpanID]*Node
	shared := make([]bool, len(spans))
	for i, n := range t.Nodes {
		if shared[i] = sharedHalf(n); !shared[i] {
			continue
		}
		if _, ok := t.ByID[n.Span.ParentSpanID]; !ok {
			if alias == nil {
				alias = map[model.SpanID]*Node{}
			}
			alias[n.Span.ParentSpanID] = n
		}
	}
	parents := make([]*Node, len(spans))
	var halves map[*Node][]*Node // client -> server halves of its shared ids
	var roots, orphans []*Node
	for i, n := range t.Nodes {
		pid := n.Span.ParentSpanID
		half := shared[i]
		// Only a SERVER span can be an unflagged half: the map is read
		// for those alone, as most spans of a large trace are not.
		if n.Span.Kind == model.KindServer && unflaggedHalf(n, t.ByID[n.Span.SpanID]) {
			pid, half = n.Span.SpanID, true
		}
		if pid.IsZero() {
			roots = append(roots, n)
			continue
		}
		p, ok := t.ByID[pid]
		if !ok {
			p, ok = alias[pid]
		}
		if (!ok || p == n) && half {
			// The client half was never reported (the caller sent B3
			// headers without a span, or its span was lost): the server
			// half hangs where Zipkin shows it, under the parent it named.
			orig, err := model.ParseSpanID(n.Span.Attrs.Str(zipkin.AttrSharedParent))
			if err != nil {
				roots = append(roots, n)
				continue
			}
			p, ok = t.ByID[orig]
			half = false
		}
		if !ok || p == n {
			n.Orphan = true
			orphans = append(orphans, n)
			continue
		}
		parents[i] = p
		if half {
			if halves == nil {
				halves = map[*Node][]*Node{}
			}
			halves[p] = append(halves[p], n)
		}
	}
	kids := make([]int32, len(spans))
	for i, n := range t.Nodes {
		p := parents[i]
		if p == nil {
			continue
		}
		// With B3 shared ids the server's own spans name the shared id,
		// which is the client's: they belong under the server half of
		// their own service, as Zipkin draws them. A span of a third
		// service naming it was called from the server side (a client
		// span does not call out), through a client span that was lost.
		if hs := halves[p]; len(hs) > 0 && !slices.Contains(hs, n) {
			q := p
			for _, h := range hs {
				if h.Span.Service == n.Span.Service {
					q = h
					break
				}
			}
			if q == p && (shared[i] || n.Span.Service != p.Span.Service && n.Span.Kind != model.KindServer) {
				q = hs[0]
			}
			p = q
		}
		n.Parent = p
		kids[p.Index]++
	}
	// Every node's children are slices of one array, sized once: appending
	// them one by one grew thousands of small slices.
	all := make([]*Node, 0, len(spans))
	for i, n := range t.Nodes {
		if k := int(kids[i]); k > 0 {
			n.Children = all[len(all) : len(all) : len(all)+k]
			all = all[:len(all)+k]
		}
	}
	for _, n := range t.Nodes {
		if p := n.Parent; p != nil {
			p.Children = append(p.Children, n)
		}
	}
	byStart := func(ns []*Node) {
		// Exporters mostly send children in start order: checking costs a
		// pass, a stable sort of thousands of children many.
		if !slices.IsSortedFunc(ns, compareStart) {
			slices.SortStableFunc(ns, compareStart)
		}
	}
	byStart(roots)
	byStart(orphans)
	t.Roots = append(roots, orphans...)
	// Depths by an explicit stack: traces can be thousands of levels deep.
	// Parents are visited before their children, so the clock corrections
	// (skewShift) are found in the same walk.
	var shift []int64
	stack := append([]*Node(nil), t.Roots...)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if adjust {
			var d int64
			if shift != nil && n.Parent != nil {
				d = shift[n.Parent.Index]
			}
			if d = skewShift(n, d); d != 0 {
				if shift == nil {
					shift = make([]int64, len(spans))
				}
				shift[n.Index] = d
			}
		}
		byStart(n.Children)
		for _, c := range n.Children {
			c.Depth = n.Depth + 1
			stack = append(stack, c)
		}
	}
	if shift != nil {
		// The caller's spans stay as recorded; the tree is built again on
		// a copy with the corrected times.
		fixed := slices.Clone(spans)
		moved := 0
		for i, d := range shift {
			if d != 0 {
				fixed[i].StartUnixNano = uint64(int64(fixed[i].StartUnixNano) + d)
				fixed[i].EndUnixNano = uint64(int64(fixed[i].EndUnixNano) + d)
				moved++
			}
		}
		t = buildTrace(fixed, false)
		t.SkewShifted = moved
	}
	return t
}

// compareStart orders nodes by start, then end.
func compareStart(a, b *Node) int {
	if c := cmp.Compare(a.Start(), b.Start()); c != 0 {
		return c
	}
	return cmp.Compare(a.End(), b.End())
}

// skewShift returns how far a span must move to undo a clock offset
// between hosts, given its parent's move d. A span of its parent's process
// shares its clock and moves with it. A server of another service has a
// clock of its own: it stays where its host stamped it (a caller whose
// clock was off does not make its callee's wrong) unless it does not fit
// the corrected call. One that started more than a millisecond before the
// client call that reached it was stamped by another clock: it and
// everything below it move so that
// it sits in the middle of the call (as Jaeger's UI adjusts), or starts
// with it when it is longer than the call. So does a server that ended
// well after a call which recorded its successful answer (lateAnswer).
// Any other server that began after its call ended is left alone: it may
// have been reached after its caller gave up (timeout_mismatch).
func skewShift(n *Node, d int64) int64 {
	p := n.Parent
	if p == nil || p.Span.Kind != model.KindClient || n.Span.Kind != model.KindServer || n.Span.Service == p.Span.Service ||
		n.End() < n.Start() || p.End() < p.Start() {
		return d
	}
	ps, pe := int64(p.Start())+d, int64(p.End())+d
	ns, ne := int64(n.Start()), int64(n.End())
	if ns >= ps-1e6 && !lateAnswer(p, n, pe, ne) {
		return 0
	}
	want := ps
	if ne-ns <= pe-ps {
		want = ps + (pe-ps-(ne-ns))/2
	}
	return want - ns
}

// lateAnswer reports a server span that ends well after the call that
// reached it (beyond crossHostSkewNS) though that call recorded the
// server's successful answer and lasted at least as long as the server:
// the answer was sent before the call ended, so only the server's clock
// being ahead puts it later. A server running on after its caller gave
// up shows no such answer (timeout_mismatch's case) and is left alone.
func lateAnswer(p, n *Node, pe, ne int64) bool {
	// JavaScript SDKs stamp starts to the whole millisecond and ends finer,
	// so a server can measure a fraction of a millisecond longer than the
	// call that waited for it.
	if ne <= pe+crossHostSkewNS || n.Duration() > p.Duration()+timingTolerance(p, n) {
		return false
	}
	// A server as long as its call, to the millisecond, yet ending well
	// after it is the call's own interval on another clock: a deadline
	// propagated with the call ends both at once. A callee that ran on
	// after its caller's deadline started with the call and ends later.
	// Calls recorded without a length (Zipkin's unfinished spans) match
	// anything: only a call long enough to tell is compared.
	if p.Duration() >= minTimedCallNS && absDiff(p.Duration(), n.Duration()) <= max(2e6, p.Duration()/100) {
		return true
	}
	if Failed(p) || Failed(n) {
		return false
	}
	if c, ok := grpcStatus(p.Span); ok {
		nc, nok := grpcStatus(n.Span)
		return c == 0 && nok && nc == 0
	}
	pc, ok := HTTPStatus(p.Span)
	nc, nok := HTTPStatus(n.Span)
	return ok && nok && pc == nc
}

// minTimedCallNS is the shortest call whose length lateAnswer compares
// with its server's.
const minTimedCallNS = 10e6

// sharedHalf reports the server half of a Zipkin shared span, as package
// zipkin marks it.
func sharedHalf(n *Node) bool {
	v, _ := n.Span.Attrs.Get(zipkin.AttrShared)
	return v.Type == model.TypeBool && v.Bool
}

// unflaggedHalf reports a SERVER span s reusing the id of CLIENT span c
// without Zipkin's shared flag (v1 data converted to v2 reports both
// halves of an RPC under one id): it is c's server half.
func unflaggedHalf(s, c *Node) bool {
	return s != c && s.Span.Kind == model.KindServer && c.Span.Kind == model.KindClient && s.Span.SpanID == c.Span.SpanID
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

// sameSpan tells whether b is a second delivery of a: halves that share
// a Zipkin id differ in kind or service and are two spans.
func sameSpan(a, b *model.Span) bool {
	return a.SpanID == b.SpanID && a.ParentSpanID == b.ParentSpanID && a.Kind == b.Kind && a.Service == b.Service &&
		a.Name == b.Name && a.StartUnixNano == b.StartUnixNano && a.EndUnixNano == b.EndUnixNano
}

// withoutRepeats returns spans with the later deliveries of a span left
// out (repeats of them counted by the caller).
func withoutRepeats(spans []model.Span, repeats int) []model.Span {
	out := make([]model.Span, 0, len(spans)-repeats)
	first := make(map[model.SpanID][]int, len(spans))
	for i := range spans {
		s := &spans[i]
		repeat := false
		for _, j := range first[s.SpanID] {
			if sameSpan(&spans[j], s) {
				repeat = true
				break
			}
		}
		if !repeat {
			first[s.SpanID] = append(first[s.SpanID], i)
			out = append(out, *s)
		}
	}
	return out
}
