package analyze

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// BrokenPropagation finds the hops where trace context was lost: spans
// whose parent never arrived, several roots in one trace, and calls to an
// instrumented service that produced no SERVER span under the call.
type BrokenPropagation struct {
	// MaxFindings caps findings per trace (a service that never propagates
	// breaks every hop the same way).
	MaxFindings int `yaml:"max_findings"`
}

// NewBrokenPropagation returns the detector with docs/patterns.md defaults.
func NewBrokenPropagation() *BrokenPropagation { return &BrokenPropagation{MaxFindings: 20} }

func init() { Register(func() Detector { return NewBrokenPropagation() }) }

// Kind implements Detector.
func (*BrokenPropagation) Kind() string { return "broken_propagation" }

// BrokenPropagationEvidence is the evidence of a broken_propagation finding.
type BrokenPropagationEvidence struct {
	// Signal: missing_parent, extra_root, no_server_child or leaked_context
	// (calls begun long after their request answered; SubtreeSize counts
	// them).
	Signal string `json:"signal"`
	// Span is the first span after the break (the orphan or extra root).
	Span *SpanRef `json:"span,omitempty"`
	// MissingParentID is the parent span id that never arrived.
	MissingParentID string `json:"missing_parent_id,omitempty"`
	// Call is the client call whose context did not reach the callee.
	Call *SpanRef `json:"call,omitempty"`
	// Caller and Callee name the hop where the context was lost.
	Caller      string `json:"caller,omitempty"`
	Callee      string `json:"callee,omitempty"`
	SubtreeSize int    `json:"subtree_size,omitempty"`
	// Orphans lists the spans whose parent never arrived (missing_parent),
	// up to maxListedOrphans; OrphanCount counts them all.
	Orphans     []OrphanRef `json:"orphans,omitempty"`
	OrphanCount int         `json:"orphan_count,omitempty"`
}

// OrphanRef is a span whose parent never arrived.
type OrphanRef struct {
	Span            SpanRef `json:"span"`
	MissingParentID string  `json:"missing_parent_id"`
}

// maxListedOrphans bounds the evidence of a trace made mostly of orphans.
const maxListedOrphans = 100

