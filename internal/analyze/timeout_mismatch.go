package analyze

import (
	"fmt"
	"strings"

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
	// CrossHostSkewMS is the clock offset allowed between two services'
	// hosts (docs/patterns.md, "Timing tolerance").
	CrossHostSkewMS float64 `yaml:"cross_host_skew_ms"`
}

// NewTimeoutMismatch returns the detector with defaults ("any" inversion
// in docs/patterns.md, beyond clock skew).
func NewTimeoutMismatch() *TimeoutMismatch {
	return &TimeoutMismatch{SkewToleranceMS: 2, CrossHostSkewMS: crossHostSkewNS / 1e6}
}

func init() { Register(func() Detector { return NewTimeoutMismatch() }) }

// Kind implements Detector.
func (*TimeoutMismatch) Kind() string { return "timeout_mismatch" }

// TimeoutMismatchEvidence is the evidence of a timeout_mismatch finding.
type TimeoutMismatchEvidence struct {
	Parent SpanRef `json:"parent"`
	Child  SpanRef `json:"child"`
	// GaveUp is the call further up that timed out or failed first when
	// the parent only ended with it (Node ends a server span and its
	// handler's when the caller aborts): the deadline that was too short.
	GaveUp *SpanRef `json:"gave_up,omitempty"`
	// InvertedByMS is how long the child ran after the parent ended.
	InvertedByMS float64 `json:"inverted_by_ms"`
	// ParentWaitedMS is how long the parent waited before giving up.
	ParentWaitedMS float64 `json:"parent_waited_ms"`
	// InnerTimeout is the longest timed-out call below the child, when it
	// waited longer than the parent did: the inner timeout is longer than
	// the outer one.
	InnerTimeout  *SpanRef `json:"inner_timeout,omitempty"`
	InnerWaitedMS float64  `json:"inner_waited_ms,omitempty"`
	// Count is how many (parent, child) pairs of the same two operations
	// overran; Parent and Child show the worst of them.
	Count int `json:"count"`
}

// Detect implements Detector. Asynchronous children (a consumer under a
// producer) legitimately outlive their parent and are skipped. impact_ms is
// 0: the request had already ended; the cost is wasted work and load.
// Severity: warning when the inversion is ≥ 100 ms or an inner timeout is
// longer than the outer one, info below.
func (d *TimeoutMismatch) Detect(t *Trace, _ *Env) []Finding {
	// One problem, one finding: a loop whose iterations all outlive the
	// caller is one mismatch, not one per iteration.
	type shape struct{ ps, po, cs, co string }
	type group struct {
		worst, parent *Node
		over          uint64
		ids           []string
		count         int
	}
	var order []shape
	groups := map[shape]*group{}
	for _, n := range t.Nodes {
		p := n.Parent
		if p == nil || asyncEdge(p, n) || noDeadline(p, n) || n.End() <= p.End() || handedOff(p, n) {
			continue
		}
		over, tol := n.End()-p.End(), d.tolerance(p, n)
		if over <= tol {
			continue
		}
		// Work that began after a parent other than a call had ended was
		// not awaited by it: a page whose links the browser follows with
		// the page's trace context, a job deferred past the response. A
		// server span that starts after its client gave up stays: that
		// request waited in a queue past the caller's timeout.
		if p.Span.Kind != model.KindClient && n.Start() > p.End()+tol {
			continue
		}
		if neverWaited(p, n, over) {
			continue
		}
		k := shape{p.Span.Service, p.Span.Name, n.Span.Service, n.Span.Name}
		g := groups[k]
		if g == nil {
			g = &group{}
			groups[k] = g
			order = append(order, k)
		}
		g.count++
		if len(g.ids) < maxMergedSpanIDs {
			g.ids = append(g.ids, n.Span.SpanID.String())
		}
		if over > g.over {
			g.worst, g.parent, g.over = n, p, over
		}
	}
	out := make([]Finding, 0, len(order))
	for _, k := range order {
		g := groups[k]
		f := d.finding(t, g.parent, g.worst, g.over)
		if g.count > 1 {
			ev := f.Evidence.(TimeoutMismatchEvidence)
			ev.Count = g.count
			f.Evidence = ev
			f.Title = fmt.Sprintf("%d spans like this: %s", g.count, f.Title)
			f.SpanIDs = appendCapped(f.SpanIDs, g.ids, maxMergedSpanIDs)
		}
		out = append(out, f)
	}
	return out
}

