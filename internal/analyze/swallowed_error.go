package analyze

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// SwallowedError finds service-entry spans that answered successfully while
// work below them failed: the user got a degraded answer and nobody sees an
// error rate.
type SwallowedError struct {
	MinFailed int `yaml:"min_failed"` // failed descendants that make a finding
}

// NewSwallowedError returns the detector with docs/patterns.md defaults.
func NewSwallowedError() *SwallowedError { return &SwallowedError{MinFailed: 1} }

func init() { Register(func() Detector { return NewSwallowedError() }) }

// Kind implements Detector.
func (*SwallowedError) Kind() string { return "swallowed_error" }

// FailedCall is one failure absorbed by a successful entry.
type FailedCall struct {
	SpanRef
	Target          string  `json:"target"`
	TargetOperation string  `json:"target_operation"`
	Error           string  `json:"error"`
	TimedOut        bool    `json:"timed_out"`
	CriticalMS      float64 `json:"critical_ms"`
}

// SwallowedErrorEvidence is the evidence of a swallowed_error finding.
type SwallowedErrorEvidence struct {
	Entry      SpanRef      `json:"entry"`
	HTTPStatus int          `json:"http_status,omitempty"`
	Failed     []FailedCall `json:"failed"`
	// UserGot says what the caller received instead of the full answer.
	UserGot string `json:"user_got"`
}

// Detect implements Detector. A failure is charged to the service entry of
// the span that absorbed it (the successful parent of the topmost failed
// span), so a failure handled deep down is reported once, where it was
// swallowed. Failed attempts that a later attempt of the same request
// recovered (a retry that worked, also one the client made below its own
// call span) and failures of asynchronous consumers
// or under them (poison_message's concern) are not degraded answers and
// are skipped.
func (d *SwallowedError) Detect(t *Trace, _ *Env) []Finding {
	groups := map[*Node][]*Node{}
	var order []*Node
	for _, n := range t.Nodes {
		p := n.Parent
		if p == nil || !Failed(n) || Failed(p) {
			continue
		}
		if n.Span.Kind == model.KindConsumer || p.Span.Kind == model.KindProducer {
			continue
		}
		if recoveredByRetry(t, n) {
			continue
		}
		// A message handler answers nobody: a failure under a CONSUMER
		// entry (Brave's "poll" receipt, the handler failing below it)
		// degraded no caller's answer.
		e := EntryOf(p)
		if e == nil || Failed(e) || e.Span.Kind == model.KindConsumer {
			continue
		}
		// Nor does a root that is itself a call: a load generator's or a
		// test client's request saw the failure and answers nobody (the
		// OTel demo's load-generator user_checkout_multi over a 504).
		if e.Parent == nil && IsCall(e) {
			continue
		}
		// A session answers no request: a rejected login inside an SSH
		// connection was told to the peer, which may try again.
		if IsSession(e) {
			continue
		}
		if _, ok := groups[e]; !ok {
			order = append(order, e)
		}
		groups[e] = append(groups[e], n)
	}
	var out []Finding
	for _, e := range order {
		failed := groups[e]
		if len(failed) < max(d.MinFailed, 1) {
			continue
		}
		ev := SwallowedErrorEvidence{Entry: RefOf(t, e)}
		ev.HTTPStatus, _ = HTTPStatus(e.Span)
		ids := []string{e.Span.SpanID.String()}
		var targets []string
		anyTimeout := false
		for _, f := range failed {
			svc, op := f.Span.Service, f.Span.Name
			if IsCall(f) {
				svc, op = CallTarget(t, f)
			}
			typ, msg := ExceptionOf(f.Span)
			errText := strings.TrimSpace(strings.Trim(typ+": "+msg, ": "))
			if errText == "" {
				if code, ok := HTTPStatus(f.Span); ok {
					errText = fmt.Sprintf("HTTP %d", code)
				}
			}
			to := IsTimeoutLike(f.Span)
			anyTimeout = anyTimeout || to
			ev.Failed = append(ev.Failed, FailedCall{SpanRef: RefOf(t, f), Target: svc, TargetOperation: model.Clip(op, 80),
				Error: model.Clip(errText, 200), TimedOut: to, CriticalMS: roundMS(critUnder(t, f))})
			ids = append(ids, f.Span.SpanID.String())
			targets = append(targets, svc)
		}
		targets = uniqSorted(targets)
		status := "a successful answer"
		if ev.HTTPStatus > 0 {
			status = fmt.Sprintf("HTTP %d", ev.HTTPStatus)
		}
		ev.UserGot = fmt.Sprintf("%s built without %s", status, strings.Join(targets, ", "))
		impact := critUnder(t, failed...)
		sev := SeverityWarning
		noun := "call"
		if len(failed) > 1 {
			noun = "calls"
		}
		how := "failed"
		if anyTimeout {
			how = "failed or timed out"
		}
		answered := "successfully"
		if ev.HTTPStatus > 0 {
			answered = status
		}
		title := fmt.Sprintf("%s answered %s though %d %s below it %s (%s)", spanLabel(t, e), answered, len(failed), noun, how,
			strings.Join(targets, ", "))
		fix := "Make the degradation visible: record the error on the entry span or a `degraded` attribute, " +
			"count fallbacks in a metric, and alert on them"
		if clientError(ev.HTTPStatus) {
			// A FastAPI service answered 404 while its database was
			// unreachable: nothing was degraded, the failure was relabelled
			// as the caller's mistake.
			fix = fmt.Sprintf("Answer a server error (503 when a dependency is down, 500 otherwise) instead of HTTP %d: "+
				"a 4xx tells the caller its request was wrong, so it does not retry and no server error rate counts the failure",
				ev.HTTPStatus)
		}
		if anyTimeout {
			fix += "; the timed-out calls also cost the request their full timeout, use a shorter budget or a cached fallback"
		}
		out = append(out, Finding{Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids, ImpactMS: roundMS(impact),
			Evidence: ev, Fix: fix + "."})
	}
	return out
}