// Detect implements Detector. A CLIENT call whose callee has no SERVER
// span below it but started a separate root (or orphan) during the call is
// reported once, as that hop. External APIs (the callee is not a service
// of this trace), database and messaging calls, and calls that failed
// without an HTTP status (never reached the callee) are not breaks.
// Consumers linked to a producer of the trace are roots by design.
func (d *BrokenPropagation) Detect(t *Trace, _ *Env) []Finding {
	services := map[string]bool{}
	for i := range t.Spans {
		services[t.Spans[i].Service] = true
	}
	main := t.Root()
	detached := map[*Node]bool{}
	for _, r := range t.Roots {
		// The request's own entry naming a parent we never got was called
		// from upstream: a browser, a mobile app or a partner whose spans
		// go elsewhere (the OpenTelemetry demo's frontend-proxy under its
		// load generator). Only breaks inside the trace are ours.
		if r == main && (!r.Orphan || upstreamEntry(r)) {
			continue
		}
		if p, _ := producerOf(t, r); p != nil {
			continue
		}
		detached[r] = true
	}
	var out []Finding
	full := func() bool { return d.MaxFindings > 0 && len(out) >= d.MaxFindings }
	add := func(f Finding) {
		if !full() {
			out = append(out, f)
		}
	}
	fix := func(caller, callee string) string {
		return fmt.Sprintf("Propagate the W3C traceparent header from %s to %s: instrument the client (HTTP/gRPC library or message headers), "+
			"check proxies and gateways forward traceparent/tracestate, and that both sides use the same propagator (W3C vs B3).",
			nonEmpty(caller, "the caller"), nonEmpty(callee, "the callee"))
	}
	for _, c := range t.Nodes {
		if full() {
			break
		}
		if c.Span.Kind != model.KindClient || IsDB(c) || c.Span.Attrs.Str("messaging.system") != "" {
			continue
		}
		hasServer := false
		for _, k := range c.Children {
			if k.Span.Kind == model.KindServer || k.Span.Kind == model.KindConsumer || k.Span.Service != c.Span.Service {
				hasServer = true
				break
			}
		}
		if hasServer {
			continue
		}
		callee := calleeService(c, services)
		if callee == "" || callee == c.Span.Service {
			continue
		}
		_, hasHTTP := HTTPStatus(c.Span)
		if _, hasRPC := grpcStatus(c.Span); !hasHTTP && !hasRPC && Failed(c) {
			continue // failed before an answer: the callee may never have seen it
		}
		ev := BrokenPropagationEvidence{Signal: "no_server_child", Caller: c.Span.Service, Callee: callee}
		ref := RefOf(t, c)
		ev.Call = &ref
		ids := []string{c.Span.SpanID.String()}
		for _, r := range t.Roots {
			// The callee runs on another host: its clock may be off by
			// up to crossHostSkewNS (timing.go).
			if detached[r] && r.Span.Service == callee && r.Start()+crossHostSkewNS >= c.Start() && r.Start() <= c.End()+crossHostSkewNS {
				rr := RefOf(t, r)
				ev.Span = &rr
				ev.SubtreeSize = subtreeSize(r)
				if r.Orphan {
					ev.MissingParentID = r.Span.ParentSpanID.String()
				}
				ids = append(ids, r.Span.SpanID.String())
				delete(detached, r)
				break
			}
		}
		title := fmt.Sprintf("trace context lost on the call from %s to %s (%s): no %s span under it", c.Span.Service, callee,
			opName(c, c.Span.Name), callee)
		switch {
		case ev.Span != nil && ev.MissingParentID != "":
			title += fmt.Sprintf("; %s's spans point to a parent (%s) that never arrived", callee, ev.MissingParentID)
		case ev.Span != nil:
			title += fmt.Sprintf("; %s started a new root instead", callee)
		}
		add(Finding{Kind: d.Kind(), Severity: SeverityWarning, Title: title, SpanIDs: ids, Evidence: ev, Fix: fix(c.Span.Service, callee)})
	}
	// Every orphan left is one cause: spans that were never exported (or
	// not yet, in a trace read while its requests ran), so the trace is
	// incomplete. One finding per trace, however many parents are missing
	// (a page of a span index, an in-flight capture, a lost batch).
	inc := -1
	var orphans []*Node
	for _, r := range t.Roots {
		if !detached[r] {
			continue
		}
		if r.Orphan && inc >= 0 {
			orphans = append(orphans, r)
			out[inc] = incompleteTrace(t, out[inc], orphans)
			continue
		}
		if full() {
			break
		}
		ev := BrokenPropagationEvidence{SubtreeSize: subtreeSize(r), Callee: r.Span.Service}
		ref := RefOf(t, r)
		ev.Span = &ref
		var title string
		if r.Orphan {
			ev.Signal = "missing_parent"
			ev.MissingParentID = r.Span.ParentSpanID.String()
			ev.Orphans = []OrphanRef{{Span: ref, MissingParentID: ev.MissingParentID}}
			ev.OrphanCount = 1
			title = fmt.Sprintf("parent %s of %s %s never arrived (%d spans detached)", ev.MissingParentID, r.Span.Service,
				displayOp(r), ev.SubtreeSize)
		} else {
			ev.Signal = "extra_root"
			title = fmt.Sprintf("%s %s started a second root in the trace (%d spans detached from %s)", r.Span.Service,
				displayOp(r), ev.SubtreeSize, main.Span.Service)
		}
		// The caller is whoever was calling that service when it started.
		if caller := likelyCaller(t, r); caller != nil {
			ev.Caller = caller.Span.Service
			cr := RefOf(t, caller)
			ev.Call = &cr
		}
		f := Finding{Kind: d.Kind(), Severity: SeverityWarning, Title: title, SpanIDs: []string{r.Span.SpanID.String()},
			Evidence: ev, Fix: fix(ev.Caller, r.Span.Service)}
		if r.Orphan {
			inc, orphans = len(out), []*Node{r}
			// The orphan carries its parent's id: the context did travel,
			// the span it names was not exported.
			f.Fix = lostFix(r, ev.Caller)
		}
		add(f)
	}
	for _, f := range lateCallFindings(t) {
		add(f)
	}
	return out
}

// lateCallMin is the fewest calls begun after a request answered that
// make a leaked_context finding; lateCallAfterNS is how long after the
// answer (and at least the request's own length) a call must begin.
const (
	lateCallMin     = 3
	lateCallAfterNS = 1e9
)