// tolerance is the overrun clocks alone can explain: SkewToleranceMS (at
// least the ±1 ms of SDKs that round to whole milliseconds), and across
// hosts, where a child that is no longer than its parent could fit inside
// it with both clocks right, also CrossHostSkewMS.
func (d *TimeoutMismatch) tolerance(p, c *Node) uint64 {
	tol := max(uint64(d.SkewToleranceMS*1e6), timingTolerance(p, c))
	if p.Span.Service != c.Span.Service && c.Duration() <= p.Duration() {
		tol = max(tol, uint64(d.CrossHostSkewMS*1e6))
	}
	return tol
}

// noDeadline reports edges where nobody waits on the child, so outliving
// the parent gives up nothing: a message receipt (Brave's "poll", a
// CONSUMER span of microseconds) has no caller waiting and its handler
// runs after it; a PRODUCER send is acknowledged after the code that sent
// it moved on (Kafka's send is asynchronous); and a parent with no
// duration at all recorded none (Zipkin leaves duration out of a span
// that never finished, such as a redirect, and the converter ends it where
// it starts).
func noDeadline(p, c *Node) bool {
	return p.Span.Kind == model.KindConsumer || c.Span.Kind == model.KindProducer || p.Duration() == 0
}

// handoffNS is how long a reactive handler (Spring WebFlux, Vert.x) takes
// to return the Mono or Future its work runs in: its SERVER span ends
// then, within a millisecond or two, while the work below runs on.
const handoffNS = 2e6

// handedOff reports a child that outlived a parent which never waited
// for it, where no caller gave up: a parent that ended within handoffNS
// of starting, sooner than the child ran on after it (a caller that gave
// up waited at least as long as the work it abandoned ran past it); a
// database call, which waits for its server and calls nothing: spans of
// its own process below it were started by the code its answer resumed
// (a Lettuce KEYS whose keys are each read by a GET); or work in the
// parent's own process (an INTERNAL child) that the parent scheduled and
// returned from, as Ray Serve's router assigns a request to a replica
// task and ends. A call to another service is different: its caller
// waits for the answer, and ending first means it stopped waiting —
// unless it ended well with the callee's answer (an HTTP status, a gRPC
// code): then the server span ran on after it sent that answer (a
// servlet's filters, the flush, access logging), which no deadline of the
// caller's cut short. A parent that shows it gave up (failed, timed out,
// cancelled) did, however soon or in-process — unless the failure is the
// callee's own answer: a client span that failed with the HTTP status its
// server span sent (a 500 passed up, not a 504 of its own timeout) stopped
// waiting because the answer came; Node's http server span ends on the
// response's "finish", often a few ms after the caller has read it. Nor
// did that server span give up on its own work below it: it failed by
// sending the answer.
func handedOff(p, c *Node) bool {
	if answeredWith(p, c) {
		return true
	}
	if gaveUp(p) && !answeredCaller(p) {
		return false
	}
	if IsDB(p) && c.Span.Service == p.Span.Service {
		return true
	}
	if c.Span.Kind == model.KindInternal && c.Span.Service == p.Span.Service && p.Span.Kind != model.KindClient {
		return true
	}
	if p.Span.Kind == model.KindClient && c.Span.Kind == model.KindServer && gotAnswer(p.Span) {
		return true
	}
	return p.Duration() <= handoffNS && c.End()-p.End() > p.Duration()
}

// lastMomentNS bounds how long before its end a parent can start a child
// it does not wait for: the code returns right after starting it.
const lastMomentNS = 10e6

// neverWaited reports a child its parent did not wait for, under a parent
// that ended well: the child began in the parent's last moments and ran
// on far longer, or the parent went straight on to another call it
// finished while the child ran. Fire-and-forget work looks so, and so
// does a pooled query that inherited the wrong context: a pool (mysql2's,
// pg-pool's) hands a released connection to the query queued by another
// request, and that query's span takes the context of the code that
// released it, landing under a request that had finished its own query
// and was about to write its cache and answer. Neither is a deadline
// mismatch. A client call is different: it waits for its server however
// late that starts. A parent that failed, timed out or was cut short from
// above did stop waiting and stays reported, as does one that waited a
// while before moving on (a Promise.race against a timer, then a
// fallback).
func neverWaited(p, c *Node, over uint64) bool {
	if p.Span.Kind == model.KindClient || gaveUp(p) {
		return false
	}
	// Nothing above gave up either (this covers upstreamGaveUp's callers).
	for a := p.Parent; a != nil; a = a.Parent {
		if gaveUp(a) {
			return false
		}
	}
	if waited := subSat(p.End(), c.Start()); waited <= lastMomentNS && waited*10 <= over {
		return true
	}
	return movedOn(p, c)
}

