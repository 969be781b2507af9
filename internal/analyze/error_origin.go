package analyze

import (
	"fmt"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// ErrorOrigin finds the root cause of a failed trace: the deepest failed
// span whose own children did not fail, under the layers that only passed
// the error up.
type ErrorOrigin struct {
	// MaxChain caps the layers listed in evidence (the chain is cut in the
	// middle, origin and root are always kept).
	MaxChain int `yaml:"max_chain"`
}

// NewErrorOrigin returns the detector with docs/patterns.md defaults
// (every trace with an error span).
func NewErrorOrigin() *ErrorOrigin { return &ErrorOrigin{MaxChain: 20} }

func init() { Register(func() Detector { return NewErrorOrigin() }) }

// Kind implements Detector.
func (*ErrorOrigin) Kind() string { return "error_origin" }

// ErrorLayer is one span on the chain from the root to the origin.
type ErrorLayer struct {
	SpanRef
	Failed        bool   `json:"failed"`
	ExceptionType string `json:"exception_type,omitempty"`
	Message       string `json:"message,omitempty"`
	HTTPStatus    int    `json:"http_status,omitempty"`
}

// ErrorOriginEvidence is the evidence of an error_origin finding.
type ErrorOriginEvidence struct {
	Origin           SpanRef      `json:"origin"`
	ExceptionType    string       `json:"exception_type"`
	ExceptionMessage string       `json:"exception_message"`
	Chain            []ErrorLayer `json:"chain"` // root first, origin last
	// PropagatedLayers counts the failed ancestors of the origin: spans
	// that failed only because the origin did.
	PropagatedLayers int `json:"propagated_layers"`
	// RewrappedLayers counts those of them that reported an error of their
	// own making (another exception type or message): the original cause
	// is hidden behind that many wrappers.
	RewrappedLayers int  `json:"rewrapped_layers"`
	ServicesCrossed int  `json:"services_crossed"`
	RootFailed      bool `json:"root_failed"`
	// OtherOrigins counts further independent failed leaves in the trace.
	OtherOrigins int `json:"other_origins"`
	// RecoveredBy is the span of the retry that succeeded after the
	// origin failed, when one did and nothing above the origin failed.
	RecoveredBy *SpanRef `json:"recovered_by,omitempty"`
	// TimedOutWaitingOn is the span the origin was waiting on when it
	// timed out (a proxy's 504 over a callee still running), when one
	// took nearly all of the origin's time.
	TimedOutWaitingOn *SpanRef `json:"timed_out_waiting_on,omitempty"`
}

// Detect implements Detector. One finding per trace: the origin of the
// failure that reached highest (ideally the root); ties go to the deeper
// origin, then the earlier one. A failure passes up through internal spans
// that set no error status (see passesFailureUp). Critical when the root
// failed, info when a retry of the failed call succeeded, warning when
// some layer handled the error otherwise.
func (d *ErrorOrigin) Detect(t *Trace, _ *Env) []Finding {
	var origins []*Node
	for _, n := range t.Nodes {
		if Failed(n) && !FailedBelow(n) {
			origins = append(origins, n)
		}
	}
	if len(origins) == 0 {
		return nil
	}
	type rank struct {
		top       bool // the failure reached the root
		reach     int  // failed ancestors above the origin
		gaps      int  // unfailed internal spans the failure passed through
		recovered bool // a retry of the failed call succeeded
	}
	// rankOf also returns the highest failed span of o's chain: the one a
	// retry would have repeated.
	rankOf := func(o *Node) (rank, *Node) {
		var r rank
		last, silent := o, 0
		for c, p := o, o.Parent; p != nil; c, p = p, p.Parent {
			if gaveUpFirst(p, c) {
				break
			}
			if Failed(p) {
				r.reach++
				r.gaps += silent
				last, silent = p, 0
				continue
			}
			if !passesFailureUp(p) {
				break
			}
			silent++
		}
		r.top = last.Parent == nil
		r.recovered = !r.top && retriedOK(t, last) != nil
		return r, last
	}
	// A failure that reached the root first; then the one passed up by
	// more failed layers, through fewer silent ones; an unrecovered one
	// before one a retry absorbed; then the deeper, then the earlier.
	var best, bestTop *Node
	var br rank
	for _, o := range origins {
		r, last := rankOf(o)
		better := best == nil || r.top != br.top && r.top
		if best != nil && r.top == br.top {
			switch {
			case r.reach != br.reach:
				better = r.reach > br.reach
			case r.gaps != br.gaps:
				better = r.gaps < br.gaps
			case r.recovered != br.recovered:
				better = !r.recovered
			case o.Depth != best.Depth:
				better = o.Depth > best.Depth
			default:
				better = o.Start() < best.Start()
			}
		}
		if better {
			best, bestTop, br = o, last, r
		}
	}
	o := best
	typ, msg := ExceptionOf(o.Span)
	envoy, cluster, upstream := EnvoyResponse(o.Span)
	if typ == "" && msg == "" {
		if code, ok := HTTPStatus(o.Span); ok {
			msg = fmt.Sprintf("HTTP %d", code)
			if envoy != "" {
				msg += " from Envoy: " + envoy
			}
		}
	}
	ev := ErrorOriginEvidence{Origin: RefOf(t, o), ExceptionType: typ, ExceptionMessage: model.Clip(msg, 300),
		OtherOrigins: len(origins) - 1}

	var path []*Node
	for p := o; p != nil; p = p.Parent {
		path = append(path, p)
	}
	ev.RootFailed = Failed(path[len(path)-1]) && path[len(path)-1].Parent == nil
	services := map[string]bool{}
	for i := len(path) - 1; i >= 0; i-- {
		n := path[i]
		lt, lm := ExceptionOf(n.Span)
		l := ErrorLayer{SpanRef: RefOf(t, n), Failed: Failed(n), ExceptionType: lt, Message: model.Clip(lm, 200)}
		l.HTTPStatus, _ = HTTPStatus(n.Span)
		ev.Chain = append(ev.Chain, l)
		if n != o && l.Failed {
			ev.PropagatedLayers++
			if (lt != "" && lt != typ) || (lm != "" && lm != msg && !strings.Contains(lm, msg)) {
				ev.RewrappedLayers++
			}
		}
		services[n.Span.Service] = true
	}
	ev.ServicesCrossed = len(services)
	if d.MaxChain > 2 && len(ev.Chain) > d.MaxChain {
		keep := d.MaxChain / 2
		ev.Chain = append(ev.Chain[:keep:keep], ev.Chain[len(ev.Chain)-(d.MaxChain-keep):]...)
	}

	sev := SeverityWarning
	var retry *Node
	if br.recovered {
		retry = retriedOK(t, bestTop)
		ref := RefOf(t, retry)
		ev.RecoveredBy = &ref
		// The request got its answer: worth knowing, not worth waking
		// anybody for (alerts and sampling key on warning and above).
		sev = SeverityInfo
	}
	if ev.RootFailed {
		sev = SeverityCritical
	}
	what := typ
	if IsWrapperErrorType(typ) {
		what = "" // "*fmt.wrapError: a: b: c" says no more than "a: b: c"
	}
	switch {
	case what == "" && msg != "":
		what = model.Clip(msg, 80)
	case what == "":
		what = "error"
	case msg != "":
		what += ": " + model.Clip(msg, 80)
	}
	top := o
	for _, n := range path {
		if Failed(n) {
			top = n
		}
	}
	title := fmt.Sprintf("%s in %s", what, spanLabel(t, o))
	code, hasCode := HTTPStatus(top.Span)
	switch {
	case ev.RootFailed && hasCode && code >= 500 && top != o:
		title = fmt.Sprintf("HTTP %d from %s caused by %s, %s below", code, spanLabel(t, top), title, layers(o.Depth-top.Depth))
	case ev.RootFailed && hasCode && code >= 500 && !strings.HasPrefix(what, "HTTP "):
		// The root failed on its own: its answer and its error, once.
		title = fmt.Sprintf("HTTP %d from %s: %s", code, spanLabel(t, o), what)
	case ev.PropagatedLayers > 0:
		title += fmt.Sprintf(", passed up %s to %s", layers(ev.PropagatedLayers), spanLabel(t, top))
	}
	if retry != nil {
		title += ", recovered by a retry"
	}
	ids := make([]string, 0, len(path))
	ids = append(ids, o.Span.SpanID.String())
	for _, n := range path[1:] {
		if Failed(n) {
			ids = append(ids, n.Span.SpanID.String())
		}
	}
	// Wrapper types (*fmt.wrapError) and "a: b: c" message chains hide the
	// original error; name that one as the thing to fix.
	fix := fmt.Sprintf("Start at %s %s: fix or guard %s there", o.Span.Service, opName(o, displayOp(o)),
		nonEmpty(quoteCause(typ, msg), "the failure"))
	if lock := lockError(o); lock != "" {
		// The database only refereed a conflict between transactions:
		// guarding the error there would not stop the next one.
		fix = fmt.Sprintf("Start at the transaction around %s %s: the database aborted it to break a lock conflict "+
			"with another transaction (%s); %s", o.Span.Service, opName(o, displayOp(o)), model.Clip(lock, 80), lockOrderAdvice)
	}
	if envoy != "" && upstream {
		// The proxy answered for an upstream it could not reach: the
		// upstream is the thing to look at, the proxy only said so.
		fix = fmt.Sprintf("Start at what %s %s routes to (%s): Envoy answered itself because it %s; an inbound "+
			"cluster is the application behind the sidecar (not listening on its port, crashed or not ready), an "+
			"outbound one the service called", o.Span.Service, opName(o, displayOp(o)), nonEmpty(cluster, "its upstream"),
			envoyVerb(envoy))
	}
	if w := waitedOn(o); w != nil {
		// The origin timed out on work that was still running below it:
		// that work is what to look at, the timeout only reported it.
		ref := RefOf(t, w)
		ev.TimedOutWaitingOn = &ref
		title += fmt.Sprintf(", timed out after %s waiting on %s", fmtDur(o.Duration()), spanLabel(t, w))
		fix = fmt.Sprintf("Start at %s %s, which ran for the %s that %s waited before giving up: find what it waits on "+
			"(add spans below it if it has none); the timeout of %s only reported it", w.Span.Service, displayOp(w),
			fmtDur(o.Duration()), o.Span.Service, o.Span.Service)
	}
	if retry != nil {
		fix = fmt.Sprintf("A retry succeeded, so the request did not fail; if %s %s fails often, fix %s there "+
			"before the retries stop absorbing it", o.Span.Service, opName(o, displayOp(o)), nonEmpty(quoteCause(typ, msg), "the failure"))
	}
	if ev.RewrappedLayers > 0 {
		fix += fmt.Sprintf("; %d layer(s) re-wrapped the error, keep the original cause in their messages", ev.RewrappedLayers)
	}
	fix += "."
	return []Finding{{Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids,
		ImpactMS: roundMS(critUnder(t, o)), Evidence: ev, Fix: fix}}
}

// waitedOn returns the span a timed-out origin was waiting on: the one its
// time went to (dominantDescendant, through its own call and the callee's
// entry), or nil when the origin did not time out or worked itself.
func waitedOn(o *Node) *Node {
	if !IsTimeoutLike(o.Span) {
		return nil
	}
	if w := dominantDescendant(o); w != o {
		return w
	}
	return nil
}

// FailedBelow reports whether a failure sits under n: a failed child, or a
// failed span under children that let it pass without setting an error
// status themselves (see passesFailureUp: Express's "request handler"
// carries no status). A callee that failed only after its caller gave up
// on it (gaveUpFirst) does not count: the caller's timeout is the failure.
func FailedBelow(n *Node) bool {
	for _, c := range n.Children {
		if gaveUpFirst(n, c) {
			continue
		}
		if Failed(c) || (passesFailureUp(c) && FailedBelow(c)) {
			return true
		}
	}
	return false
}

// SlowCallee returns the entry span of the service that a failed call
// gave up on: the call timed out (IsTimeoutLike) and its callee left
// spans, so it was still working. Root-cause ranking counts the error as
// starting there, as error_origin's culprit does; nil otherwise.
func SlowCallee(n *Node) *Node {
	if !IsCall(n) || !IsTimeoutLike(n.Span) {
		return nil
	}
	return calleeEntry(n)
}

// gaveUpFirst reports a call p that timed out while its callee c ran on
// (ended beyond the cross-host clock allowance after it): p's own timeout
// failed the request, and c's failure — a gRPC server reports the
// propagated deadline as DEADLINE_EXCEEDED or CANCELLED when its handler
// finally returns — came after and reached nobody. A callee that honours
// the deadline ends with the call, cancelled (gRPC CANCELLED, HTTP 499):
// it too was still working when the deadline ran out.
func gaveUpFirst(p, c *Node) bool {
	return IsCall(p) && IsTimeoutLike(p.Span) && (c.End() > p.End()+crossHostSkewNS || abandoned(c))
}

// passesFailureUp: an unfailed span that is neither a call nor a service
// entry: a handler, controller or middleware span inside one service.
// Many instrumentations never set an error status on those, so a failed
// call under one that sits under a failed server is what failed the
// server, not the server's own code.
func passesFailureUp(n *Node) bool {
	return n.Parent != nil && (n.Span.Kind == model.KindInternal || n.Span.Kind == model.KindUnspecified) &&
		!IsCall(n) && !Failed(n)
}

// retriedOK returns the call that recovered o's failure: a later attempt
// of the same request under the same parent, which did not fail. nil when there
// is none, or when the parent failed all the same.
func retriedOK(t *Trace, o *Node) *Node {
	if o.Parent == nil || Failed(o.Parent) {
		return nil
	}
	return retryThatRecovered(t, o)
}

func nonEmpty(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// quoteCause names the original error for a fix sentence: its type, or
// its innermost message part in quotes when the type is a wrapper.
func quoteCause(typ, msg string) string {
	t, m := OriginalError(typ, msg)
	switch {
	case t != "":
		return t
	case m != "":
		return fmt.Sprintf("%q", model.Clip(m, 80))
	}
	return ""
}

func layers(n int) string {
	if n == 1 {
		return "1 layer"
	}
	return fmt.Sprintf("%d layers", n)
}

// envoyVerb says what Envoy's upstream flags mean as a clause.
func envoyVerb(envoy string) string {
	switch {
	case strings.Contains(envoy, "(UT)") || strings.Contains(envoy, "(UMSDR)"):
		return "got no answer in time (" + envoy + ")"
	case strings.Contains(envoy, "(UO)"):
		return "found the circuit breaker open (" + envoy + ")"
	default:
		return "could not get an answer from it (" + envoy + ")"
	}
}