// lateCallFindings reports, per service entry, the calls of its service
// that began well after it had answered. A client that queues requests for
// a free connection (an undici Agent or Node http.Agent with few sockets,
// a mysql2 pool) can start each queued call in the context of the request
// that opened or last released the connection: that old trace collects
// other requests' calls for seconds, and those requests show gaps nothing
// explains. Calls to targets the request itself called while it ran, more
// of them late than in time, are that leak; others may be deliberate
// background work, reported as info.
func lateCallFindings(t *Trace) []Finding {
	type late struct {
		calls        []*Node
		last         uint64
		inTime, same int
	}
	var byEntry map[*Node]*late
	for _, c := range t.Nodes {
		if !IsCall(c) || c.Parent == nil {
			continue
		}
		e := EntryOf(c.Parent)
		if e == nil || e.Span.Service != c.Span.Service || e.End() <= e.Start() {
			continue
		}
		if c.Start() <= e.End()+max(uint64(lateCallAfterNS), e.Duration()) {
			continue
		}
		if byEntry == nil {
			byEntry = map[*Node]*late{}
		}
		l := byEntry[e]
		if l == nil {
			l = &late{}
			byEntry[e] = l
		}
		l.calls = append(l.calls, c)
		l.last = max(l.last, c.Start())
	}
	var out []Finding
	for _, e := range t.Nodes {
		l := byEntry[e]
		if l == nil || len(l.calls) < lateCallMin {
			continue
		}
		targets := map[[2]string]bool{}
		for _, c := range t.Nodes {
			if IsCall(c) && c.Parent != nil && EntryOf(c.Parent) == e && c.Start() <= e.End() {
				svc, op := CallTarget(t, c)
				targets[[2]string{svc, op}] = true
				l.inTime++
			}
		}
		for _, c := range l.calls {
			if svc, op := CallTarget(t, c); targets[[2]string{svc, op}] {
				l.same++
			}
		}
		svc, op := CallTarget(t, l.calls[0])
		ref := RefOf(t, e)
		first := RefOf(t, l.calls[0])
		ev := BrokenPropagationEvidence{Signal: "leaked_context", Span: &ref, Call: &first, Caller: e.Span.Service,
			Callee: svc, SubtreeSize: len(l.calls)}
		ids := []string{e.Span.SpanID.String()}
		for _, c := range l.calls[:min(len(l.calls), 10)] {
			ids = append(ids, c.Span.SpanID.String())
		}
		after := fmtDur(l.last - e.End())
		title := fmt.Sprintf("%d calls of %s (to %s %s first) began up to %s after %s %s had answered", len(l.calls),
			e.Span.Service, svc, model.Clip(op, 60), after, e.Span.Service, displayOp(e))
		sev, fix := SeverityInfo, "Calls begun long after the request answered are no part of it: background work the "+
			"request started (then give it a span of its own, linked to the request), or a client running later "+
			"requests' calls in this request's context."
		if l.same*2 > len(l.calls) && len(l.calls) > l.inTime {
			sev = SeverityWarning
			title += fmt.Sprintf(" (it made %d while it ran): a connection pool or HTTP agent ran later requests' queued "+
				"calls in this request's context", l.inTime)
			fix = "Other requests' calls are recorded in this trace, and their own traces show gaps where those calls " +
				"ran: a client that queues calls for a free connection (an undici Agent or http.Agent with few " +
				"connections, a mysql2 pool) starts each queued call in the context that opened or released the " +
				"connection. Raise the client's connection limit so calls do not queue, or bind each call to its " +
				"request's context (context.with around the call) where the library loses it."
		}
		out = append(out, Finding{Kind: "broken_propagation", Severity: sev, Title: title, SpanIDs: ids, Evidence: ev, Fix: fix})
	}
	return out
}