// movedOn reports a call of p's that began within lastMomentNS of child c
// (not before it, up to clock rounding) and ended while p still ran.
func movedOn(p, c *Node) bool {
	for _, s := range p.Children {
		if s != c && IsCall(s) && s.Start()+1e6 >= c.Start() && s.Start() <= c.Start()+lastMomentNS && s.End() <= p.End() {
			return true
		}
	}
	return false
}

// answeredWith tells whether client span p ended with the answer of its
// server span c: both carry the same HTTP status and it is no timeout or
// cancellation.
func answeredWith(p, c *Node) bool {
	if p.Span.Kind != model.KindClient || c.Span.Kind != model.KindServer || IsTimeoutLike(p.Span) ||
		mentionsCancel(p.Span.StatusMessage) {
		return false
	}
	pc, ok := HTTPStatus(p.Span)
	if !ok || pc == 499 {
		return false
	}
	cc, ok := HTTPStatus(c.Span)
	return ok && cc == pc
}

// answeredCaller tells whether server span p failed by answering: its
// caller recorded the error status p sent (Express's handler span ends a
// few ms after the server span of a 500 answer), so p gave up nothing.
func answeredCaller(p *Node) bool {
	return p.Span.Kind == model.KindServer && p.Parent != nil && answeredWith(p.Parent, p)
}

// gaveUp tells whether a span shows it stopped waiting: it failed, timed
// out (504, 408, DEADLINE_EXCEEDED) or was cancelled (HTTP 499, gRPC
// CANCELLED, a cancel event or status message).
func gaveUp(p *Node) bool {
	s := p.Span
	if Failed(p) || IsTimeoutLike(s) || mentionsCancel(s.StatusMessage) {
		return true
	}
	if code, ok := HTTPStatus(s); ok && code == 499 {
		return true
	}
	if c, ok := grpcStatus(s); ok && c == 1 {
		return true
	}
	for i := range s.Events {
		if mentionsCancel(s.Events[i].Name) {
			return true
		}
	}
	return false
}

func mentionsCancel(s string) bool {
	l := strings.ToLower(s)
	return strings.Contains(l, "cancel") || strings.Contains(l, "abort")
}

// gotAnswer reports a call that recorded the status its callee answered.
func gotAnswer(s *model.Span) bool {
	if _, ok := HTTPStatus(s); ok {
		return true
	}
	_, ok := grpcStatus(s)
	return ok
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

// upstreamGaveUp finds the CLIENT call above p that gave up (timed out,
// failed, cancelled) when p and the spans between only ended with it,
// within the cross-host skew of p's end: the caller's abort ended them.
// nil when p itself is that call or nothing above gave up.
func (d *TimeoutMismatch) upstreamGaveUp(p *Node) *Node {
	if p.Span.Kind == model.KindClient && gaveUp(p) {
		return nil
	}
	tol := uint64(d.CrossHostSkewMS * 1e6)
	for a := p.Parent; a != nil && absDiff(a.End(), p.End()) <= tol; a = a.Parent {
		if a.Span.Kind == model.KindClient && gaveUp(a) {
			return a
		}
	}
	return nil
}

func (d *TimeoutMismatch) finding(t *Trace, p, c *Node, over uint64) Finding {
	ev := TimeoutMismatchEvidence{Parent: RefOf(t, p), Child: RefOf(t, c), InvertedByMS: roundMS(over),
		ParentWaitedMS: roundMS(p.Duration()), Count: 1}
	ids := []string{p.Span.SpanID.String(), c.Span.SpanID.String()}
	title := fmt.Sprintf("%s kept running %.0f ms after its caller (%s) gave up after %.0f ms",
		spanLabel(t, c), NS(over), spanLabel(t, p), NS(p.Duration()))
	if g := d.upstreamGaveUp(p); g != nil {
		r := RefOf(t, g)
		ev.GaveUp = &r
		title = fmt.Sprintf("%s kept running %.0f ms after %s gave up after %.0f ms (%s ended with it)",
			spanLabel(t, c), NS(over), spanLabel(t, g), NS(g.Duration()), spanLabel(t, p))
	}
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