// recoveredByRetry: a later attempt of the same request succeeded, as a
// sibling call or below the same call span.
func recoveredByRetry(t *Trace, n *Node) bool { return retryThatRecovered(t, n) != nil }

// retryThatRecovered returns the later sibling call that retried n (same
// target, same request: retry_storm's retries) and succeeded, or nil. A
// call to the same route for another item is the next step of a loop: the
// item whose call failed is still missing from the answer.
func retryThatRecovered(t *Trace, n *Node) *Node {
	if n.Parent == nil {
		return nil
	}
	if !IsCall(n) {
		return attemptThatRecovered(n)
	}
	svc, op := CallTarget(t, n)
	for _, s := range n.Parent.Children {
		if s == n || !IsCall(s) || Failed(s) || !retries(n, s, 0) {
			continue
		}
		if ss, so := CallTarget(t, s); ss == svc && (so == op || connectionChore(n) && IsDB(s)) {
			return s
		}
	}
	return nil
}

// connectionChore reports a database span that ran no statement but
// checked, reset or opened a connection (otelsql's sql.conn.reset_session,
// sql.connector.connect, sql.conn.ping). When one fails, Go's database/sql
// drops that connection and runs the statement on another, so a later
// call to the same database that succeeded is its retry. A query span
// recorded without its text (otelsql's sql.conn.query with the query
// omitted) is no chore.
func connectionChore(n *Node) bool {
	// IsDB is known for every span by now; the keys are read only of
	// database spans.
	if !IsDB(n) {
		return false
	}
	_, said := n.Span.Attrs.First("db.query.text", "db.statement", "sql.query", "redis.command", "db.query.summary",
		"db.operation.name", "db.operation")
	return !said && nameHasWord(n.Span.Name, "reset", "connect", "ping")
}

// nameHasWord reports whether one of words is a whole word of name.
func nameHasWord(name string, words ...string) bool {
	for _, w := range textWords(name) {
		if slices.Contains(words, w) {
			return true
		}
	}
	return false
}

// attemptThatRecovered returns the later attempt of one call that
// answered where the server span n failed, or nil. A client that retries
// below its instrumentation (urllib3's Retry under requests, a retry
// handler inside an HttpClient) sends every attempt with the call's own
// context: the callee's SERVER spans are siblings under one CLIENT span,
// which records only the last answer.
func attemptThatRecovered(n *Node) *Node {
	if n.Span.Kind != model.KindServer || !IsCall(n.Parent) {
		return nil
	}
	for _, s := range n.Parent.Children {
		if s == n || s.Span.Kind != model.KindServer || s.Span.Service != n.Span.Service || Failed(s) ||
			displayOp(s) != displayOp(n) || !retries(n, s, 0) {
			continue
		}
		return s
	}
	return nil
}

func uniqSorted(in []string) []string {
	sort.Strings(in)
	out := in[:0]
	for i, s := range in {
		if i == 0 || s != in[i-1] {
			out = append(out, s)
		}
	}
	return out
}

// clientError tells whether an HTTP status blames the request (4xx).
func clientError(status int) bool { return status >= 400 && status < 500 }