// incompleteTrace folds orphans (the first is f's) into f: the title
// counts the orphans and the parents they name, the fix names every
// service that lost a span.
func incompleteTrace(t *Trace, f Finding, orphans []*Node) Finding {
	ev := f.Evidence.(BrokenPropagationEvidence)
	r := orphans[len(orphans)-1]
	ev.SubtreeSize += subtreeSize(r)
	ev.OrphanCount = len(orphans)
	if len(ev.Orphans) < maxListedOrphans {
		ev.Orphans = append(ev.Orphans, OrphanRef{Span: RefOf(t, r), MissingParentID: r.Span.ParentSpanID.String()})
	}
	f.Evidence = ev
	f.SpanIDs = appendCapped(f.SpanIDs, []string{r.Span.SpanID.String()}, maxMergedSpanIDs)
	parents := map[model.SpanID]bool{}
	// An entry span's parent was its caller's; any other span's was of
	// its own process.
	var services, own, calledOnly []string
	for _, o := range orphans {
		parents[o.Span.ParentSpanID] = true
		services = appendNew(services, o.Span.Service)
		switch k := o.Span.Kind; {
		case k != model.KindServer && k != model.KindConsumer:
			own = appendNew(own, o.Span.Service)
		case likelyCaller(t, o) != nil:
			own = appendNew(own, likelyCaller(t, o).Span.Service)
		default:
			calledOnly = appendNew(calledOnly, o.Span.Service)
		}
	}
	var who []string
	if len(own) > 0 {
		who = append(who, joinAnd(own))
	}
	if len(calledOnly) > 0 {
		who = append(who, "the callers of "+joinAnd(calledOnly))
	}
	first := orphans[0]
	if len(parents) == 1 {
		// One span was lost, however many children it had (a server span
		// not exported drops all its calls at once).
		f.Title = fmt.Sprintf("parent %s of %s %s and %d more never arrived (%d spans detached)", ev.MissingParentID,
			first.Span.Service, displayOp(first), len(orphans)-1, ev.SubtreeSize)
		return f
	}
	f.Title = fmt.Sprintf("trace incomplete: the parents of %d spans of %s never arrived (%d parents missing, %d spans detached)",
		len(orphans), joinAnd(services), len(parents), ev.SubtreeSize)
	f.Fix = fmt.Sprintf("The context did travel (each orphan names its parent) but %d spans were never exported: check the exporters of %s "+
		"(exporter errors, dropped batches or full queues, a sampler that drops a span yet propagates it, "+
		"spans left unended on some path), and that the trace was read after its requests completed and in full (not one "+
		"page of a span index).", len(parents), strings.Join(who, " and of "))
	return f
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// upstreamEntry reports an orphan that is an entry span: its parent was
// in another process. As the main root it is also the earliest orphan
// (main is an orphan only when no span lacks a parent).
func upstreamEntry(r *Node) bool {
	return r.Orphan && (r.Span.Kind == model.KindServer || r.Span.Kind == model.KindConsumer)
}

// lostFix says who did not export the missing parent of orphan r. Only
// an entry span (SERVER, CONSUMER) gets its parent from another process;
// a call or internal span without its parent lost a span of its own
// process, typically the entry span.
func lostFix(r *Node, caller string) string {
	lead, who := "The context reached "+r.Span.Service+" but the span it names was never exported", nonEmpty(caller, "its caller")
	if k := r.Span.Kind; k != model.KindServer && k != model.KindConsumer {
		lead, who = r.Span.Service+"'s spans name a span of its own process that was never exported", r.Span.Service
	}
	return lead + ": check that " + who + " exports every span (exporter errors, dropped batches or full queues, a sampler " +
		"that drops a span yet propagates it, spans left unended on some path) and that no proxy reports span ids it never exports."
}

// calleeService maps a call's target to a service of the trace:
// peer.service, else the first DNS label of server.address, else, for a
// proxy's span, of the upstream cluster it forwarded to (Istio's
// "outbound|8080||cart.shop.svc.cluster.local" names its host last).
func calleeService(c *Node, services map[string]bool) string {
	if p := PeerService(c.Span); p != "" && services[p] {
		return p
	}
	// A proxy's span also holds the downstream's URL (Envoy's ingress:
	// http://localhost:8080/...), which names the proxy, not its upstream.
	addrs := []string{ServerAddress(c.Span)}
	if proxyHop(c) {
		cluster := c.Span.Attrs.Str("upstream_cluster.name", "upstream_cluster")
		addrs = append(addrs, cluster[strings.LastIndexByte(cluster, '|')+1:])
	}
	for _, addr := range addrs {
		if addr == "" {
			continue
		}
		if services[addr] {
			return addr
		}
		if k := strings.IndexByte(addr, '.'); k > 0 && services[addr[:k]] {
			return addr[:k]
		}
	}
	return ""
}

// likelyCaller returns a call of the main tree running when r started
// whose target could be r's service, or nil. A proxy's span counts as a
// call to its upstream: an Envoy that reports its ingress span but not the
// egress span whose context it forwarded is the hop that lost the parent.
func likelyCaller(t *Trace, r *Node) *Node {
	services := map[string]bool{r.Span.Service: true}
	for _, c := range t.Nodes {
		if c == r || (c.Span.Kind != model.KindClient && !proxyHop(c)) || c.Span.Service == r.Span.Service {
			continue
		}
		if c.Start() <= r.Start()+crossHostSkewNS && r.Start() <= c.End()+crossHostSkewNS && calleeService(c, services) != "" {
			return c
		}
	}
	return nil
}

func subtreeSize(n *Node) int {
	size := 0
	stack := []*Node{n}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		size++
		stack = append(stack, x.Children...)
	}
	return size
}

// joinAnd lists names for a sentence: "a", "a and b", "a, b and c"; past
// four it names the first three and counts the rest.
func joinAnd(names []string) string {
	if len(names) > 4 {
		return strings.Join(names[:3], ", ") + fmt.Sprintf(" and %d more", len(names)-3)
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}
